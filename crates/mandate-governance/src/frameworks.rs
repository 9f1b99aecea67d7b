//! The framework mapping (`frameworks.toml`): data in the repository,
//! parsed once, checked by tests against the finding kinds.

use crate::kind::{FindingKind, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The mapping file as shipped.
pub const FRAMEWORKS_TOML: &str = include_str!("../frameworks.toml");

/// The frameworks, in report order: (key, display name).
pub const FRAMEWORKS: [(&str, &str); 6] = [
    ("owasp_nhi", "OWASP NHI Top 10 (2025)"),
    ("owasp_agentic", "OWASP Agentic Top 10 (2026)"),
    ("nist_ai_rmf", "NIST AI RMF 1.0"),
    ("maestro", "CSA MAESTRO"),
    ("csf", "NIST CSF 2.0"),
    ("sp800_63", "NIST SP 800-63"),
];

/// One finding kind's place in each framework, by item id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub owasp_nhi: Vec<String>,
    #[serde(default)]
    pub owasp_agentic: Vec<String>,
    #[serde(default)]
    pub nist_ai_rmf: Vec<String>,
    #[serde(default)]
    pub maestro: Vec<String>,
    #[serde(default)]
    pub csf: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sp800_63: Vec<String>,
}

impl Mapping {
    /// (framework key, item ids) in report order.
    pub fn by_framework(&self) -> [(&'static str, &[String]); 6] {
        [
            ("owasp_nhi", &self.owasp_nhi),
            ("owasp_agentic", &self.owasp_agentic),
            ("nist_ai_rmf", &self.nist_ai_rmf),
            ("maestro", &self.maestro),
            ("csf", &self.csf),
            ("sp800_63", &self.sp800_63),
        ]
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    severity: String,
    note: String,
    #[serde(flatten)]
    mapping: Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    items: BTreeMap<String, BTreeMap<String, String>>,
    finding: BTreeMap<String, Entry>,
}

/// The parsed table: each kind's severity, note and mapping, and every
/// framework's item titles.
#[derive(Debug)]
pub struct Table {
    pub kinds: BTreeMap<FindingKind, (Severity, String, Mapping)>,
    pub items: BTreeMap<String, BTreeMap<String, String>>,
}

/// Every problem with a mapping file, so a reviewer sees them all at once.
pub fn parse(text: &str) -> Result<Table, Vec<String>> {
    let file: File = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut kinds = BTreeMap::new();
    for (id, e) in file.finding {
        let Some(kind) = FindingKind::parse(&id) else {
            problems.push(format!("finding.{id}: no such finding kind"));
            continue;
        };
        let Some(sev) = Severity::parse(&e.severity) else {
            problems.push(format!(
                "finding.{id}.severity: `{}` is unknown",
                e.severity
            ));
            continue;
        };
        for (fw, ids) in e.mapping.by_framework() {
            let known = file.items.get(fw);
            for item in ids {
                if known.is_none_or(|k| !k.contains_key(item)) {
                    problems.push(format!("finding.{id}.{fw}: `{item}` is not in items.{fw}"));
                }
            }
        }
        kinds.insert(kind, (sev, e.note, e.mapping));
    }
    for k in FindingKind::ALL {
        if !kinds.contains_key(k) {
            problems.push(format!("finding.{k}: missing"));
        }
    }
    for (fw, _) in FRAMEWORKS {
        if !file.items.contains_key(fw) {
            problems.push(format!("items.{fw}: missing"));
        }
    }
    if problems.is_empty() {
        Ok(Table {
            kinds,
            items: file.items,
        })
    } else {
        Err(problems)
    }
}

/// The shipped table; its test keeps it valid.
pub fn table() -> &'static Table {
    static TABLE: LazyLock<Table> = LazyLock::new(|| {
        parse(FRAMEWORKS_TOML).unwrap_or_else(|p| panic!("frameworks.toml: {}", p.join("; ")))
    });
    &TABLE
}

pub fn mapping(kind: FindingKind) -> &'static Mapping {
    &table().kinds[&kind].2
}

pub fn severity(kind: FindingKind) -> Severity {
    table().kinds[&kind].0
}

pub fn note(kind: FindingKind) -> &'static str {
    &table().kinds[&kind].1
}

/// An item's title, e.g. `NHI7:2025` → `Long-Lived Secrets`.
pub fn title(framework: &str, item: &str) -> Option<&'static str> {
    table().items.get(framework)?.get(item).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_mapping_covers_every_kind_with_known_items() {
        let t = parse(FRAMEWORKS_TOML).unwrap_or_else(|p| panic!("{p:#?}"));
        for k in FindingKind::ALL {
            let (_, note, m) = &t.kinds[k];
            assert!(!note.is_empty(), "{k}");
            for (fw, ids) in m.by_framework().into_iter().take(5) {
                assert!(!ids.is_empty(), "{k} has no {fw} item");
            }
        }
        assert_eq!(t.items["owasp_nhi"].len(), 10);
        assert_eq!(t.items["owasp_agentic"].len(), 10);
        assert_eq!(t.items["maestro"].len(), 7);
        assert_eq!(title("owasp_nhi", "NHI7:2025"), Some("Long-Lived Secrets"));
        // Authentication strength is the one place SP 800-63 applies.
        let auth = mapping(FindingKind::JoinTokenOnly);
        assert_eq!(auth.sp800_63, ["AAL1"]);
    }

    #[test]
    fn a_bad_mapping_names_every_problem() {
        let bad = FRAMEWORKS_TOML
            .replace("\"NHI9:2025\"]", "\"NHI99:2025\"]")
            .replace(
                "[finding.secret-unused]\nseverity = \"low\"",
                "[finding.secret-unused]\nseverity = \"dire\"",
            );
        let p = parse(&bad).unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.contains("`NHI99:2025` is not in items.owasp_nhi")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("finding.secret-unused.severity")),
            "{p:?}"
        );
        let missing = FRAMEWORKS_TOML.replace("[finding.breakglass-used]", "[finding.not-a-kind]");
        let p = parse(&missing).unwrap_err();
        assert!(
            p.iter().any(|m| m == "finding.breakglass-used: missing"),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("finding.not-a-kind: no such")),
            "{p:?}"
        );
    }
}
