//! Minting and checking the broker's own tokens: identity sessions and
//! RFC 9068 access tokens. Tokens that verified once are cached by `jti`
//! (with the exact token bytes, compared in constant time) so a signature
//! is checked once per token, not once per request; expiry, revocation and
//! the agent's state are still checked on every use.

use crate::app::App;
use mandate_core::RevocationKind;
use mandate_core::{Agent, Jti, RandomId};
use mandate_policy::Refused;
use mandate_token::claims::{SessionClaims, VerifiedAccess};
use mandate_token::{TokenError, jwt};
use std::sync::Arc;

/// Our own tokens: issuer and verifier share a clock, so none; a token is
/// dead at its `exp`. (The proxy, on another host, allows 10 s, and still
/// refuses past the task's deadline.)
const LEEWAY_SECS: i64 = 0;

pub fn new_jti() -> Jti {
    Jti::from_random(mandate_token::random_bytes())
}

impl App {
    pub fn mint_session(
        &self,
        agent: &Agent,
        amr: &str,
        model: Option<&mandate_core::Model>,
        now: i64,
    ) -> Result<(String, SessionClaims), TokenError> {
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            sub: agent.spiffe_id.clone(),
            aud: self.issuer.clone(),
            exp: now + self.settings.raw.session_ttl_secs as i64,
            iat: now,
            nbf: now,
            jti: new_jti().to_string(),
            client_id: agent.spiffe_id.clone(),
            amr: vec![amr.to_owned()],
            model: model.map(|m| m.model.clone()),
            model_version: model.and_then(|m| m.version.clone()),
        };
        let token = jwt::encode(&self.keys.current(), jwt::TYP_SESSION, &claims)?;
        Ok((token, claims))
    }

    fn verify_own<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        now: i64,
    ) -> Result<T, TokenError> {
        let parsed = jwt::parse(token)?;
        parsed.expect_typ(typ)?;
        let kid = parsed
            .header
            .kid
            .as_deref()
            .ok_or(TokenError::UnknownKey("-".into()))?;
        let key = self
            .keys
            .get(kid, now)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        parsed.into_claims(key.verifier())
    }

    /// A live session: signature, type, issuer, audience, expiry, not
    /// revoked, agent still active.
    pub fn verify_session(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Arc<SessionClaims>, Arc<Agent>), String> {
        let c = match self.sessions.get(token) {
            Some(c) => c,
            None => {
                let generation = self.sessions.generation();
                let c: SessionClaims = self
                    .verify_own(token, jwt::TYP_SESSION, now)
                    .map_err(|e| e.to_string())?;
                if c.iss != self.issuer {
                    return Err(TokenError::WrongIssuer.to_string());
                }
                if c.aud != self.issuer {
                    return Err(TokenError::WrongAudience.to_string());
                }
                let c = Arc::new(c);
                self.sessions.put(token, c.clone(), generation);
                c
            }
        };
        jwt::check_times(c.exp, Some(c.nbf), now, LEEWAY_SECS).map_err(|e| e.to_string())?;
        if self.directory.is_token_revoked(&c.jti) {
            return Err("session has been revoked".into());
        }
        let agent = mandate_core::SpiffeId::parse("sub", &c.sub)
            .ok()
            .and_then(|id| self.directory.agent(&id.agent))
            .ok_or("session's agent is unknown")?;
        if !agent.is_active() {
            return Err("agent has been revoked".into());
        }
        Ok((c, agent))
    }

    /// An access token after signature, type and issuer checks (cached).
    /// Times, revocation and task state are checked on every use by
    /// [`mandate_policy::check_token`]; a token signed by a withdrawn key
    /// is refused here as revoked, as the proxy does.
    pub fn verify_access(&self, token: &str, now: i64) -> Result<Arc<VerifiedAccess>, Refused> {
        if let Some(v) = self.verified.get(token) {
            return Ok(v);
        }
        let generation = self.verified.generation();
        let kid = jwt::parse(token)
            .ok()
            .and_then(|p| p.header.kid.clone())
            .unwrap_or_default();
        if self.directory.is_key_revoked(&kid) {
            return Err(Refused::revoked(RevocationKind::Key));
        }
        let claims: mandate_token::claims::AccessClaims = self
            .verify_own(token, jwt::TYP_ACCESS, now)
            .map_err(|e| Refused::token_error(&e))?;
        if claims.iss != self.issuer {
            return Err(Refused::token_error(&TokenError::WrongIssuer));
        }
        let v = Arc::new(VerifiedAccess { kid, claims });
        self.verified.put(token, v.clone(), generation);
        Ok(v)
    }
}
