//! Keeping an upstream secret from flowing back to the agent. Every form
//! the proxy put on the wire (the raw value, `base64(user:secret)` for
//! basic auth, the percent-encoded value for query injection, and the
//! value as it reads inside a JSON string) is replaced by `[REDACTED]` in
//! response headers and, streaming, in the body. A match split across
//! chunks is caught by holding back the last `longest form - 1` bytes.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;
use mandate_core::Injection;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

pub const REPLACEMENT: &[u8] = b"[REDACTED]";

/// The byte strings that betray a secret, as one automaton.
pub struct Patterns {
    ac: AhoCorasick,
    longest: usize,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Patterns([redacted])")
    }
}

/// Every form in which `secret` leaves the proxy under `inject`.
pub fn forms(secret: &str, inject: &Injection) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = vec![Zeroizing::new(secret.as_bytes().to_vec())];
    match inject {
        Injection::Basic { username } => {
            use base64::Engine;
            let pair = Zeroizing::new(format!("{username}:{secret}"));
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            out.push(Zeroizing::new(b64.into_bytes()));
        }
        Injection::Query { .. } => {
            let enc: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            out.push(Zeroizing::new(enc.into_bytes()));
        }
        Injection::Bearer | Injection::Header { .. } => {}
    }
    // An upstream that echoes JSON escapes `"`, `\` and maybe `/`.
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"');
    out.push(Zeroizing::new(json.as_bytes().to_vec()));
    out.push(Zeroizing::new(json.replace('/', "\\/").into_bytes()));
    out.retain(|f| !f.is_empty());
    out.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
    out.dedup_by(|a, b| a.as_slice() == b.as_slice());
    out
}

impl Patterns {
    /// `None` when there is nothing to look for.
    pub fn new(forms: &[Zeroizing<Vec<u8>>]) -> Option<Self> {
        let forms: Vec<&[u8]> = forms
            .iter()
            .map(|f| f.as_slice())
            .filter(|f| !f.is_empty())
            .collect();
        let longest = forms.iter().map(|f| f.len()).max()?;
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .ok()?;
        Some(Patterns { ac, longest })
    }

    /// Every occurrence replaced, for a value seen whole (a header).
    /// `None` when there is none.
    pub fn redact_whole(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut last = 0;
        for m in self.ac.find_iter(bytes) {
            out.extend_from_slice(&bytes[last..m.start()]);
            out.extend_from_slice(REPLACEMENT);
            last = m.end();
        }
        if last == 0 && out.is_empty() {
            return None;
        }
        out.extend_from_slice(&bytes[last..]);
        Some(out)
    }
}

/// A streaming redactor for one response body.
pub struct Redactor {
    patterns: Arc<Patterns>,
    /// Bytes held back because a form may continue in the next chunk.
    tail: Zeroizing<Vec<u8>>,
}

impl Redactor {
    pub fn new(patterns: Arc<Patterns>) -> Self {
        Redactor {
            patterns,
            tail: Zeroizing::new(Vec::new()),
        }
    }

    pub fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// Take the next chunk; returns what is safe to send now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.tail.extend_from_slice(chunk);
        // A match that starts before `safe` lies wholly in the buffer; one
        // that starts at or after it may not have arrived in full yet.
        let safe = self
            .tail
            .len()
            .saturating_sub(self.patterns.longest.saturating_sub(1));
        self.drain(safe)
    }

    /// The stream ended: everything left, redacted.
    pub fn finish(&mut self) -> Bytes {
        let len = self.tail.len();
        self.drain(len)
    }

    /// Emit `tail[..safe]` (extended past `safe` to the end of any match
    /// that starts before it), keep the rest.
    fn drain(&mut self, safe: usize) -> Bytes {
        let buf = &self.tail;
        let mut out = Vec::with_capacity(safe + REPLACEMENT.len());
        let mut pos = 0;
        for m in self.patterns.ac.find_iter(buf.as_slice()) {
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(REPLACEMENT);
            pos = m.end();
        }
        let cut = pos.max(safe);
        out.extend_from_slice(&buf[pos..cut]);
        let rest = Zeroizing::new(buf[cut..].to_vec());
        self.tail = rest;
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";

    fn patterns(inject: &Injection) -> Arc<Patterns> {
        Arc::new(Patterns::new(&forms(SECRET, inject)).unwrap())
    }

    fn run(p: &Arc<Patterns>, body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut r = Redactor::new(p.clone());
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts {
            out.extend_from_slice(&r.push(&body[prev..c]));
            prev = c;
        }
        out.extend_from_slice(&r.push(&body[prev..]));
        out.extend_from_slice(&r.finish());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn raw_value_is_replaced_whole_or_split() {
        let p = patterns(&Injection::Bearer);
        let body = format!("{{\"echo\":\"Bearer {SECRET}\",\"n\":1}}");
        let expect = "{\"echo\":\"Bearer [REDACTED]\",\"n\":1}";
        for cut in 0..body.len() {
            assert_eq!(
                run(&p, body.as_bytes(), &[cut]),
                expect.as_bytes(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn basic_form_is_caught() {
        use base64::Engine;
        let inject = Injection::Basic {
            username: "ci".into(),
        };
        let p = patterns(&inject);
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("ci:{SECRET}"));
        let body = format!("you sent: Basic {b64} ok");
        let out = run(&p, body.as_bytes(), &[17, 30]);
        assert_eq!(out, b"you sent: Basic [REDACTED] ok");
    }

    #[test]
    fn query_form_is_caught_percent_encoded() {
        let secret = "a b/c+d&e=f";
        let inject = Injection::Query {
            param: "key".into(),
        };
        let p = Arc::new(Patterns::new(&forms(secret, &inject)).unwrap());
        let body = "GET /x?key=a+b%2Fc%2Bd%26e%3Df and raw a b/c+d&e=f";
        let out = run(&p, body.as_bytes(), &[12]);
        assert_eq!(out, b"GET /x?key=[REDACTED] and raw [REDACTED]");
    }

    #[test]
    fn json_escaped_form_is_caught() {
        let secret = r#"pa"ss/w\rd"#;
        let p = Arc::new(Patterns::new(&forms(secret, &Injection::Bearer)).unwrap());
        for body in [r#"{"v":"pa\"ss/w\\rd"}"#, r#"{"v":"pa\"ss\/w\\rd"}"#] {
            assert_eq!(run(&p, body.as_bytes(), &[5]), br#"{"v":"[REDACTED]"}"#);
        }
    }

    #[test]
    fn headers_are_redacted_whole() {
        let p = patterns(&Injection::Bearer);
        assert_eq!(
            p.redact_whole(format!("x{SECRET}y{SECRET}").as_bytes()),
            Some(b"x[REDACTED]y[REDACTED]".to_vec())
        );
        assert_eq!(p.redact_whole(b"nothing here"), None);
    }

    #[test]
    fn clean_bodies_pass_unchanged_and_nothing_is_held_at_the_end() {
        let p = patterns(&Injection::Bearer);
        let body = b"sk_live_ almost but not quite sk_live_4eC3";
        assert_eq!(run(&p, body, &[3, 9, 20]), body);
    }

    proptest! {
        /// Wherever the chunk boundaries fall, no form survives and the
        /// rest of the body is untouched.
        #[test]
        fn no_split_point_lets_a_secret_through(
            prefix in "[a-z ]{0,40}",
            middle in "[a-z ]{0,40}",
            suffix in "[a-z ]{0,40}",
            raw_cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            use base64::Engine;
            let inject = Injection::Basic { username: "u".into() };
            let p = Arc::new(Patterns::new(&forms(SECRET, &inject)).unwrap());
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
            let body = format!("{prefix}{SECRET}{middle}{b64}{suffix}{SECRET}");
            let mut cuts: Vec<usize> = raw_cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort();
            let out = run(&p, body.as_bytes(), &cuts);
            prop_assert!(!contains(&out, SECRET.as_bytes()));
            prop_assert!(!contains(&out, b64.as_bytes()));
            let expect = format!("{prefix}[REDACTED]{middle}[REDACTED]{suffix}[REDACTED]");
            prop_assert_eq!(out, expect.into_bytes());
        }
    }
}
