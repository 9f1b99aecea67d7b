//! Tokens whose signature already verified, so a signature is checked once
//! per token rather than once per request. Keyed by the token's signature
//! segment (unique per token, and free to find: no decoding on a hit). The
//! exact token bytes are kept and compared in constant time on lookup, so
//! a forged token that reuses a cached signature or `jti` misses and goes
//! through full verification. Expiry, revocation and the rest stay the
//! caller's job on every use: a hit only means "this exact text verified
//! before".

use crate::claims::{AccessClaims, SessionClaims, VerifiedAccess};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Entries kept before the cache starts over (a miss only costs a verify).
pub const DEFAULT_CAPACITY: usize = 200_000;

/// Claims with an expiry, so the cache can drop them.
pub trait Expiring {
    fn exp(&self) -> i64;
}

impl Expiring for AccessClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Expiring for VerifiedAccess {
    fn exp(&self) -> i64 {
        self.claims.exp
    }
}

impl Expiring for SessionClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

/// The exact token text and its verified claims.
type Cached<C> = (Box<str>, Arc<C>);

/// Verified claims by signature segment, with the token text they came from.
pub struct TokenCache<C> {
    entries: RwLock<HashMap<Box<str>, Cached<C>>>,
    capacity: usize,
    /// Bumped by [`TokenCache::clear`]; a verification that began before a
    /// clear (say, with a key withdrawn since) cannot cache its result.
    generation: AtomicU64,
}

impl<C> Default for TokenCache<C> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<C> TokenCache<C> {
    pub fn with_capacity(capacity: usize) -> Self {
        TokenCache {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            generation: AtomicU64::new(0),
        }
    }
}

impl<C: Expiring> TokenCache<C> {
    /// The claims `token` verified to earlier, if this exact text did.
    pub fn get(&self, token: &str) -> Option<Arc<C>> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (cached, claims) = map.get(signature_of(token)?)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(cached.as_bytes(), token.as_bytes())
            .ok()
            .map(|_| claims.clone())
    }

    /// Read before verifying; pass to [`TokenCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remember that `token` verified to `claims`, unless the cache was
    /// cleared since `generation` was read. Call only after the signature
    /// (and whatever else the caller treats as fixed) checked out.
    pub fn put(&self, token: &str, claims: Arc<C>, generation: u64) {
        let Some(sig) = signature_of(token) else {
            return;
        };
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= self.capacity {
            // Full: start over rather than track recency; a miss only costs a verify.
            map.clear();
        }
        map.insert(sig.into(), (token.into(), claims));
    }

    /// Forget everything (a signing key was withdrawn): every token is
    /// verified afresh, and verifications already under way are not kept.
    pub fn clear(&self) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }

    /// Drop entries whose token has expired by `now`.
    pub fn forget_expired(&self, now: i64) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, c)| c.exp() > now);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The third segment of a compact JWS: only a cache key.
fn signature_of(token: &str) -> Option<&str> {
    let mut parts = token.splitn(3, '.');
    let (_, _, sig) = (parts.next()?, parts.next()?, parts.next()?);
    (!sig.is_empty()).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SigningAlg, SigningKey, jwt};

    struct C {
        exp: i64,
    }
    impl Expiring for C {
        fn exp(&self) -> i64 {
            self.exp
        }
    }

    fn token(key: &SigningKey, jti: &str) -> String {
        jwt::encode(key, jwt::TYP_ACCESS, &serde_json::json!({"jti": jti})).unwrap()
    }

    #[test]
    fn forged_tokens_miss() {
        let (a, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let (b, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let cache = TokenCache::default();
        let good = token(&a, "j1");
        cache.put(&good, Arc::new(C { exp: 10 }), cache.generation());
        assert!(cache.get(&good).is_some());
        // Same jti, another key.
        assert!(cache.get(&token(&b, "j1")).is_none());
        // The cached signature on an edited payload.
        let parts: Vec<&str> = good.split('.').collect();
        let other = token(&a, "j2");
        let payload = other.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(cache.get(&spliced).is_none());
        assert!(cache.get("not a token").is_none());
        assert!(cache.get("a.b.").is_none());
    }

    #[test]
    fn expired_entries_are_forgotten_and_capacity_is_bounded() {
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let cache = TokenCache::with_capacity(2);
        for (i, exp) in [5, 50].iter().enumerate() {
            cache.put(
                &token(&k, &format!("j{i}")),
                Arc::new(C { exp: *exp }),
                cache.generation(),
            );
        }
        cache.forget_expired(10);
        assert_eq!(cache.len(), 1);
        for i in 2..5 {
            cache.put(
                &token(&k, &format!("j{i}")),
                Arc::new(C { exp: 99 }),
                cache.generation(),
            );
        }
        assert!(cache.len() <= 2);
    }

    #[test]
    fn distinct_tokens_are_cached_side_by_side() {
        // Each token has its own entry: a put must not evict another while
        // there is room.
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let cache = TokenCache::with_capacity(3);
        assert!(cache.is_empty());
        let (t1, t2) = (token(&k, "j1"), token(&k, "j2"));
        cache.put(&t1, Arc::new(C { exp: 99 }), cache.generation());
        cache.put(&t2, Arc::new(C { exp: 98 }), cache.generation());
        assert_eq!(cache.len(), 2);
        assert!(!cache.is_empty());
        assert_eq!(cache.get(&t1).map(|c| c.exp), Some(99));
        assert_eq!(cache.get(&t2).map(|c| c.exp), Some(98));
    }

    #[test]
    fn an_entry_is_forgotten_at_its_exp_not_before() {
        // Same rule as `check_times`: a token is expired when now >= exp.
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let cache = TokenCache::default();
        let (t1, t2) = (token(&k, "j1"), token(&k, "j2"));
        cache.put(&t1, Arc::new(C { exp: 10 }), cache.generation());
        cache.put(&t2, Arc::new(C { exp: 11 }), cache.generation());
        cache.forget_expired(10);
        assert!(cache.get(&t1).is_none());
        assert!(cache.get(&t2).is_some());
    }

    #[test]
    fn access_and_session_claims_expire_at_their_exp() {
        const EXP: i64 = 1_800_000_000;
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let access = AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: EXP,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            client_id: "c".into(),
            txn: "t".into(),
            scope: String::new(),
            authorization_details: vec![],
            cnf: None,
            act: None,
            root_txn: None,
            breakglass: false,
        };
        let session = SessionClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: EXP,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            client_id: "c".into(),
            amr: vec![],
            model: None,
            model_version: None,
        };
        assert_eq!((access.exp(), session.exp()), (EXP, EXP));
        let t = token(&k, "j");
        let cache = TokenCache::default();
        cache.put(&t, Arc::new(access), cache.generation());
        cache.forget_expired(EXP - 1);
        assert!(cache.get(&t).is_some());
        cache.forget_expired(EXP);
        assert!(cache.get(&t).is_none());
    }

    #[test]
    fn a_clear_forgets_and_refuses_verifications_begun_before_it() {
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let cache = TokenCache::default();
        let (t1, t2) = (token(&k, "j1"), token(&k, "j2"));
        cache.put(&t1, Arc::new(C { exp: 99 }), cache.generation());
        let begun = cache.generation();
        cache.clear();
        assert!(cache.get(&t1).is_none());
        cache.put(&t2, Arc::new(C { exp: 99 }), begun);
        assert!(cache.get(&t2).is_none(), "began before the clear");
        cache.put(&t2, Arc::new(C { exp: 99 }), cache.generation());
        assert!(cache.get(&t2).is_some());
    }
}
