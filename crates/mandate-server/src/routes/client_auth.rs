//! RFC 6749 §2.3 client authentication, one rule for the token, revocation
//! and introspection endpoints: an agent authenticates by `private_key_jwt`
//! (an RFC 7523 client assertion signed by its enrolled key), an operator
//! or gateway by its admin bearer token (an agent may also use its
//! identity session as a bearer). A credential that is presented must
//! verify, even where another one in the request would have sufficed, and
//! a `client_id` must name the client that authenticated.

use super::caller::{Caller, bearer};
use crate::app::{App, now};
use crate::error::OAuthError;
use crate::extract::OAuthForm;
use mandate_core::{Agent, SpiffeId};
use mandate_token::{Jwk, VerifyingKey, jwt};
use std::sync::Arc;

pub const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew allowed on an assertion's times, seconds.
const ASSERTION_LEEWAY_SECS: i64 = 30;

#[derive(serde::Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: String,
}

/// A client assertion that verified: its agent, and its `jti` with the
/// time until which a replay must be refused.
pub struct Assertion {
    pub agent: Arc<Agent>,
    pub jti: String,
    pub replay_until: i64,
}

/// Why client authentication failed: the error, and the agent the
/// credential named when that much was readable (for the audit record).
pub struct AuthFailure {
    pub agent: Option<String>,
    pub error: OAuthError,
}

fn invalid_client(agent: Option<String>, d: impl Into<String>) -> AuthFailure {
    AuthFailure {
        agent,
        error: OAuthError::new("invalid_client", d),
    }
}

/// Who authenticated to an OAuth endpoint.
pub enum Client {
    /// No client credential: the request's own proof (a session as the
    /// exchange's `subject_token`) decides.
    Anonymous,
    /// `private_key_jwt`.
    Key(Assertion),
    /// `Authorization: Bearer`: an admin token or an agent's session.
    Bearer(Caller),
}

impl Client {
    /// The agent this client is, if it is one.
    pub fn agent(&self) -> Option<&Arc<Agent>> {
        match self {
            Client::Key(a) => Some(&a.agent),
            Client::Bearer(Caller::Agent { agent, .. }) => Some(agent),
            Client::Bearer(Caller::Admin(_)) | Client::Anonymous => None,
        }
    }
}

/// Verify the request's client assertion, if it carries one (signature by
/// the enrolled key, `iss` = `sub` = the agent, audience, times, lifetime,
/// `jti` present). Replay is the caller's: login records the `jti`
/// durably with the session; the other endpoints use
/// [`App::assertion_seen`]. `endpoint` is the URL the request went to,
/// accepted as `aud` beside the token endpoint and the issuer.
fn verify_assertion(
    app: &App,
    form: &OAuthForm,
    endpoint: &str,
) -> Result<Option<Assertion>, AuthFailure> {
    let (kind, assertion) = match (
        form.get("client_assertion_type"),
        form.get("client_assertion"),
    ) {
        (None, None) => return Ok(None),
        (Some(k), Some(a)) => (k, a),
        (None, Some(_)) => return Err(invalid_client(None, "client_assertion_type is required")),
        (Some(_), None) => return Err(invalid_client(None, "client_assertion is required")),
    };
    if kind != CLIENT_ASSERTION_JWT {
        return Err(invalid_client(
            None,
            format!("client_assertion_type must be {CLIENT_ASSERTION_JWT}"),
        ));
    }
    let fail = |agent: Option<&str>, d: &str| {
        invalid_client(agent.map(str::to_owned), format!("client assertion: {d}"))
    };
    let parsed = jwt::parse(assertion).map_err(|e| fail(None, &e.to_string()))?;
    let claims: AssertionClaims = parsed
        .peek_claims()
        .map_err(|e| fail(None, &e.to_string()))?;
    let id = SpiffeId::parse("iss", &claims.iss)
        .map_err(|_| fail(None, "`iss` must be the agent's SPIFFE ID"))?;
    let name = id.agent.to_string();
    let fail = |d: &str| fail(Some(&name), d);
    if claims.sub != claims.iss {
        return Err(fail("`sub` must equal `iss`"));
    }
    if id.trust_domain != app.settings.trust_domain {
        return Err(fail("agent is in another trust domain"));
    }
    let agent = app
        .directory
        .agent(&id.agent)
        .ok_or_else(|| fail("unknown agent"))?;
    if !agent.is_active() {
        return Err(fail("agent is revoked"));
    }
    let jwk: Jwk = agent
        .enrolled_key
        .clone()
        .and_then(|k| serde_json::from_value(k).ok())
        .ok_or_else(|| fail("agent has not enrolled a key"))?;
    let key = VerifyingKey::from_jwk(&jwk).map_err(|e| fail(&e.to_string()))?;
    parsed.verify(&key).map_err(|e| fail(&e.to_string()))?;
    let token_endpoint = format!("{}/oauth/token", app.issuer);
    let aud_ok = |a: &str| a == token_endpoint || a == app.issuer || a == endpoint;
    let aud_ok = match &claims.aud {
        serde_json::Value::String(a) => aud_ok(a),
        serde_json::Value::Array(v) => v.iter().any(|a| a.as_str().is_some_and(aud_ok)),
        _ => false,
    };
    if !aud_ok {
        return Err(fail(
            "`aud` must be the token endpoint, the issuer or this endpoint",
        ));
    }
    let t = now();
    jwt::check_times(claims.exp, claims.nbf, t, ASSERTION_LEEWAY_SECS)
        .map_err(|e| fail(&e.to_string()))?;
    // Saturating: an extreme `iat` must fail the check, not wrap past it.
    let max_lifetime = i64::from(app.settings.raw.client_assertion_max_lifetime_secs);
    if claims.exp.saturating_sub(claims.iat.unwrap_or(t).min(t)) > max_lifetime {
        return Err(fail(&format!(
            "lifetime must be at most {max_lifetime}s (client_assertion_max_lifetime_secs)"
        )));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(fail("`jti` is required (1 to 256 characters)"));
    }
    Ok(Some(Assertion {
        agent,
        jti: claims.jti,
        replay_until: claims.exp.saturating_add(ASSERTION_LEEWAY_SECS),
    }))
}

/// The one client-authentication rule. `endpoint` is the URL the request
/// went to (a valid assertion `aud`).
pub async fn authenticate(
    app: &App,
    form: &OAuthForm,
    headers: &http::HeaderMap,
    endpoint: &str,
) -> Result<Client, AuthFailure> {
    let assertion = verify_assertion(app, form, endpoint)?;
    let caller = match headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(_) => {
            let token = bearer(headers).ok_or_else(|| {
                invalid_client(
                    None,
                    "Authorization must be `Bearer <admin token or session>`",
                )
            })?;
            let caller = Caller::from_bearer(app, token)
                .await
                .map_err(|e| invalid_client(None, e.message))?;
            Some(caller)
        }
    };
    let client = match (assertion, caller) {
        (None, None) => Client::Anonymous,
        (Some(a), None) => Client::Key(a),
        (None, Some(c)) => Client::Bearer(c),
        (Some(a), Some(Caller::Agent { agent, .. })) if agent.name == a.agent.name => {
            Client::Key(a)
        }
        (Some(a), Some(_)) => {
            return Err(invalid_client(
                Some(a.agent.name.to_string()),
                "the client assertion and the bearer token name different clients",
            ));
        }
    };
    if let Some(id) = form.get("client_id") {
        let agrees = match client.agent() {
            Some(agent) => agent.spiffe_id == id,
            // A public client names itself; the request's proof is checked
            // against it by the endpoint.
            None => matches!(client, Client::Anonymous),
        };
        if !agrees {
            return Err(invalid_client(
                client.agent().map(|a| a.name.to_string()),
                "`client_id` does not name the client that authenticated",
            ));
        }
    }
    Ok(client)
}

/// At the token exchange, the client must be `agent` (`whose`: the agent
/// the request's proof names, for the message): by its key (the assertion
/// then spent), its session as a bearer, or no credential but a matching
/// `client_id`. An admin token is never the exchange's client.
pub fn require_agent(
    app: &App,
    client: &Client,
    form: &OAuthForm,
    agent: &Agent,
    whose: &str,
) -> Result<(), OAuthError> {
    let refuse = |d: String| Err(OAuthError::new("invalid_client", d));
    match client {
        Client::Anonymous => match form.get("client_id") {
            Some(id) if id != agent.spiffe_id => {
                refuse(format!("`client_id` does not name {whose}"))
            }
            _ => Ok(()),
        },
        Client::Key(a) if a.agent.name == agent.name => app.assertion_seen(a),
        Client::Bearer(Caller::Agent { agent: by, .. }) if by.name == agent.name => Ok(()),
        Client::Bearer(Caller::Admin(_)) => refuse(
            "an admin token is not a client of the token exchange; the agent authenticates (private_key_jwt or its session)"
                .into(),
        ),
        Client::Key(_) | Client::Bearer(_) => {
            refuse(format!("the client that authenticated is not {whose}"))
        }
    }
}

impl App {
    /// Refuse an assertion `jti` seen before at an endpoint other than
    /// login (which records it durably with the session).
    pub fn assertion_seen(&self, a: &Assertion) -> Result<(), OAuthError> {
        let key = format!("{}:{}", a.agent.name, a.jti);
        self.assertion_replay
            .first_use_until(&key, a.replay_until, now())
            .map_err(|_| {
                OAuthError::new(
                    "invalid_client",
                    "client assertion `jti` was already used (replay)",
                )
            })
    }
}
