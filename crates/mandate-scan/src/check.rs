//! The checks a candidate passes beyond its pattern: checksums where the
//! format has one, and the filters that keep placeholders, references,
//! digests and identifiers out of the generic rules (users' first
//! complaint about secret scanners is noise).

use crate::rule::Check;
use base64::Engine as _;

/// Values a candidate of any rule is never: documentation placeholders.
/// AWS's published example keys contain `EXAMPLE`.
fn is_placeholder(v: &[u8]) -> bool {
    let v = v.to_ascii_lowercase();
    const WORDS: &[&[u8]] = &[
        b"example",
        b"xxxx",
        b"****",
        b"....",
        b"placeholder",
        b"changeme",
        b"change_me",
        b"change-me",
        b"your_",
        b"your-",
        b"yourkey",
        b"dummy",
        b"redacted",
        b"replace_me",
        b"replace-me",
        b"insert_",
        b"0000000000",
    ];
    WORDS.iter().any(|w| memchr::memmem::find(&v, w).is_some())
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

impl Check {
    /// Whether the captured `secret` (with `name`, the assigned-to name for
    /// rules that have one) is worth a finding.
    pub fn passes(self, secret: &[u8], name: Option<&[u8]>) -> bool {
        // The rule's own check first: it is cheaper and rejects more.
        let own = match self {
            Check::None => true,
            Check::GithubCrc32 => github_checksum_ok(secret),
            Check::JwtHeader => jwt_header_ok(secret),
            Check::KeyBody => key_body_ok(secret),
            Check::UrlPassword => url_password_ok(secret, name),
            Check::Entropy => name.is_none_or(name_ok) && value_looks_random(secret),
        };
        own && !is_placeholder(secret)
    }
}

/// Whether what stands between a name and its value reads as an
/// assignment of a literal. In code (`in_code`) a secret is a quoted
/// literal; an unquoted value is an expression or a type
/// (`private_key: Ed25519PrivateKey`). Anywhere, `name:value` with nothing
/// between is a segment of an ARN or URI (`…:secret:db-creds`), not a key.
pub fn assignment_ok(between: &[u8], in_code: bool) -> bool {
    let quoted = between
        .last()
        .is_some_and(|b| matches!(b, b'"' | b'\'' | b'`'));
    between != b":" && (quoted || !in_code)
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base62, left-padded with `0` to 6 digits (GitHub's token tail).
pub fn base62_6(mut n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// `ghp_` + 30 random + 6 base62 digits of the CRC32 of the random part.
fn github_checksum_ok(token: &[u8]) -> bool {
    let Some(body) = token.get(4..) else {
        return false;
    };
    if body.len() != 36 {
        return false;
    }
    let (random, tail) = body.split_at(30);
    base62_6(crc32fast::hash(random)) == tail
}

fn jwt_header_ok(token: &[u8]) -> bool {
    let Some(header) = token.split(|&b| b == b'.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|v| {
        v.get("alg")
            .and_then(|a| a.as_str())
            .is_some_and(|a| a != "none")
    })
}

/// A key body has enough base64 to be a key (escapes and line breaks aside).
fn key_body_ok(body: &[u8]) -> bool {
    body.iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        .count()
        >= 64
}

/// Dev defaults and placeholders are not findings: `postgres:postgres@`,
/// `user:${DB_PASSWORD}@`, `user:<password>@`.
fn url_password_ok(password: &[u8], user: Option<&[u8]>) -> bool {
    const DEFAULTS: &[&[u8]] = &[
        b"password",
        b"pass",
        b"passwd",
        b"secret",
        b"pwd",
        b"root",
        b"admin",
        b"postgres",
        b"mysql",
        b"test",
        b"guest",
        b"user",
        b"redis",
        b"mongo",
    ];
    if password
        .first()
        .is_some_and(|b| matches!(b, b'$' | b'{' | b'<' | b'%' | b'*' | b'['))
    {
        return false;
    }
    if DEFAULTS.iter().any(|d| password.eq_ignore_ascii_case(d)) {
        return false;
    }
    user.is_none_or(|u| u != password)
}

/// Names that take secret-looking words but hold something else.
fn name_ok(name: &[u8]) -> bool {
    const NOT_SECRETS: &[&[u8]] = &[
        b"tokeniz",
        b"url",
        b"uri",
        b"path",
        b"file",
        b"dir",
        b"name",
        b"sha",
        b"hash",
        b"digest",
        b"checksum",
        b"integrity",
        b"public",
        b"pubkey",
        b"cert",
        b"type",
        b"length",
        b"count",
        b"max",
        b"min",
        b"limit",
        b"size",
        b"expir",
        b"ttl",
        b"header",
        b"endpoint",
        b"format",
        b"_id",
        b"-id",
        b"policy",
        b"version",
    ];
    !NOT_SECRETS.iter().any(|w| contains_ignore_case(name, w))
}

/// The generic rules' bar: long, random-looking, and not a reference,
/// an identifier, a URL, a UUID or an encoded image.
fn value_looks_random(v: &[u8]) -> bool {
    if v.len() < 16 {
        return false;
    }
    // Hex shorter than 128 bits is an id or a truncated hash far more often
    // than a key.
    if v.len() < 32 && v.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    if v.first().is_some_and(|b| {
        matches!(
            b,
            b'$' | b'{' | b'%' | b'(' | b'#' | b'=' | b'/' | b'.' | b'~' | b'@'
        )
    }) || [b"${".as_slice(), b"{{", b"}}", b"://", b"(", b"[", b"data:"]
        .iter()
        .any(|p| contains_ignore_case(v, p))
    {
        return false;
    }
    // Random values of this length all but always carry a digit; words,
    // identifiers and constants (`getAccessTokenFromCache`) do not.
    if !v.iter().any(u8::is_ascii_digit) {
        return false;
    }
    // A value in GitHub's shape is judged by GitHub's checksum, in its own rule.
    if is_dotted_identifier(v) || is_uuid(v) || has_github_shape(v) {
        return false;
    }
    shannon_entropy(v) >= 3.2
}

fn has_github_shape(v: &[u8]) -> bool {
    v.len() == 40
        && [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"]
            .iter()
            .any(|p| v.starts_with(*p))
        && v[4..].iter().all(u8::is_ascii_alphanumeric)
}

fn is_dotted_identifier(v: &[u8]) -> bool {
    v.contains(&b'.')
        && v.split(|&b| b == b'.').all(|part| {
            part.first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                && part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        })
}

fn is_uuid(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Bits per byte.
pub fn shannon_entropy(v: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in v {
        counts[b as usize] += 1;
    }
    let n = v.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(prefix: &str, random: &[u8; 30]) -> Vec<u8> {
        let mut t = prefix.as_bytes().to_vec();
        t.extend_from_slice(random);
        t.extend_from_slice(&base62_6(crc32fast::hash(random)));
        t
    }

    #[test]
    fn github_tokens_with_a_wrong_crc32_tail_are_not_findings() {
        let good = github("ghp_", b"R4nd0mPartOfTheTokenAbCdEfGhIj");
        assert!(Check::GithubCrc32.passes(&good, None));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(!Check::GithubCrc32.passes(&bad, None));
    }

    #[test]
    fn base62_pads_to_six_digits() {
        assert_eq!(&base62_6(0), b"000000");
        assert_eq!(&base62_6(61), b"00000z");
        assert_eq!(&base62_6(62), b"000010");
    }

    #[test]
    fn aws_documented_example_keys_are_placeholders() {
        assert!(!Check::None.passes(b"AKIAIOSFODNN7EXAMPLE", None));
        assert!(!Check::None.passes(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None));
    }

    #[test]
    fn references_placeholders_and_digests_are_not_generic_secrets() {
        let e = |v: &str, n: &str| Check::Entropy.passes(v.as_bytes(), Some(n.as_bytes()));
        assert!(e("9fK2mQ7xTz4LpW8vN3bR", "API_TOKEN"));
        for v in [
            "${OPENAI_API_KEY_PRODUCTION}",
            "${{ secrets.DEPLOY_TOKEN }}",
            "xxxxxxxxxxxxxxxxxxxxxxxx",
            "changeme-changeme-1",
            "getAccessTokenFromCache",
            "settings.SECRET_KEY_VALUE1",
            "123e4567-e89b-12d3-a456-426614174000",
            "https://vault.internal/v1/secret9",
            "1111111111111111",
        ] {
            assert!(!e(v, "token"), "{v}");
        }
        assert!(!e("9fK2mQ7xTz4LpW8vN3bR", "token_sha256"));
        assert!(!e("9fK2mQ7xTz4LpW8vN3bR", "tokenizer_path"));
    }

    #[test]
    fn code_needs_a_quoted_literal_and_bare_colons_are_not_assignments() {
        assert!(assignment_ok(b" = \"", true));
        assert!(assignment_ok(b"\\\": \\\"", true)); // notebook JSON: \": \"
        assert!(!assignment_ok(b": ", true)); // a type annotation
        assert!(assignment_ok(b": ", false)); // YAML
        assert!(!assignment_ok(b":", false)); // arn:aws:secretsmanager:…:secret:name
        assert!(!Check::Entropy.passes(b"48205d4ffd7feba3", Some(b"ApiKey")));
        assert!(!Check::Entropy.passes(b"self.access_keys[0", Some(b"access_key")));
    }

    #[test]
    fn jwt_needs_a_json_header_with_an_algorithm() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        assert!(Check::JwtHeader.passes(
            format!("{header}.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl").as_bytes(),
            None
        ));
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(!Check::JwtHeader.passes(
            format!("{none}.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl").as_bytes(),
            None
        ));
        assert!(!Check::JwtHeader.passes(b"eyJnotbase64json.eyJ.x", None));
    }

    #[test]
    fn url_passwords_that_are_references_or_dev_defaults_are_skipped() {
        assert!(Check::UrlPassword.passes(b"Zq8vR2nLw5", Some(b"app")));
        assert!(!Check::UrlPassword.passes(b"${DB_PASSWORD}", Some(b"app")));
        assert!(!Check::UrlPassword.passes(b"postgres", Some(b"postgres")));
        assert!(!Check::UrlPassword.passes(b"hunter2x", Some(b"hunter2x")));
    }
}
