// An agent and a resource server written the way any team would write them
// with oauth4webapi (a strict OAuth 2 client) and jose: nothing here knows
// Mandate beyond its configuration (INTEROP_CONFIG, a JSON file naming the
// issuer, the key files `mandate agent enroll` wrote, each agent's task id,
// the resource and the proxy URL).
//
// Prints one JSON line per check ({"check", "ok", "detail"}) and exits
// non-zero if any failed.

import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import { readFileSync } from 'node:fs';

const config = JSON.parse(readFileSync(process.env.INTEROP_CONFIG, 'utf8'));
const issuer = new URL(config.issuer);
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

let failed = 0;
function report(check, ok, detail = '') {
  if (!ok) failed += 1;
  console.log(JSON.stringify({ check, ok, detail: String(detail) }));
}

// Run `fn`; it passes if it resolves to true.
async function check(name, fn) {
  try {
    const r = await fn();
    report(name, r === true, r === true ? '' : JSON.stringify(r));
  } catch (e) {
    report(name, false, `${e.name}: ${e.message} ${JSON.stringify(e.cause ?? '')}`);
  }
}

// Passes if `fn` throws an error accepted by `expected(e)`.
async function refused(name, fn, expected) {
  try {
    const r = await fn();
    report(name, false, `accepted: ${JSON.stringify(r)}`);
  } catch (e) {
    const ok = expected(e);
    report(name, ok, ok ? `${e.name}: ${e.error ?? e.message}` : `${e.name}: ${e.message}`);
  }
}

const invalidClient = (e) =>
  e instanceof oauth.ResponseBodyError && e.error === 'invalid_client' && e.status === 401;

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2' }),
);
await check('discovery', async () =>
  as.token_endpoint_auth_methods_supported.includes('private_key_jwt') &&
  as.introspection_endpoint_auth_methods_supported.includes('private_key_jwt') &&
  as.revocation_endpoint_auth_methods_supported.includes('private_key_jwt') &&
  ['Ed25519', 'EdDSA', 'ES256'].every((a) => as.dpop_signing_alg_values_supported.includes(a)));

// A resource server validating an access token as RFC 9068 says.
function asResourceServer(token, audience) {
  const request = new Request(config.resource, { headers: { authorization: `Bearer ${token}` } });
  return oauth.validateJwtAccessToken(as, request, audience);
}

function exchange(client, auth, session, task, options) {
  return oauth
    .genericTokenEndpointRequest(as, client, auth, TOKEN_EXCHANGE, {
      subject_token: session,
      subject_token_type: JWT_TYPE,
      task_id: task,
      resource: config.resource,
    }, options)
    .then((r) => oauth.processGenericTokenEndpointResponse(as, client, r));
}

for (const agent of config.agents) {
  const file = JSON.parse(readFileSync(agent.key_file, 'utf8'));
  const tag = file.alg;
  const client = { client_id: file.client_id };
  const key = await jose.importPKCS8(file.private_key, file.alg);
  const auth = oauth.PrivateKeyJwt({ key, kid: file.kid });

  const login = await oauth
    .clientCredentialsGrantRequest(as, client, auth, {})
    .then((r) => oauth.processClientCredentialsResponse(as, client, r));
  report(`login ${tag}`, typeof login.access_token === 'string');
  const session = login.access_token;

  const granted = await exchange(client, auth, session, agent.task);
  const token = granted.access_token;
  await check(`exchange ${tag}`, async () => granted.token_type === 'bearer');

  await check(`rfc9068 ${tag}`, async () => {
    const claims = await asResourceServer(token, config.resource);
    return claims.client_id === file.client_id && claims.sub === file.client_id &&
      claims.txn === agent.task;
  });
  await check(`jose jwtVerify ${tag}`, async () => {
    const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri));
    const { payload } = await jose.jwtVerify(token, jwks, {
      issuer: as.issuer, audience: config.resource, typ: 'at+jwt',
    });
    return payload.sub === file.client_id;
  });

  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  claims.txn = 'task_someone_elses';
  const tampered = [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.');
  await refused(`tampered token ${tag}`, () => asResourceServer(tampered, config.resource),
    (e) => e.message === 'JWT signature verification failed');
  await refused(`other audience ${tag}`, () => asResourceServer(token, config.other_resource),
    (e) => e.message.includes('"aud"'));
  await refused(`session as access token ${tag}`, () => asResourceServer(session, config.resource),
    (e) => e.message.includes('"typ"'));

  // RFC 9449: a sender-constrained token, used through the proxy.
  const dpopKeys = await oauth.generateKeyPair(file.alg === 'EdDSA' ? 'Ed25519' : 'ES256');
  const dpop = oauth.DPoP(client, dpopKeys);
  const bound = await exchange(client, auth, session, agent.task, { DPoP: dpop });
  await check(`dpop exchange ${tag}`, async () => bound.token_type === 'dpop');
  await check(`dpop request at the proxy ${tag}`, async () => {
    const r = await oauth.protectedResourceRequest(bound.access_token, 'GET',
      new URL(config.proxy_url), undefined, undefined,
      { DPoP: dpop, [oauth.allowInsecureRequests]: true });
    // The upstream says whether it got the tool's credential, and what
    // Authorization reached it: never the agent's token.
    const body = await r.json();
    return (r.status === 200 && body.injected === true && body.authorization === null) ||
      { status: r.status, body };
  });
  await refused(`dpop token without its proof ${tag}`, () =>
    oauth.protectedResourceRequest(bound.access_token, 'GET', new URL(config.proxy_url),
      undefined, undefined, { [oauth.allowInsecureRequests]: true }),
    (e) => e instanceof oauth.WWWAuthenticateChallengeError && e.status === 401);

  await check(`introspection ${tag}`, async () => {
    const r = await oauth.introspectionRequest(as, client, auth, token)
      .then((r) => oauth.processIntrospectionResponse(as, client, r));
    return r.active === true && r.sub === file.client_id && r.txn === agent.task;
  });
  await check(`introspection of a tampered token ${tag}`, async () => {
    const r = await oauth.introspectionRequest(as, client, auth, tampered)
      .then((r) => oauth.processIntrospectionResponse(as, client, r));
    return r.active === false;
  });
  await check(`revocation then inactive ${tag}`, async () => {
    await oauth.revocationRequest(as, client, auth, token).then(oauth.processRevocationResponse);
    const r = await oauth.introspectionRequest(as, client, auth, token)
      .then((r) => oauth.processIntrospectionResponse(as, client, r));
    return r.active === false;
  });

  await refused(`unenrolled assertion key ${tag}`, async () => {
    const stranger = await oauth.generateKeyPair(file.alg === 'EdDSA' ? 'Ed25519' : 'ES256');
    const r = await oauth.clientCredentialsGrantRequest(as, client,
      oauth.PrivateKeyJwt(stranger.privateKey), {});
    return oauth.processClientCredentialsResponse(as, client, r);
  }, invalidClient);

  // A client credential that does not verify, naming another agent, beside
  // a valid session: the credential decides, not the session.
  await refused(`garbage assertion with another client_id ${tag}`, () => {
    const other = { client_id: config.other_client_id };
    const garbage = (_as, c, body) => {
      body.set('client_id', c.client_id);
      body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      body.set('client_assertion', 'garbage');
    };
    return exchange(other, garbage, session, agent.task);
  }, invalidClient);
}

process.exit(failed === 0 ? 0 : 1);
