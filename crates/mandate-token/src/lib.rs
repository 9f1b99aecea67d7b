//! JWTs the way Mandate needs them, on one crypto backend (aws-lc-rs).
//!
//! - [`KeyRing`]: the broker's signing keys (EdDSA by default, ES256/RS256 on
//!   request), persisted 0600 in the data dir, rotated with the old key kept
//!   published until everything it signed has expired.
//! - [`jwt`]: compact JWS encode/verify with RFC 8725 hygiene: explicit `typ`,
//!   a per-key algorithm (so no algorithm confusion), never `none`, no HMAC.
//! - [`Jwk`]/[`VerifyingKey`]: public keys from JWK sets (issuers, agents).
//! - [`claims`]: RFC 9068 access-token claims and identity-session claims.
//!
//! - [`seal`]: envelope encryption (AES-256-GCM) for stored secrets.
//! - [`cache`]: verified tokens by `jti`, so a signature is checked once.
//! - [`checkpoint`]: the audit chain's head, signed.
//!
//! No network and no clocks: callers pass `now`.

#![forbid(unsafe_code)]

pub mod cache;
pub mod checkpoint;
pub mod claims;
pub mod dpop;
mod error;
mod jwk;
pub mod jwt;
mod keys;
pub mod pem;
pub mod seal;

pub use error::TokenError;
pub use jwk::{Jwk, JwkSet, VerifyingKey};
pub use keys::{ACCEPTED_ALG_NAMES, KeyRing, SigningAlg, SigningKey};

/// Random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SystemRandom only fails if the OS RNG is unavailable, in which case no
    // security property can hold and stopping is the only safe answer.
    aws_lc_rs::rand::fill(&mut b).expect("operating system random number generator failed");
    b
}

/// Unpadded base64url, as JOSE uses everywhere.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// SHA-256 as lowercase hex: how Mandate stores hashes of bearer secrets.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}
