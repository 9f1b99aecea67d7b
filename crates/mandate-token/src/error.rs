/// Why a token was refused. Messages are safe to return to a client: they
/// never include the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("token header is invalid: {0}")]
    BadHeader(String),
    #[error("algorithm `{0}` is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("token type must be `{expected}`")]
    WrongType { expected: String },
    #[error("no key with kid `{0}`")]
    UnknownKey(String),
    #[error("key `{0}` is the current signing key; rotate first")]
    KeyInUse(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("claims are invalid: {0}")]
    BadClaims(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("audience does not match")]
    WrongAudience,
    #[error("issuer does not match")]
    WrongIssuer,
    #[error("key is invalid: {0}")]
    BadKey(String),
    #[error("DPoP proof is invalid: {0}")]
    BadProof(String),
    /// A DPoP proof (or another single-use JWT) presented a second time.
    #[error("DPoP proof is invalid: proof has been used before")]
    ProofReplayed,
    #[error("key storage: {0}")]
    Storage(String),
}
