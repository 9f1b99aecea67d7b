use crate::{SigningAlg, TokenError, b64, b64_decode};
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A public JWK (RFC 7517). Private members (`d`, `p`, …) are refused at
/// parse time so a private key pasted by mistake is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing, default)]
    d: Option<serde::de::IgnoredAny>,
}

impl Jwk {
    pub fn new(kty: &str) -> Self {
        Jwk {
            kty: kty.into(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            kid: None,
            alg: None,
            use_: None,
            d: None,
        }
    }

    /// The one algorithm this key may verify. Taken from the key type (and
    /// `alg` when present, which must agree): the token header never chooses.
    pub fn algorithm(&self) -> Result<SigningAlg, TokenError> {
        let by_type = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => SigningAlg::EdDsa,
            ("EC", Some("P-256")) => SigningAlg::Es256,
            ("RSA", None) => SigningAlg::Rs256,
            (kty, crv) => {
                return Err(TokenError::BadKey(format!(
                    "unsupported key type {kty}{}",
                    crv.map(|c| format!("/{c}")).unwrap_or_default()
                )));
            }
        };
        match self.alg.as_deref() {
            None => Ok(by_type),
            Some(a) if by_type.accepts(a) => Ok(by_type),
            Some(a) => Err(TokenError::BadKey(format!(
                "alg `{a}` does not fit a {} key",
                self.kty
            ))),
        }
    }

    /// RFC 7638 thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> Result<String, TokenError> {
        let missing = |m: &str| TokenError::BadKey(format!("missing `{m}`"));
        let canonical = match self.kty.as_str() {
            "OKP" => format!(
                r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
                self.crv.as_deref().ok_or_else(|| missing("crv"))?,
                self.x.as_deref().ok_or_else(|| missing("x"))?
            ),
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                self.crv.as_deref().ok_or_else(|| missing("crv"))?,
                self.x.as_deref().ok_or_else(|| missing("x"))?,
                self.y.as_deref().ok_or_else(|| missing("y"))?
            ),
            "RSA" => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                self.e.as_deref().ok_or_else(|| missing("e"))?,
                self.n.as_deref().ok_or_else(|| missing("n"))?
            ),
            other => return Err(TokenError::BadKey(format!("unsupported kty `{other}`"))),
        };
        Ok(b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        )
        .as_ref()))
    }

    pub fn has_private_part(&self) -> bool {
        self.d.is_some()
    }
}

/// A JWK Set (`{"keys": [...]}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// A parsed public key with the single algorithm it verifies.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: SigningAlg,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

fn member(jwk: &Jwk, name: &str, v: &Option<String>) -> Result<Vec<u8>, TokenError> {
    let s = v
        .as_deref()
        .ok_or_else(|| TokenError::BadKey(format!("{} key is missing `{name}`", jwk.kty)))?;
    b64_decode(s).ok_or_else(|| TokenError::BadKey(format!("`{name}` is not base64url")))
}

impl VerifyingKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, TokenError> {
        if jwk.has_private_part() {
            return Err(TokenError::BadKey(
                "a public key must not contain `d`".into(),
            ));
        }
        if let Some(u) = jwk.use_.as_deref()
            && u != "sig"
        {
            return Err(TokenError::BadKey(format!("key use `{u}` is not `sig`")));
        }
        let alg = jwk.algorithm()?;
        let rejected = |e: aws_lc_rs::error::KeyRejected| TokenError::BadKey(e.to_string());
        let key = match alg {
            SigningAlg::EdDsa => {
                let x = member(jwk, "x", &jwk.x)?;
                ParsedPublicKey::new(&signature::ED25519, x).map_err(rejected)?
            }
            SigningAlg::Es256 => {
                let (x, y) = (member(jwk, "x", &jwk.x)?, member(jwk, "y", &jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(TokenError::BadKey(
                        "P-256 coordinates must be 32 bytes".into(),
                    ));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .map_err(rejected)?
            }
            SigningAlg::Rs256 => {
                let (n, e) = (member(jwk, "n", &jwk.n)?, member(jwk, "e", &jwk.e)?);
                if n.len() < 256 {
                    return Err(TokenError::BadKey(
                        "RSA keys must be at least 2048 bits".into(),
                    ));
                }
                RsaPublicKeyComponents { n: &n, e: &e }
                    .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                    .map_err(rejected)?
            }
        };
        Ok(VerifyingKey {
            kid: jwk.kid.clone(),
            alg,
            key,
        })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), TokenError> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| TokenError::BadSignature)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_ed25519_jwk_may_say_alg_ed25519_or_eddsa() {
        for alg in ["EdDSA", "Ed25519"] {
            let k: Jwk = serde_json::from_value(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "alg": alg
            }))
            .unwrap();
            assert_eq!(k.algorithm().unwrap(), SigningAlg::EdDsa, "{alg}");
        }
        let ec: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "Ed25519",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }))
        .unwrap();
        assert!(ec.algorithm().is_err());
    }

    use super::*;

    #[test]
    fn private_jwk_is_refused() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "secret"
        }))
        .unwrap();
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
    }

    #[test]
    fn alg_must_agree_with_key_type() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "HS256"
        }))
        .unwrap();
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // The RSA example key of RFC 7638 §3.1.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "e": "AQAB",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
