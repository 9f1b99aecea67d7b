//! Checking an agent's access token offline: the broker's JWKS (cached,
//! refetched on an unknown `kid` at most once a second), the key's own
//! algorithm, `typ: at+jwt`, issuer and times. A token whose signature
//! verified once is remembered by `jti` with its exact bytes
//! ([`mandate_token::cache`]), so a signature is checked once per token.

use crate::broker::Broker;
use crate::error::Deny;
use mandate_token::cache::{Expiring, TokenCache};
use mandate_token::claims::AccessClaims;
use mandate_token::{TokenError, VerifyingKey, jwt};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Clock skew allowed between broker and proxy, seconds.
pub const LEEWAY_SECS: i64 = 10;
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// The broker's published keys, by `kid`.
#[derive(Default)]
pub struct Keys {
    by_kid: RwLock<Option<HashMap<String, Arc<VerifyingKey>>>>,
    /// Keys the feed says were withdrawn: a JWKS fetched before the
    /// withdrawal may still list them.
    withdrawn: RwLock<std::collections::HashSet<String>>,
    /// Serialises refetches and remembers when the last one happened.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Keys {
    pub fn is_loaded(&self) -> bool {
        self.by_kid
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.by_kid
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .get(kid)
            .cloned()
    }

    /// Replace the key set from the broker's JWKS. Keys we cannot use are
    /// skipped with a warning rather than failing the whole set.
    pub fn set(&self, jwks: &mandate_token::JwkSet) {
        let mut map = HashMap::new();
        let withdrawn = self.withdrawn.read().unwrap_or_else(|p| p.into_inner());
        for jwk in &jwks.keys {
            let Some(kid) = jwk.kid.clone() else {
                tracing::warn!("broker JWKS has a key without `kid`; skipped");
                continue;
            };
            if withdrawn.contains(&kid) {
                continue;
            }
            match VerifyingKey::from_jwk(jwk) {
                Ok(k) => {
                    map.insert(kid, Arc::new(k));
                }
                Err(e) => tracing::warn!(%kid, error = %e, "broker JWKS key unusable; skipped"),
            }
        }
        *self.by_kid.write().unwrap_or_else(|p| p.into_inner()) = Some(map);
    }

    fn withdraw(&self, kid: &str) {
        // Withdrawn first, so a concurrent `set` cannot put it back.
        self.withdrawn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kid.to_owned());
        if let Some(map) = self
            .by_kid
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            map.remove(kid);
        }
    }

    /// Fetch the JWKS now (unless another fetch happened within a second).
    pub async fn refresh(&self, broker: &Broker, force: bool) -> Result<(), String> {
        let mut last = self.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < REFETCH_AT_MOST_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let jwks = broker.jwks().await.map_err(|e| e.to_string())?;
        self.set(&jwks);
        Ok(())
    }

    /// The key for `kid`, refetching the set once if it is unknown.
    async fn key(&self, broker: &Broker, kid: &str) -> Result<Arc<VerifyingKey>, Deny> {
        if let Some(k) = self.get(kid) {
            return Ok(k);
        }
        if self
            .withdrawn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(kid)
        {
            return Err(Deny::token(
                "revoked",
                "the key that signed the token has been revoked",
            ));
        }
        if let Err(e) = self.refresh(broker, false).await {
            tracing::warn!(error = %e, "JWKS refetch failed");
            if !self.is_loaded() {
                return Err(Deny::unavailable(
                    "broker_unavailable",
                    "the broker's signing keys could not be fetched",
                ));
            }
        }
        self.get(kid).ok_or_else(|| {
            Deny::token(
                "unknown_key",
                format!(
                    "token is signed with key `{}`, which the broker does not publish",
                    kid.chars().take(64).collect::<String>()
                ),
            )
        })
    }
}

/// A token that verified: its claims and the key that signed it (which
/// the revocation feed may withdraw).
pub struct Verified {
    pub kid: String,
    pub claims: AccessClaims,
}

impl Expiring for Verified {
    fn exp(&self) -> i64 {
        self.claims.exp
    }
}

/// Signature, `typ`, issuer and times. Audience, scope, environment and
/// revocation are the caller's next steps.
pub struct Verifier {
    pub keys: Keys,
    cache: TokenCache<Verified>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            keys: Keys::default(),
            cache: TokenCache::with_capacity(100_000),
        }
    }
}

fn invalid(e: TokenError) -> Deny {
    let code = match e {
        TokenError::Expired => "token_expired",
        TokenError::NotYetValid => "token_not_yet_valid",
        _ => "invalid_token",
    };
    Deny::token(code, e.to_string())
}

impl Verifier {
    pub async fn verify(
        &self,
        broker: &Broker,
        issuer: &str,
        token: &str,
        now: i64,
    ) -> Result<Arc<Verified>, Deny> {
        let v = match self.cache.get(token) {
            Some(c) => c,
            None => {
                let generation = self.cache.generation();
                let parsed = jwt::parse(token).map_err(invalid)?;
                parsed.expect_typ(jwt::TYP_ACCESS).map_err(invalid)?;
                let kid = parsed
                    .header
                    .kid
                    .clone()
                    .ok_or_else(|| Deny::token("invalid_token", "token header has no `kid`"))?;
                let key = self.keys.key(broker, &kid).await?;
                let claims: AccessClaims = parsed.into_claims(&key).map_err(invalid)?;
                if claims.iss != issuer {
                    return Err(invalid(TokenError::WrongIssuer));
                }
                let v = Arc::new(Verified { kid, claims });
                self.cache.put(token, v.clone(), generation);
                v
            }
        };
        jwt::check_times(v.claims.exp, Some(v.claims.nbf), now, LEEWAY_SECS).map_err(invalid)?;
        Ok(v)
    }

    /// Stop trusting a key the broker withdrew: out of the key set (and
    /// kept out of later fetches), and every cached token verified afresh.
    pub fn withdraw_key(&self, kid: &str) {
        self.keys.withdraw(kid);
        self.cache.clear();
    }

    pub fn forget_expired(&self, now: i64) {
        self.cache.forget_expired(now - LEEWAY_SECS);
    }
}
