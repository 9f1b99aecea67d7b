//! Signed audit checkpoints: the head of the audit hash chain (`seq`,
//! `hash`) signed by the broker's token-signing key, as a compact JWS of
//! its own `typ` (so it can never pass as a token, nor a token as it).
//!
//! A hash chain shows an edited record, but not a log rewritten from some
//! point on, or cut short. A checkpoint kept outside the broker pins the
//! head: a log that no longer holds that `seq` with that `hash` was
//! rewritten or truncated. Signed, the checkpoint also proves it came from
//! the broker, so it can be collected over an untrusted channel and shown
//! to a third party; verifying it needs only a JWK set the verifier
//! trusts (kept from the broker's JWKS, since rotated keys leave it).

use crate::jwt::{self, MAX_TOKEN_LEN};
use crate::{JwkSet, SigningKey, TokenError, VerifyingKey};
use serde::{Deserialize, Serialize};

/// `typ` of a signed checkpoint.
pub const TYP_CHECKPOINT: &str = "mandate-audit-checkpoint+jwt";

/// What a checkpoint says: at `iat`, the chain held `seq` with `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub iat: i64,
    pub seq: u64,
    /// The event's chain hash, lowercase hex SHA-256.
    pub hash: String,
}

/// Sign the chain head.
pub fn sign(key: &SigningKey, claims: &CheckpointClaims) -> Result<String, TokenError> {
    jwt::encode(key, TYP_CHECKPOINT, claims)
}

/// Check a checkpoint's `typ`, find its key by `kid` in `keys` (a set the
/// caller trusts), verify the signature and the claims' shape.
pub fn verify(checkpoint: &str, keys: &JwkSet) -> Result<CheckpointClaims, TokenError> {
    let checkpoint = checkpoint.trim();
    if checkpoint.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let parsed = jwt::parse(checkpoint)?;
    parsed.expect_typ(TYP_CHECKPOINT)?;
    let kid = parsed
        .header
        .kid
        .clone()
        .ok_or_else(|| TokenError::BadHeader("no `kid`".into()))?;
    let jwk = keys
        .keys
        .iter()
        .find(|k| k.kid.as_deref() == Some(kid.as_str()))
        .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
    parsed.verify(&VerifyingKey::from_jwk(jwk)?)?;
    let claims: CheckpointClaims = parsed.peek_claims()?;
    let hex64 = claims.hash.len() == 64
        && claims
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if claims.seq == 0 || !hex64 {
        return Err(TokenError::BadClaims(
            "`seq` must be positive and `hash` 64 lowercase hex digits".into(),
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningAlg;

    /// A fresh key and the set that publishes it.
    fn key() -> (SigningKey, JwkSet) {
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let set = JwkSet {
            keys: vec![k.public_jwk().clone()],
        };
        (k, set)
    }

    fn claims() -> CheckpointClaims {
        CheckpointClaims {
            iss: "https://mandate.example".into(),
            iat: 1_700_000_000,
            seq: 42,
            hash: "ab".repeat(32),
        }
    }

    #[test]
    fn a_signed_head_verifies_against_the_published_keys_only() {
        let (key, jwks) = key();
        let cp = sign(&key, &claims()).unwrap();
        assert_eq!(verify(&cp, &jwks).unwrap(), claims());
        assert_eq!(verify(&format!("{cp}\n"), &jwks).unwrap(), claims());

        let (_, other) = super::tests::key();
        assert!(matches!(
            verify(&cp, &other),
            Err(TokenError::UnknownKey(_))
        ));

        // The same kid with another key (a forged set) does not verify.
        let mut forged = other.clone();
        forged.keys[0].kid = jwks.keys[0].kid.clone();
        assert!(matches!(
            verify(&cp, &forged),
            Err(TokenError::BadSignature)
        ));

        // An edited payload breaks the signature.
        let mut parts: Vec<String> = cp.split('.').map(str::to_owned).collect();
        let mut edited = claims();
        edited.seq = 41;
        parts[1] = crate::b64(&serde_json::to_vec(&edited).unwrap());
        assert!(matches!(
            verify(&parts.join("."), &jwks),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn tokens_are_not_checkpoints_and_bad_claims_are_refused() {
        let (key, jwks) = key();
        let token = jwt::encode(&key, jwt::TYP_ACCESS, &claims()).unwrap();
        assert!(matches!(
            verify(&token, &jwks),
            Err(TokenError::WrongType { .. })
        ));
        for bad in [
            CheckpointClaims { seq: 0, ..claims() },
            CheckpointClaims {
                hash: "AB".repeat(32),
                ..claims()
            },
            CheckpointClaims {
                hash: "ab".repeat(31),
                ..claims()
            },
        ] {
            let cp = sign(&key, &bad).unwrap();
            assert!(matches!(verify(&cp, &jwks), Err(TokenError::BadClaims(_))));
        }
        assert!(matches!(verify("x.y", &jwks), Err(TokenError::Malformed)));
    }
}
