//! PKCS#8 private keys as PEM (RFC 7468 `PRIVATE KEY`): the form OpenSSL,
//! Node's crypto, Python's `cryptography` and JOSE libraries all load.

use crate::TokenError;
use base64::Engine;
use zeroize::Zeroizing;

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

/// `der` (a PKCS#8 document) as PEM, 64 characters a line.
pub fn pkcs8_to_pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str(BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The PKCS#8 document in a `PRIVATE KEY` PEM block. Text outside the
/// block is ignored (RFC 7468 §2); anything else is an error naming what.
pub fn pkcs8_from_pem(pem: &str) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let bad = |m: &str| TokenError::BadKey(format!("PEM: {m}"));
    let start = pem.find(BEGIN).ok_or_else(|| {
        bad("no `-----BEGIN PRIVATE KEY-----` line (only unencrypted PKCS#8 is read)")
    })?;
    let body = &pem[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or_else(|| bad("no `-----END PRIVATE KEY-----` line"))?;
    let b64: Zeroizing<String> = Zeroizing::new(
        body[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| bad("the key is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_names_what_is_wrong() {
        let der: Vec<u8> = (0u8..=200).collect();
        let pem = pkcs8_to_pem(&der);
        assert!(pem.starts_with(BEGIN) && pem.trim_end().ends_with(END));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(*pkcs8_from_pem(&pem).unwrap(), der);
        let with_text = format!("a comment\n{}trailing\n", *pem);
        assert_eq!(*pkcs8_from_pem(&with_text).unwrap(), der);
        for (bad, says) in [
            ("", "BEGIN"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----",
                "BEGIN",
            ),
            ("-----BEGIN PRIVATE KEY-----\nAA==\n", "END"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
                "base64",
            ),
        ] {
            let e = pkcs8_from_pem(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
