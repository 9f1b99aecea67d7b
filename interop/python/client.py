"""An agent and a resource server written the way any team would write them
with Authlib (OAuth 2 client, RFC 9068 resource server) and joserfc: nothing
here knows Mandate beyond its configuration (INTEROP_CONFIG, a JSON file
naming the issuer, the key files `mandate agent enroll` wrote, each agent's
task id, the resource and the proxy URL; the CA through REQUESTS_CA_BUNDLE).

Prints one JSON line per check ({"check", "ok", "detail"}) and exits
non-zero if any failed.
"""

import base64
import hashlib
import json
import os
import secrets
import sys
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

CONFIG = json.load(open(os.environ["INTEROP_CONFIG"]))
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
failed = 0


def report(check, ok, detail=""):
    global failed
    if not ok:
        failed += 1
    print(json.dumps({"check": check, "ok": bool(ok), "detail": str(detail)}), flush=True)


def why(e):
    """The error and what caused it (Authlib wraps JOSE errors)."""
    cause = f" (from {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
    return f"{type(e).__name__}: {e}{cause}"


def check(name, fn):
    try:
        r = fn()
        report(name, r is True, "" if r is True else repr(r))
    except Exception as e:  # a failed check, not a crash of the suite
        report(name, False, why(e))


def refused(name, fn, expected):
    try:
        r = fn()
        report(name, False, f"accepted: {r!r}")
    except Exception as e:
        report(name, expected(e), why(e))


def invalid_client(e):
    return isinstance(e, OAuthError) and e.error == "invalid_client"


# RFC 8414 §3.3: the issuer in the metadata must be the one asked for.
meta = requests.get(CONFIG["issuer"] + "/.well-known/oauth-authorization-server").json()
check("discovery", lambda: meta["issuer"] == CONFIG["issuer"]
      and "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
      and "private_key_jwt" in meta["revocation_endpoint_auth_methods_supported"]
      and "private_key_jwt" in meta["introspection_endpoint_auth_methods_supported"])


class ResourceServer(JWTBearerTokenValidator):
    """RFC 9068 validation with the issuer's published keys."""

    def get_jwks(self):
        return requests.get(meta["jwks_uri"]).json()


def as_resource_server(token, audience):
    validator = ResourceServer(issuer=meta["issuer"], resource_server=audience)
    claims = validator.authenticate_token(token)
    validator.validate_token(claims, scopes=None, request=None)
    return claims


def load_key(pem, alg):
    return (OKPKey if alg in ("EdDSA", "Ed25519") else ECKey).import_key(pem)


def dpop_proof(key, alg, method, url, access_token=None):
    """An RFC 9449 proof, built with the JOSE library."""
    claims = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url, "iat": int(time.time())}
    if access_token:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key, algorithms=[alg])


def session_for(client_id, key, alg):
    auth = PrivateKeyJWT(alg=alg)
    return OAuth2Session(client_id, key, token_endpoint_auth_method=auth,
                         revocation_endpoint_auth_method=auth)


def exchange(client, session_token, task, headers=None):
    return client.fetch_token(meta["token_endpoint"], grant_type=TOKEN_EXCHANGE,
                              subject_token=session_token, subject_token_type=JWT_TYPE,
                              task_id=task, resource=CONFIG["resource"], headers=headers)


for agent in CONFIG["agents"]:
    file = json.load(open(agent["key_file"]))
    alg, cid, tag = file["alg"], file["client_id"], file["alg"]
    key = load_key(file["private_key"], alg)
    client = session_for(cid, key, alg)

    login = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    report(f"login {tag}", isinstance(login.get("access_token"), str))
    session_token = login["access_token"]

    granted = exchange(client, session_token, agent["task"])
    token = granted["access_token"]
    check(f"exchange {tag}", lambda: granted["token_type"] == "Bearer")

    def rfc9068():
        c = as_resource_server(token, CONFIG["resource"])
        return c["client_id"] == cid and c["sub"] == cid and c["txn"] == agent["task"]
    check(f"rfc9068 {tag}", rfc9068)

    h, p, s = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    body["txn"] = "task_someone_elses"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    tampered = ".".join([h, forged, s])

    def rs_refused(because, says=""):
        """The validator refused, for the JOSE reason named."""
        return lambda e: (isinstance(e, InvalidTokenError) and type(e.__cause__).__name__ == because
                          and says in str(e.__cause__))
    refused(f"tampered token {tag}", lambda: as_resource_server(tampered, CONFIG["resource"]),
            rs_refused("BadSignatureError"))
    refused(f"other audience {tag}", lambda: as_resource_server(token, CONFIG["other_resource"]),
            rs_refused("InvalidClaimError", "'aud'"))
    refused(f"session as access token {tag}",
            lambda: as_resource_server(session_token, CONFIG["resource"]),
            rs_refused("InvalidClaimError", "'typ'"))

    # RFC 9449: a sender-constrained token, used through the proxy.
    dpop_alg = "Ed25519" if alg == "EdDSA" else "ES256"
    dpop_key = OKPKey.generate_key("Ed25519") if dpop_alg == "Ed25519" else ECKey.generate_key("P-256")
    proof = dpop_proof(dpop_key, dpop_alg, "POST", meta["token_endpoint"])
    bound = exchange(session_for(cid, key, alg), session_token, agent["task"],
                     headers={"DPoP": proof, "Accept": "application/json",
                              "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"})
    check(f"dpop exchange {tag}", lambda: bound["token_type"] == "DPoP")

    def dpop_request():
        at = bound["access_token"]
        r = requests.get(CONFIG["proxy_url"], headers={
            "Authorization": f"DPoP {at}",
            "DPoP": dpop_proof(dpop_key, dpop_alg, "GET", CONFIG["proxy_url"], at)})
        # The upstream says whether it got the tool's credential, and what
        # Authorization reached it: never the agent's token.
        return (r.status_code == 200 and r.json() == {"injected": True, "authorization": None}
                ) or (r.status_code, r.text)
    check(f"dpop request at the proxy {tag}", dpop_request)

    def dpop_without_proof():
        r = requests.get(CONFIG["proxy_url"], headers={"Authorization": f"Bearer {bound['access_token']}"})
        return r.status_code == 401 or (r.status_code, r.text)
    check(f"dpop token without its proof {tag}", dpop_without_proof)

    def introspect(t):
        r = client.introspect_token(meta["introspection_endpoint"], token=t)
        r.raise_for_status()
        return r.json()

    check(f"introspection {tag}", lambda: (lambda r: r["active"] is True and r["sub"] == cid
                                           and r["txn"] == agent["task"])(introspect(token)))
    check(f"introspection of a tampered token {tag}", lambda: introspect(tampered)["active"] is False)

    def revoke_then_inactive():
        client.revoke_token(meta["revocation_endpoint"], token=token).raise_for_status()
        return introspect(token)["active"] is False
    check(f"revocation then inactive {tag}", revoke_then_inactive)

    stranger = OKPKey.generate_key("Ed25519") if dpop_alg == "Ed25519" else ECKey.generate_key("P-256")
    refused(f"unenrolled assertion key {tag}",
            lambda: session_for(cid, stranger, alg).fetch_token(
                meta["token_endpoint"], grant_type="client_credentials"),
            invalid_client)

    # A client credential that does not verify, naming another agent,
    # beside a valid session: the credential decides, not the session.
    def garbage_auth(auth, method, uri, headers, body):
        body += "&client_id=%s&client_assertion_type=%s&client_assertion=garbage" % (
            requests.utils.quote(CONFIG["other_client_id"], safe=""),
            requests.utils.quote("urn:ietf:params:oauth:client-assertion-type:jwt-bearer", safe=""))
        return uri, headers, body
    other = OAuth2Session(CONFIG["other_client_id"], None, token_endpoint_auth_method=garbage_auth)
    refused(f"garbage assertion with another client_id {tag}",
            lambda: exchange(other, session_token, agent["task"]), invalid_client)

sys.exit(0 if failed == 0 else 1)
