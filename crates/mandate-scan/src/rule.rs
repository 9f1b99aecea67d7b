//! What a rule is: data (id, class, whose credential, keywords, pattern)
//! plus an optional check of the candidate it captured.

use mandate_core::SecretClass;

/// How a candidate is checked beyond its pattern. A closed set so the
/// catalog stays data and each check has one tested implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing beyond the pattern and the placeholder filter.
    None,
    /// GitHub's tail: the last 6 characters are the base62 CRC32 of the
    /// 30 random ones before them.
    GithubCrc32,
    /// The header segment decodes to a JSON object with an `alg`.
    JwtHeader,
    /// A generic assignment: high entropy, not a reference, digest, UUID…
    Entropy,
    /// A key body long enough to be a key, not `...` in documentation.
    KeyBody,
    /// A password inside a URL that is not a variable or a placeholder.
    UrlPassword,
}

/// Where a rule's match may reach from its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The match lies on the keyword's line.
    Line,
    /// The match may run over several lines (PEM blocks).
    Lines,
}

/// One detection rule. Rules are data: the catalog lists them.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id (`github-pat`), used in reports, SARIF and fingerprints.
    pub id: &'static str,
    pub description: &'static str,
    /// The class the credential would have in Mandate's inventory, when it
    /// is an application's. A person's credential is always
    /// `human-exception` (see [`Rule::class`]).
    pub app_class: SecretClass,
    /// A person's own credential (a PAT, a user OAuth token).
    pub human: bool,
    /// Literal substrings (matched case-insensitively) one of which every
    /// match contains; the regex only runs near them.
    pub keywords: &'static [&'static str],
    /// `regex::bytes` syntax; capture group `secret` is the value.
    pub pattern: &'static str,
    pub check: Check,
    pub reach: Reach,
    /// Lower wins when two rules report the same bytes.
    pub rank: u8,
}

impl Rule {
    /// The class a finding of this rule gets: a person's credential found
    /// in a workspace is a `human-exception`; an application's keeps its own.
    pub fn class(&self) -> SecretClass {
        if self.human {
            SecretClass::HumanException
        } else {
            self.app_class
        }
    }
}
