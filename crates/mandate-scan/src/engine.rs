//! The matcher: one Aho-Corasick pass over a file for every rule's
//! keywords, then each rule's regex only in a window around its keywords'
//! hits. Works on raw bytes, so a file that is not UTF-8 scans like any other.

use crate::check;
use crate::rule::{Check, Reach, Rule};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;
use std::ops::Range;

/// How far a window reaches from a keyword: the match must start within
/// `BACK` bytes before it (a name prefix: `OPENAI_` before `api_key`) and
/// end within the keyword's line, capped at `FORWARD` bytes on minified
/// one-line files (a service-account key is one ~2 KB JSON line).
const BACK: usize = 512;
const FORWARD: usize = 8 * 1024;
/// A multi-line match (a PEM block) may run this far past its keyword.
const FORWARD_LINES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rule {id}: pattern does not compile: {source}")]
    Pattern {
        id: &'static str,
        source: regex::Error,
    },
    #[error("rule {id}: pattern has no `secret` group")]
    NoSecretGroup { id: &'static str },
    #[error("keyword automaton: {0}")]
    Keywords(#[from] aho_corasick::BuildError),
}

struct Compiled {
    rule: Rule,
    regex: Regex,
    secret: usize,
    name: Option<usize>,
}

/// Every rule, compiled once and shared by the scanning threads.
pub struct Engine {
    rules: Vec<Compiled>,
    keywords: AhoCorasick,
    /// For each keyword pattern, the rules it wakes.
    wakes: Vec<Vec<usize>>,
}

/// What kind of file is being scanned: in code, the generic rules want a
/// quoted literal (an unquoted value is an expression or a type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Code,
    /// Config, `.env`, shell, prose: values may stand unquoted.
    Other,
}

impl Syntax {
    /// By file extension.
    pub fn of(path: &std::path::Path) -> Syntax {
        const CODE: &[&str] = &[
            "py", "ipynb", "js", "jsx", "mjs", "cjs", "ts", "tsx", "rs", "go", "java", "kt", "kts",
            "rb", "php", "cs", "swift", "scala", "c", "h", "cc", "cpp", "hpp", "m", "lua", "r",
            "pl", "dart", "groovy",
        ];
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if CODE.iter().any(|c| c.eq_ignore_ascii_case(e)) => Syntax::Code,
            _ => Syntax::Other,
        }
    }
}

/// One accepted match: the rule (index into [`Engine::rules`]) and the
/// secret's bytes in the scanned buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: usize,
    pub secret: Range<usize>,
}

impl Engine {
    pub fn new(rules: Vec<Rule>) -> Result<Self, EngineError> {
        let mut keywords: Vec<String> = Vec::new();
        let mut wakes: Vec<Vec<usize>> = Vec::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            for kw in rule.keywords {
                let kw = kw.to_ascii_lowercase();
                match keywords.iter().position(|k| *k == kw) {
                    Some(at) => wakes[at].push(i),
                    None => {
                        keywords.push(kw);
                        wakes.push(vec![i]);
                    }
                }
            }
            let regex = Regex::new(&format!("(?-u){}", rule.pattern)).map_err(|source| {
                EngineError::Pattern {
                    id: rule.id,
                    source,
                }
            })?;
            let index_of = |group: &str| regex.capture_names().position(|n| n == Some(group));
            let secret = index_of("secret").ok_or(EngineError::NoSecretGroup { id: rule.id })?;
            let name = index_of("name").or_else(|| index_of("user"));
            compiled.push(Compiled {
                rule,
                regex,
                secret,
                name,
            });
        }
        // Leftmost-longest without overlaps is several times faster than an
        // overlapping search; a keyword that hides inside or overlaps
        // another's hit is woken by that hit instead.
        let wakes = (0..keywords.len())
            .map(|k| {
                let mut rules: Vec<usize> = (0..keywords.len())
                    .filter(|&l| k == l || overlaps(&keywords[k], &keywords[l]))
                    .flat_map(|l| wakes[l].iter().copied())
                    .collect();
                rules.sort_unstable();
                rules.dedup();
                rules
            })
            .collect();
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)?;
        Ok(Engine {
            rules: compiled,
            keywords,
            wakes,
        })
    }

    /// The shipped catalog.
    pub fn with_default_rules() -> Result<Self, EngineError> {
        Engine::new(crate::catalog::rules())
    }

    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    pub fn rule(&self, index: usize) -> &Rule {
        &self.rules[index].rule
    }

    /// The accepted matches in `hay`, one per secret: where two rules
    /// report overlapping bytes the more specific (lower rank) wins.
    pub fn find(&self, hay: &[u8], syntax: Syntax) -> Vec<Match> {
        let mut candidates: Vec<(u8, Match)> = Vec::new();
        // Per rule, the end of the last window searched: a keyword hit
        // inside it was already covered.
        let mut searched = vec![0usize; self.rules.len()];
        for hit in self.keywords.find_iter(hay) {
            for &r in &self.wakes[hit.pattern().as_usize()] {
                if hit.start() < searched[r] {
                    continue;
                }
                let c = &self.rules[r];
                let window = window(hay, hit.start(), hit.end(), c.rule.reach);
                searched[r] = window.end;
                self.search(r, hay, window, syntax, &mut candidates);
            }
        }
        resolve_overlaps(candidates)
    }

    fn search(
        &self,
        r: usize,
        hay: &[u8],
        window: Range<usize>,
        syntax: Syntax,
        out: &mut Vec<(u8, Match)>,
    ) {
        let c = &self.rules[r];
        let bounded = &hay[..window.end];
        let mut at = window.start;
        while at < window.end {
            let Some(caps) = c.regex.captures_at(bounded, at) else {
                break;
            };
            let whole = caps.get(0).map_or(at..at, |m| m.range());
            at = if whole.end > at { whole.end } else { at + 1 };
            let Some(secret) = caps.get(c.secret) else {
                continue;
            };
            let name = c.name.and_then(|i| caps.get(i));
            if c.rule.check == Check::Entropy
                && let Some(n) = name
                && !check::assignment_ok(&hay[n.end()..secret.start()], syntax == Syntax::Code)
            {
                continue;
            }
            if c.rule
                .check
                .passes(secret.as_bytes(), name.map(|m| m.as_bytes()))
            {
                out.push((
                    c.rule.rank,
                    Match {
                        rule: r,
                        secret: secret.range(),
                    },
                ));
            }
        }
    }
}

/// Whether a hit of `k` can hide one of `l`: `l` inside `k`, or a suffix
/// of `k` that starts `l`.
fn overlaps(k: &str, l: &str) -> bool {
    k.contains(l) || (1..k.len()).any(|i| l.starts_with(&k[i..]))
}

fn window(hay: &[u8], start: usize, end: usize, reach: Reach) -> Range<usize> {
    let line_start = memchr::memrchr(b'\n', &hay[..start]).map_or(0, |i| i + 1);
    let from = line_start.max(start.saturating_sub(BACK));
    let to = match reach {
        Reach::Line => {
            let cap = (end + FORWARD).min(hay.len());
            memchr::memchr(b'\n', &hay[end..cap]).map_or(cap, |i| end + i)
        }
        Reach::Lines => (end + FORWARD_LINES).min(hay.len()),
    };
    from..to
}

/// Keep one match per secret: sorted by position, within each run of
/// overlapping candidates the lowest rank wins, then the earliest.
fn resolve_overlaps(mut candidates: Vec<(u8, Match)>) -> Vec<Match> {
    candidates.sort_by_key(|(rank, m)| (m.secret.start, *rank));
    candidates.dedup_by(|a, b| a.1 == b.1);
    let mut kept: Vec<Match> = Vec::new();
    let mut group: Vec<(u8, Match)> = Vec::new();
    let mut group_end = 0;
    for cand in candidates {
        if !group.is_empty() && cand.1.secret.start >= group_end {
            keep_best(&mut group, &mut kept);
            group_end = 0;
        }
        group_end = group_end.max(cand.1.secret.end);
        group.push(cand);
    }
    keep_best(&mut group, &mut kept);
    kept.sort_by_key(|m| m.secret.start);
    kept
}

fn keep_best(group: &mut Vec<(u8, Match)>, kept: &mut Vec<Match>) {
    group.sort_by_key(|(rank, m)| (*rank, m.secret.start));
    let mut chosen: Vec<Range<usize>> = Vec::new();
    for (_, m) in group.drain(..) {
        if chosen
            .iter()
            .all(|c| m.secret.end <= c.start || m.secret.start >= c.end)
        {
            chosen.push(m.secret.clone());
            kept.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_inside_another_still_wakes_its_rules() {
        // "aws_secret" hides "secret" (generic-secret) in a leftmost-longest
        // search; the hit must wake both rules.
        let e = Engine::with_default_rules().unwrap();
        let hay = b"my_aws_secret_token = \"q8Zr2Lx9Vt4Nw7Pk3Hs6\"\n";
        let found = e.find(hay, Syntax::Code);
        assert_eq!(found.len(), 1);
        assert_eq!(e.rule(found[0].rule).id, "generic-secret");
        assert!(overlaps("aws_secret", "secret"));
        assert!(overlaps("passw", "swd"));
        assert!(!overlaps("token", "secret"));
    }
}
