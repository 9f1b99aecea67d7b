//! DPoP (RFC 9449): the holder of an access token proves, on every request,
//! that it also holds the private key the token was bound to (`cnf.jkt`).
//! A stolen DPoP-bound token is useless without that key.
//!
//! A proof is a JWS with `typ: dpop+jwt` whose header carries the public
//! `jwk` that signed it, and whose claims name the request (`htm`, `htu`),
//! a fresh `iat`, a unique `jti` and, at a resource, `ath` = the hash of
//! the access token presented with it.

use crate::{Jwk, TokenError, VerifyingKey, b64, jwt};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;

pub const TYP_DPOP: &str = "dpop+jwt";
/// A proof's `iat` may be this far from our clock, either way.
pub const PROOF_WINDOW_SECS: i64 = 60;
/// Longest proof we parse.
const MAX_PROOF_LEN: usize = 8 * 1024;

/// What the proof must match: this request, and the token sent with it.
pub struct Expect<'a> {
    pub method: &'a str,
    /// The request's URL as the client addressed it (query ignored).
    pub url: &'a str,
    /// The access token sent with the proof (at a resource); `None` at the
    /// token endpoint, where no token exists yet.
    pub access_token: Option<&'a str>,
    pub now: i64,
}

/// A proof that checked out: the key's thumbprint (what `cnf.jkt` binds)
/// and its `jti` (for replay detection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
}

fn bad(why: impl Into<String>) -> TokenError {
    TokenError::BadProof(why.into())
}

/// Check one DPoP proof (signature with its own `jwk`, type, request
/// binding, freshness, `ath`). Replay is the caller's: see [`ReplayGuard`].
pub fn verify_proof(proof: &str, expect: &Expect<'_>) -> Result<Proof, TokenError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(bad("proof is too large"));
    }
    let parsed = jwt::parse(proof).map_err(|e| bad(e.to_string()))?;
    parsed
        .expect_typ(TYP_DPOP)
        .map_err(|_| bad("typ must be dpop+jwt"))?;
    let jwk: &Jwk = parsed
        .header
        .jwk
        .as_ref()
        .ok_or_else(|| bad("header has no jwk"))?;
    if jwk.has_private_part() {
        return Err(bad("header jwk contains a private key"));
    }
    let key = VerifyingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
    parsed.verify(&key).map_err(|e| bad(e.to_string()))?;
    let c: ProofClaims = parsed.peek_claims().map_err(|e| bad(e.to_string()))?;
    if c.jti.is_empty() || c.jti.len() > 256 {
        return Err(bad("jti must be 1 to 256 characters"));
    }
    if c.htm != expect.method {
        return Err(bad("htm does not match the request method"));
    }
    match (normalize_url(&c.htu), normalize_url(expect.url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(bad("htu does not match the request URL")),
    }
    // abs_diff: an extreme `iat` must be refused, not overflow.
    if expect.now.abs_diff(c.iat) > PROOF_WINDOW_SECS as u64 {
        return Err(bad("iat is outside the accepted window"));
    }
    if let Some(token) = expect.access_token {
        let want = token_hash(token);
        match c.ath {
            Some(ath)
                if aws_lc_rs::constant_time::verify_slices_are_equal(
                    ath.as_bytes(),
                    want.as_bytes(),
                )
                .is_ok() => {}
            Some(_) => return Err(bad("ath does not match the access token")),
            None => return Err(bad("ath is missing")),
        }
    }
    Ok(Proof {
        jkt: jwk.thumbprint().map_err(|e| bad(e.to_string()))?,
        jti: c.jti,
    })
}

/// Why a proof for a bound token failed. A proof that is itself good but
/// signed by another key, or used before, is evidence that the token left
/// its holder: the caller gets the proof to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundError {
    /// The proof itself is bad (or the replay guard is full).
    Proof(TokenError),
    /// A good proof, by another key than the token is bound to.
    OtherKey(Proof),
    /// A good proof by the bound key, seen before.
    Replayed(Proof),
}

impl std::fmt::Display for BoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundError::Proof(e) => e.fmt(f),
            BoundError::OtherKey(_) => {
                f.write_str("proof is signed by another key than the token is bound to")
            }
            BoundError::Replayed(_) => f.write_str("proof has been used before"),
        }
    }
}

/// A resource's whole check of a proof for a token bound to `jkt`: the
/// proof itself, signed by the bound key, not seen before.
pub fn verify_bound(
    jkt: &str,
    proof: &str,
    expect: &Expect<'_>,
    guard: &ReplayGuard,
) -> Result<Proof, BoundError> {
    let p = verify_proof(proof, expect).map_err(BoundError::Proof)?;
    // Both thumbprints are public (one is in the token): no timing concern.
    if p.jkt != jkt {
        return Err(BoundError::OtherKey(p));
    }
    match guard.first_use(&p, expect.now) {
        Ok(()) => Ok(p),
        Err(TokenError::ProofReplayed) => Err(BoundError::Replayed(p)),
        Err(e) => Err(BoundError::Proof(e)),
    }
}

/// Make a proof (the client's side): signed by `key`, naming this request.
pub fn sign_proof(
    key: &crate::SigningKey,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: i64,
) -> Result<String, TokenError> {
    let mut claims = serde_json::json!({
        "jti": hex::encode(crate::random_bytes::<16>()), "htm": method, "htu": url, "iat": now,
    });
    if let Some(t) = access_token {
        claims["ath"] = token_hash(t).into();
    }
    jwt::encode_with_jwk(key, TYP_DPOP, &claims)
}

/// `ath`: base64url(SHA-256(access token)).
pub fn token_hash(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// Scheme and host lower-cased, default port dropped, query and fragment
/// removed (RFC 9449 §4.3 compares `htu` without them).
fn normalize_url(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next()?;
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => authority,
    };
    matches!(scheme.as_str(), "http" | "https").then(|| format!("{scheme}://{authority}{path}"))
}

/// Proof `jti`s seen within the window, so a captured proof cannot be
/// replayed. Bounded: when full of live entries it refuses new proofs
/// rather than forget old ones (forgetting would re-admit replays).
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, i64>>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(200_000)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Record `proof` as used at `now`; an error if it was used before.
    pub fn first_use(&self, proof: &Proof, now: i64) -> Result<(), TokenError> {
        // A proof stays acceptable for PROOF_WINDOW_SECS past its iat,
        // which may itself be that far ahead of our clock.
        let key = format!("{}:{}", proof.jkt, proof.jti);
        self.first_use_until(&key, now + 2 * PROOF_WINDOW_SECS, now)
    }

    /// Record `key` as used until `until` (the last second the thing it
    /// names can still verify); an error if it was used before.
    pub fn first_use_until(&self, key: &str, until: i64, now: i64) -> Result<(), TokenError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains_key(key) {
            return Err(TokenError::ProofReplayed);
        }
        if seen.len() >= self.capacity {
            // `until` is the last second a proof can still verify: keep it.
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.capacity {
                return Err(bad("too many proofs in flight; retry shortly"));
            }
        }
        seen.insert(key.to_owned(), until);
        Ok(())
    }
}

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod tests;
