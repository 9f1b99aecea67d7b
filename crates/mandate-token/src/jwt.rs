//! Compact JWS, with RFC 8725 rules built in rather than left to callers.

use crate::{SigningKey, TokenError, VerifyingKey, b64, b64_decode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest token we parse; anything larger is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// `typ` of access tokens (RFC 9068).
pub const TYP_ACCESS: &str = "at+jwt";
/// `typ` of identity-session tokens: distinct so a session can never be
/// presented where an access token is expected, or the reverse.
pub const TYP_SESSION: &str = "mandate-session+jwt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Only DPoP proofs carry their key; nothing else ever verifies with a
    /// key taken from the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<crate::Jwk>,
    /// Critical extensions we do not understand make the token invalid (RFC 7515 §4.1.11).
    #[serde(default, skip_serializing)]
    crit: Option<serde::de::IgnoredAny>,
}

impl Header {
    /// A header naming `alg`, `typ` and either a `kid` or the key itself.
    pub fn new(alg: &str, typ: &str, kid: Option<String>, jwk: Option<crate::Jwk>) -> Header {
        Header {
            alg: alg.into(),
            typ: Some(typ.into()),
            kid,
            jwk,
            crit: None,
        }
    }
}

/// Sign `claims` with `key` as a compact JWS naming the key by `kid`.
pub fn encode<C: Serialize>(key: &SigningKey, typ: &str, claims: &C) -> Result<String, TokenError> {
    let header = Header {
        alg: key.alg.as_str().into(),
        typ: Some(typ.into()),
        kid: Some(key.kid.clone()),
        jwk: None,
        crit: None,
    };
    sign(key, &header, claims)
}

/// Sign `claims` with the public key itself in the header (a DPoP proof).
pub fn encode_with_jwk<C: Serialize>(
    key: &SigningKey,
    typ: &str,
    claims: &C,
) -> Result<String, TokenError> {
    let header = Header {
        alg: key.alg.as_str().into(),
        typ: Some(typ.into()),
        kid: None,
        jwk: Some(key.public_jwk().clone()),
        crit: None,
    };
    sign(key, &header, claims)
}

/// Sign with a header of the caller's choosing (a client naming its
/// algorithm `Ed25519`, say). Its `alg` must name the key's algorithm.
pub fn encode_with_header<C: Serialize>(
    key: &SigningKey,
    header: &Header,
    claims: &C,
) -> Result<String, TokenError> {
    if !key.alg.accepts(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(
            header.alg.chars().take(20).collect(),
        ));
    }
    sign(key, header, claims)
}

fn sign<C: Serialize>(key: &SigningKey, header: &Header, claims: &C) -> Result<String, TokenError> {
    let h = serde_json::to_vec(header).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let c = serde_json::to_vec(claims).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let mut out = String::with_capacity((h.len() + c.len()) * 4 / 3 + 100);
    out.push_str(&b64(&h));
    out.push('.');
    out.push_str(&b64(&c));
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64(&sig));
    Ok(out)
}

/// A parsed but not yet verified token. Nothing in it may be trusted until
/// [`Unverified::verify`] succeeds; [`Unverified::peek_claims`] exists only to
/// route the token to the right key set (e.g. by `iss`).
#[derive(Debug)]
pub struct Unverified<'a> {
    pub header: Header,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

pub fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_bytes = b64_decode(h).ok_or(TokenError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| TokenError::BadHeader(e.to_string()))?;
    if header.crit.is_some() {
        return Err(TokenError::BadHeader(
            "critical extensions are not supported".into(),
        ));
    }
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgorithmNotAllowed("none".into()));
    }
    Ok(Unverified {
        header,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: b64_decode(p).ok_or(TokenError::Malformed)?,
        signature: b64_decode(s).ok_or(TokenError::Malformed)?,
    })
}

impl Unverified<'_> {
    /// Require a `typ` (RFC 8725 §3.11), accepting the `application/` form.
    pub fn expect_typ(&self, expected: &str) -> Result<(), TokenError> {
        let typ = self.header.typ.as_deref().unwrap_or("");
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if typ.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(TokenError::WrongType {
                expected: expected.into(),
            })
        }
    }

    /// Check the signature with `key`. The header's `alg` must name the
    /// key's own algorithm (for Ed25519, `EdDSA` or RFC 9864's `Ed25519`): a
    /// header cannot talk a key into another algorithm.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), TokenError> {
        if !key.alg.accepts(&self.header.alg) {
            return Err(TokenError::AlgorithmNotAllowed(
                self.header.alg.chars().take(20).collect(),
            ));
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)
    }

    /// Claims of a token whose signature has NOT been checked.
    pub fn peek_claims<T: DeserializeOwned>(&self) -> Result<T, TokenError> {
        serde_json::from_slice(&self.payload).map_err(|e| TokenError::BadClaims(e.to_string()))
    }

    /// Verify, then decode the claims.
    pub fn into_claims<T: DeserializeOwned>(self, key: &VerifyingKey) -> Result<T, TokenError> {
        self.verify(key)?;
        self.peek_claims()
    }
}

/// `exp`, `nbf` and `iat` against `now`, allowing `leeway` seconds of clock skew.
pub fn check_times(exp: i64, nbf: Option<i64>, now: i64, leeway: i64) -> Result<(), TokenError> {
    // Saturating: a token may carry any i64; none may overflow the check.
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningAlg;
    use serde_json::json;

    fn forge(header: serde_json::Value, claims: serde_json::Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes()),
            b64(sig)
        )
    }

    /// RFC 9864: `Ed25519` names the same algorithm as `EdDSA` with an
    /// Ed25519 key; neither name lets another key type verify.
    #[test]
    fn rfc_9864_ed25519_name_verifies_like_eddsa_and_only_for_ed25519_keys() {
        let (ed, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let (ec, _) = SigningKey::generate(SigningAlg::Es256).unwrap();
        let header =
            |k: &SigningKey, alg: &str| Header::new(alg, TYP_ACCESS, Some(k.kid.clone()), None);
        for alg in ["EdDSA", "Ed25519"] {
            let t = encode_with_header(&ed, &header(&ed, alg), &json!({"sub": "x"})).unwrap();
            let p = parse(&t).unwrap();
            assert_eq!(p.header.alg, alg);
            p.verify(ed.verifier()).unwrap();
            // The same name on another key type is refused.
            assert!(matches!(
                p.verify(ec.verifier()),
                Err(TokenError::AlgorithmNotAllowed(_))
            ));
        }
        for wrong in ["ed25519", "Ed448", "ES256"] {
            assert!(
                encode_with_header(&ed, &header(&ed, wrong), &json!({})).is_err(),
                "{wrong}"
            );
        }
        // An ES256 key cannot be named Ed25519 either.
        assert!(encode_with_header(&ec, &header(&ec, "Ed25519"), &json!({})).is_err());
        // Mandate itself still signs as `EdDSA`.
        let own = encode(&ed, TYP_ACCESS, &json!({})).unwrap();
        assert_eq!(parse(&own).unwrap().header.alg, "EdDSA");
    }

    #[test]
    fn round_trip() {
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let t = encode(&k, TYP_ACCESS, &json!({"sub": "x"})).unwrap();
        let u = parse(&t).unwrap();
        u.expect_typ(TYP_ACCESS).unwrap();
        let c: serde_json::Value = u.into_claims(k.verifier()).unwrap();
        assert_eq!(c["sub"], "x");
    }

    #[test]
    fn alg_none_is_rejected() {
        let t = forge(
            json!({"alg": "none", "typ": "at+jwt"}),
            json!({"sub": "x"}),
            b"",
        );
        assert_eq!(
            parse(&t).unwrap_err(),
            TokenError::AlgorithmNotAllowed("none".into())
        );
        let t = forge(json!({"alg": "NoNe"}), json!({}), b"");
        assert!(parse(&t).is_err());
    }

    #[test]
    fn hs256_with_public_key_as_secret_is_rejected() {
        // The classic confusion: HMAC the token with the verifier's public key bytes.
        let (k, _) = SigningKey::generate(SigningAlg::Rs256).unwrap();
        let public = serde_json::to_vec(k.public_jwk()).unwrap();
        let unsigned = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "at+jwt", "kid": k.kid})
                .to_string()
                .as_bytes()),
            b64(json!({"sub": "x"}).to_string().as_bytes())
        );
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
            unsigned.as_bytes(),
        );
        let t = format!("{unsigned}.{}", b64(mac.as_ref()));
        let err = parse(&t).unwrap().verify(k.verifier()).unwrap_err();
        assert_eq!(err, TokenError::AlgorithmNotAllowed("HS256".into()));
    }

    #[test]
    fn signature_from_other_key_is_rejected() {
        let (a, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let (b, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let t = encode(&a, TYP_ACCESS, &json!({})).unwrap();
        assert_eq!(
            parse(&t).unwrap().verify(b.verifier()).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn wrong_typ_is_rejected() {
        let (k, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let t = encode(&k, TYP_SESSION, &json!({})).unwrap();
        assert!(parse(&t).unwrap().expect_typ(TYP_ACCESS).is_err());
        let t = encode(&k, "application/at+jwt", &json!({})).unwrap();
        assert!(parse(&t).unwrap().expect_typ(TYP_ACCESS).is_ok());
    }

    #[test]
    fn crit_header_is_rejected() {
        let t = forge(json!({"alg": "EdDSA", "crit": ["exp"]}), json!({}), b"x");
        assert!(matches!(parse(&t).unwrap_err(), TokenError::BadHeader(_)));
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "eyJ.eyJ.",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(parse(t).is_err());
        }
    }

    /// A well-formed (unsigned) token exactly `len` bytes long.
    fn token_of_len(len: usize) -> String {
        for sig_len in 64..68 {
            for pad in (len * 3 / 4).saturating_sub(1000)..len {
                let t = forge(
                    json!({"alg": "EdDSA", "typ": "at+jwt"}),
                    json!({"pad": "p".repeat(pad)}),
                    &vec![7; sig_len],
                );
                match t.len().cmp(&len) {
                    std::cmp::Ordering::Equal => return t,
                    std::cmp::Ordering::Greater => break,
                    std::cmp::Ordering::Less => {}
                }
            }
        }
        panic!("no token of length {len}")
    }

    #[test]
    fn tokens_up_to_16_kib_parse_and_longer_ones_are_refused() {
        const LIMIT: usize = 16 * 1024;
        let at_limit = token_of_len(LIMIT);
        assert!(parse(&at_limit).is_ok());
        let over = token_of_len(LIMIT + 1);
        assert_eq!(parse(&over).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn a_token_is_valid_from_its_nbf_on() {
        assert!(check_times(100, Some(50), 50, 0).is_ok());
        assert_eq!(
            check_times(100, Some(50), 49, 0),
            Err(TokenError::NotYetValid)
        );
        // Leeway reaches exactly `leeway` seconds before nbf.
        assert!(check_times(100, Some(50), 45, 5).is_ok());
    }

    #[test]
    fn times_with_leeway() {
        assert!(check_times(100, None, 99, 0).is_ok());
        assert_eq!(check_times(100, None, 100, 0), Err(TokenError::Expired));
        assert!(check_times(100, None, 100, 5).is_ok());
        assert_eq!(
            check_times(100, Some(50), 40, 5),
            Err(TokenError::NotYetValid)
        );
        // Extreme claims are judged, never overflowed.
        assert!(check_times(i64::MAX, None, 100, 60).is_ok());
        assert_eq!(
            check_times(i64::MIN, None, 100, 60),
            Err(TokenError::Expired)
        );
        assert!(check_times(200, Some(i64::MIN), i64::MAX - 1, 60).is_err());
    }
}
