//! Checking an agent's access token offline: the broker's JWKS (cached,
//! refetched on an unknown `kid` at most once a second), the key's own
//! algorithm, `typ: at+jwt` and issuer. A token whose signature verified
//! once is remembered with its exact bytes ([`mandate_token::cache`], the
//! same cache the broker uses), so a signature is checked once per token.
//! Times and everything else are the one decision path's
//! ([`mandate_policy::authorize_request`]), on every use.

use crate::broker::Broker;
use crate::error::{Code, Deny};
use mandate_core::RevocationKind;
use mandate_policy::Refused;
use mandate_token::cache::TokenCache;
use mandate_token::claims::{AccessClaims, VerifiedAccess};
use mandate_token::{TokenError, VerifyingKey, jwt};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
        let now = Instant::now();
        if throttled(*last, now, force) {
            return Ok(());
        }
        *last = Some(now);
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
            return Err(Refused::revoked(RevocationKind::Key).into());
        }
        if let Err(e) = self.refresh(broker, false).await {
            tracing::warn!(error = %e, "JWKS refetch failed");
        }
        // Also when the refetch was throttled after a failed one: with no
        // key set there is no verdict on the token.
        if !self.is_loaded() {
            return Err(Deny::unavailable(
                Code::BrokerUnavailable,
                "the broker's signing keys could not be fetched",
            ));
        }
        self.get(kid).ok_or_else(|| {
            let e = TokenError::UnknownKey(kid.chars().take(64).collect());
            Refused::token_error(&e).into()
        })
    }
}

/// A refetch within a second of the last one (failed or not) is skipped
/// unless forced, so tokens with made-up `kid`s cannot flood the broker.
fn throttled(last: Option<Instant>, now: Instant, force: bool) -> bool {
    !force && last.is_some_and(|t| now.saturating_duration_since(t) < REFETCH_AT_MOST_EVERY)
}

/// Signature, `typ` and issuer.
pub struct Verifier {
    pub keys: Keys,
    cache: TokenCache<VerifiedAccess>,
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
    Refused::token_error(&e).into()
}

impl Verifier {
    pub async fn verify(
        &self,
        broker: &Broker,
        issuer: &str,
        token: &str,
    ) -> Result<Arc<VerifiedAccess>, Deny> {
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
                    .ok_or_else(|| invalid(TokenError::BadHeader("no `kid`".into())))?;
                let key = self.keys.key(broker, &kid).await?;
                let claims: AccessClaims = parsed.into_claims(&key).map_err(invalid)?;
                if claims.iss != issuer {
                    return Err(invalid(TokenError::WrongIssuer));
                }
                let v = Arc::new(VerifiedAccess { kid, claims });
                self.cache.put(token, v.clone(), generation);
                v
            }
        };
        Ok(v)
    }

    /// Stop trusting a key the broker withdrew: out of the key set (and
    /// kept out of later fetches), and every cached token verified afresh.
    pub fn withdraw_key(&self, kid: &str) {
        self.keys.withdraw(kid);
        self.cache.clear();
    }

    pub fn forget_expired(&self, now: i64) {
        self.cache.forget_expired(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use mandate_token::{JwkSet, SigningAlg, SigningKey};
    use secrecy::SecretString;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const ISS: &str = "https://broker.test";
    const NOW: i64 = 1_700_000_000;

    /// The broker's JWKS endpoint: what it publishes, how often it was
    /// fetched, and whether it answers 500.
    #[derive(Default)]
    struct Published {
        jwks: Mutex<JwkSet>,
        fetches: AtomicUsize,
        failing: AtomicBool,
    }

    impl Published {
        fn publish(&self, keys: &[&SigningKey]) {
            self.jwks.lock().unwrap().keys = keys.iter().map(|k| k.public_jwk().clone()).collect();
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn broker_at(addr: std::net::SocketAddr) -> Broker {
        Broker::new(
            &format!("http://{addr}"),
            SecretString::from("mdt_test".to_owned()),
            &[],
        )
        .unwrap()
    }

    async fn broker() -> (Broker, Arc<Published>) {
        let published = Arc::new(Published::default());
        let p = published.clone();
        let jwks = move || {
            let p = p.clone();
            async move {
                p.fetches.fetch_add(1, Ordering::SeqCst);
                if p.failing.load(Ordering::SeqCst) {
                    return Err(StatusCode::INTERNAL_SERVER_ERROR);
                }
                Ok(axum::Json(p.jwks.lock().unwrap().clone()))
            }
        };
        let app = axum::Router::new().route("/.well-known/jwks.json", axum::routing::get(jwks));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (broker_at(addr), published)
    }

    /// A broker address nobody listens on.
    async fn unreachable_broker() -> Broker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        broker_at(addr)
    }

    fn key() -> SigningKey {
        SigningKey::generate(SigningAlg::EdDsa).unwrap().0
    }

    fn claims(iss: &str, nbf: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: iss.into(),
            sub: "spiffe://example.org/agent/a".into(),
            aud: "https://tool.test".into(),
            exp,
            iat: nbf,
            nbf,
            jti: "jti-1".into(),
            client_id: "a".into(),
            txn: "task-1".into(),
            scope: "read".into(),
            authorization_details: vec![],
            cnf: None,
            act: None,
            root_txn: None,
            breakglass: false,
        }
    }

    fn signed(key: &SigningKey, claims: &AccessClaims) -> String {
        jwt::encode(key, jwt::TYP_ACCESS, claims).unwrap()
    }

    /// Valid from a minute before `NOW` to five minutes after.
    fn token(key: &SigningKey) -> String {
        signed(key, &claims(ISS, NOW - 60, NOW + 300))
    }

    async fn refused(v: &Verifier, b: &Broker, token: &str) -> Deny {
        match v.verify(b, ISS, token).await {
            Ok(_) => panic!("token accepted"),
            Err(d) => d,
        }
    }

    #[tokio::test]
    async fn a_token_signed_by_a_published_key_verifies() {
        let (b, published) = broker().await;
        let k = key();
        published.publish(&[&k]);
        let v = Verifier::default();
        assert!(!v.keys.is_loaded());
        let ok = v.verify(&b, ISS, &token(&k)).await.unwrap();
        assert_eq!(ok.kid, k.kid);
        assert_eq!(ok.claims, claims(ISS, NOW - 60, NOW + 300));
        assert!(v.keys.is_loaded());
        assert_eq!(published.fetches(), 1);
    }

    #[tokio::test]
    async fn malformed_mistyped_kidless_forged_and_foreign_tokens_are_invalid_token() {
        let (b, published) = broker().await;
        let k = key();
        published.publish(&[&k]);
        let v = Verifier::default();
        let c = claims(ISS, NOW - 60, NOW + 300);

        let mut impostor = key();
        impostor.kid = k.kid.clone();
        let session = jwt::encode(&k, jwt::TYP_SESSION, &c).unwrap();
        let cases = [
            ("not a token".to_owned(), "malformed"),
            (session, "session typ"),
            (
                signed(&impostor, &c),
                "signed by another key under the same kid",
            ),
            (
                signed(&k, &claims("https://other.test", NOW - 60, NOW + 300)),
                "other issuer",
            ),
        ];
        for (t, why) in cases {
            let d = refused(&v, &b, &t).await;
            assert_eq!(
                (d.status, d.code.as_str()),
                (StatusCode::UNAUTHORIZED, "invalid_token"),
                "{why}"
            );
        }

        let fetches = published.fetches();
        let kidless = jwt::encode_with_jwk(&k, jwt::TYP_ACCESS, &c).unwrap();
        let d = refused(&v, &b, &kidless).await;
        assert_eq!(d.code.as_str(), "invalid_token");
        assert!(d.message.contains("kid"), "{}", d.message);
        assert_eq!(published.fetches(), fetches, "no key to look up, no fetch");
    }

    #[tokio::test]
    async fn a_key_the_broker_does_not_publish_is_unknown_key() {
        let (b, published) = broker().await;
        let (k, other) = (key(), key());
        published.publish(&[&k]);
        let v = Verifier::default();
        let d = refused(&v, &b, &token(&other)).await;
        assert_eq!(
            (d.status, d.code.as_str()),
            (StatusCode::UNAUTHORIZED, "unknown_key")
        );
        assert!(d.message.contains(&other.kid));
        assert_eq!(published.fetches(), 1);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_the_jwks_at_most_once_a_second() {
        let (b, published) = broker().await;
        let (k, new) = (key(), key());
        published.publish(&[&k]);
        let v = Verifier::default();
        v.verify(&b, ISS, &token(&k)).await.unwrap();
        assert_eq!(published.fetches(), 1);

        // The broker rotated, but the last fetch was under a second ago.
        published.publish(&[&k, &new]);
        for _ in 0..3 {
            assert_eq!(
                refused(&v, &b, &token(&new)).await.code.as_str(),
                "unknown_key"
            );
        }
        assert_eq!(published.fetches(), 1);

        // A known key needs no fetch at all; a forced refresh is never throttled.
        v.verify(&b, ISS, &token(&k)).await.unwrap();
        assert_eq!(published.fetches(), 1);
        v.keys.refresh(&b, true).await.unwrap();
        assert_eq!(published.fetches(), 2);
        v.verify(&b, ISS, &token(&new)).await.unwrap();
    }

    #[test]
    fn the_throttle_lets_a_fetch_through_one_second_after_the_last() {
        let last = Instant::now();
        let after = |ms| last + Duration::from_millis(ms);
        assert!(!throttled(None, last, false));
        assert!(throttled(Some(last), last, false));
        assert!(throttled(Some(last), after(999), false));
        assert!(!throttled(Some(last), after(1000), false));
        assert!(!throttled(Some(last), after(5000), false));
        assert!(!throttled(Some(last), last, true));
        // A `now` before `last` (another task stamped it first) is "just now".
        assert!(throttled(Some(after(10)), last, false));
    }

    #[tokio::test]
    async fn keys_that_cannot_be_fetched_make_the_broker_unavailable() {
        let b = unreachable_broker().await;
        let v = Verifier::default();
        let t = token(&key());
        let d = refused(&v, &b, &t).await;
        assert_eq!(
            (d.status, d.code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
        );
        assert!(!v.keys.is_loaded());
        // Throttled now, and still nothing loaded: still unavailable, not a
        // verdict on the token.
        let d = refused(&v, &b, &t).await;
        assert_eq!(d.code.as_str(), "broker_unavailable");
    }

    #[tokio::test]
    async fn a_failed_refetch_with_keys_loaded_is_unknown_key_and_is_throttled_too() {
        let (b, published) = broker().await;
        let k = key();
        published.publish(&[&k]);
        let v = Verifier::default();
        v.keys.refresh(&b, true).await.unwrap();
        published.failing.store(true, Ordering::SeqCst);
        let other = token(&key());
        let d = refused(&v, &b, &other).await;
        assert_eq!(
            (d.status, d.code.as_str()),
            (StatusCode::UNAUTHORIZED, "unknown_key")
        );
        assert!(v.keys.refresh(&b, true).await.is_err());
        let fetches = published.fetches();
        assert_eq!(refused(&v, &b, &other).await.code.as_str(), "unknown_key");
        assert_eq!(
            published.fetches(),
            fetches,
            "a failed fetch counts for the throttle"
        );
        // The keys from before the failure still serve.
        v.verify(&b, ISS, &token(&k)).await.unwrap();
    }

    #[tokio::test]
    async fn a_withdrawn_key_is_revoked_even_for_cached_tokens_and_later_fetches() {
        let (b, published) = broker().await;
        let (k, kept) = (key(), key());
        published.publish(&[&k, &kept]);
        let v = Verifier::default();
        let t = token(&k);
        v.verify(&b, ISS, &t).await.unwrap();
        v.verify(&b, ISS, &token(&kept)).await.unwrap();

        v.withdraw_key(&k.kid);
        let fetches = published.fetches();
        let d = refused(&v, &b, &t).await;
        assert_eq!(
            (d.status, d.code.as_str()),
            (StatusCode::UNAUTHORIZED, "revoked")
        );
        assert_eq!(
            published.fetches(),
            fetches,
            "a withdrawn key is not looked for"
        );

        // A JWKS fetched before the withdrawal still lists the key.
        v.keys.refresh(&b, true).await.unwrap();
        assert_eq!(refused(&v, &b, &t).await.code.as_str(), "revoked");
        v.verify(&b, ISS, &token(&kept)).await.unwrap();
    }

    #[tokio::test]
    async fn a_verified_signature_is_remembered_until_the_token_expires() {
        let (b, published) = broker().await;
        let k = key();
        published.publish(&[&k]);
        let v = Verifier::default();
        let t = signed(&k, &claims(ISS, NOW, NOW + 100));
        v.verify(&b, ISS, &t).await.unwrap();

        // The key is gone from the set, yet the cached token needs none.
        v.keys.set(&JwkSet::default());
        v.verify(&b, ISS, &t).await.unwrap();
        // Kept while it is still good within the leeway.
        v.forget_expired(NOW + 100 - 1);
        v.verify(&b, ISS, &t).await.unwrap();
        // Forgotten after: verifying now needs the key, which is gone.
        v.forget_expired(NOW + 100);
        assert_eq!(refused(&v, &b, &t).await.code.as_str(), "unknown_key");
        assert_eq!(
            published.fetches(),
            1,
            "throttled: the set was fetched under a second ago"
        );
    }

    #[test]
    fn keys_without_kid_or_unusable_are_skipped_not_fatal() {
        let (k, nameless) = (key(), key());
        let mut anonymous = nameless.public_jwk().clone();
        anonymous.kid = None;
        let mut broken = mandate_token::Jwk::new("oct");
        broken.kid = Some("broken".into());
        let keys = Keys::default();
        keys.set(&JwkSet {
            keys: vec![anonymous, broken, k.public_jwk().clone()],
        });
        assert!(keys.is_loaded());
        assert!(keys.get(&k.kid).is_some());
        assert!(keys.get("broken").is_none());
        assert_eq!(
            keys.by_kid.read().unwrap().as_ref().map(HashMap::len),
            Some(1)
        );
    }
}
