//! A finding as reported: where, which rule, whose credential, a redacted
//! preview and a fingerprint. Never the value.

use crate::engine::Match;
use crate::rule::Rule;
use mandate_core::SecretClass;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::PathBuf;

/// One credential found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The file as the user named it (the scanned root joined with the
    /// file's path under it).
    pub file: String,
    /// 1-based line of the secret's first byte (a PEM block's: the first
    /// line of its body, not the `BEGIN` line).
    pub line: u64,
    /// 1-based column of that byte, in Unicode code points.
    pub column: u64,
    pub rule: String,
    pub class: SecretClass,
    /// A person's own credential (then `class` is `human-exception`).
    pub human: bool,
    /// The first few characters, `…`, and the length: `ghp_…(40 chars)`.
    pub preview: String,
    /// Hash of rule, path under the scanned root and the secret's SHA-256:
    /// stable when lines move, changes when the secret does.
    pub fingerprint: String,
    /// Where the secret's bytes are in the file (for `--import`, which
    /// re-reads them; not in reports).
    #[serde(skip)]
    pub span: Range<usize>,
    /// The file's path on disk.
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's path under its scanned root (what the fingerprint hashes).
    #[serde(skip)]
    pub relative: String,
}

impl Finding {
    /// Build the finding for `m` in the file `bytes`, found as `display`
    /// (`relative` under its scanned root).
    pub fn new(
        rule: &Rule,
        m: &Match,
        bytes: &[u8],
        path: PathBuf,
        display: String,
        relative: String,
    ) -> Finding {
        let secret = &bytes[m.secret.clone()];
        let (line, column) = position(bytes, m.secret.start);
        Finding {
            file: display,
            line,
            column,
            rule: rule.id.to_owned(),
            class: rule.class(),
            human: rule.human,
            preview: preview(secret),
            fingerprint: fingerprint(rule.id, &relative, secret),
            span: m.secret.clone(),
            path,
            relative,
        }
    }

    /// The secret's bytes in a fresh read of the file, if they are still
    /// the ones this finding was made from.
    pub fn secret_in<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        let secret = bytes.get(self.span.clone())?;
        (fingerprint(&self.rule, &self.relative, secret) == self.fingerprint).then_some(secret)
    }
}

/// 1-based line and column (code points) of byte `at`.
fn position(bytes: &[u8], at: usize) -> (u64, u64) {
    let before = &bytes[..at];
    let line = memchr::memchr_iter(b'\n', before).count() as u64 + 1;
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    // Count code points: every byte that is not a UTF-8 continuation byte.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count() as u64
        + 1;
    (line, column)
}

/// At most 4 leading characters and never more than a quarter of the
/// value (a short password keeps most of itself hidden).
pub fn preview(secret: &[u8]) -> String {
    let shown = (secret.len() / 4).min(4);
    let head: String = secret[..shown]
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    format!("{head}…({} chars)", secret.len())
}

/// `sha256(rule \0 relative path \0 hex(sha256(secret)))`, first 32 hex
/// digits. No line number: a baseline survives edits above the secret.
pub fn fingerprint(rule: &str, relative: &str, secret: &[u8]) -> String {
    let secret_hash = hex::encode(Sha256::digest(secret));
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(relative.as_bytes());
    h.update([0]);
    h.update(secret_hash.as_bytes());
    hex::encode(h.finalize())[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_code_points() {
        let text = "a\nhé x".as_bytes();
        let at = text.iter().position(|&b| b == b'x').unwrap();
        assert_eq!(position(text, at), (2, 4));
        assert_eq!(position(text, 0), (1, 1));
    }

    #[test]
    fn preview_shows_at_most_a_quarter_and_the_length() {
        assert_eq!(
            preview(b"ghp_0123456789abcdefghij0123456789abcdef"),
            "ghp_…(40 chars)"
        );
        assert_eq!(preview(b"hunter22"), "hu…(8 chars)");
    }

    #[test]
    fn fingerprint_keys_on_rule_path_and_secret_not_line() {
        let a = fingerprint("jwt", "app/.env", b"s1");
        assert_eq!(a, fingerprint("jwt", "app/.env", b"s1"));
        assert_ne!(a, fingerprint("jwt", "app/.env", b"s2"));
        assert_ne!(a, fingerprint("jwt", "other/.env", b"s1"));
        assert_ne!(a, fingerprint("generic-secret", "app/.env", b"s1"));
        assert_eq!(a.len(), 32);
    }
}
