//! One posture result: what is risky, about what, the evidence, the fix.

use crate::frameworks::Mapping;
use crate::kind::{FindingKind, Severity};
use serde::{Deserialize, Serialize};

/// What a finding names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    /// `agent`, `secret`, `tool`, `owner`, `policy`, `task`, `anomaly` or `config`.
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable across runs: `<kind>:<subject kind>/<subject name>`.
    pub id: String,
    pub kind: FindingKind,
    pub severity: Severity,
    pub subject: Subject,
    /// One sentence a reviewer reads.
    pub title: String,
    /// The facts behind it (never a secret's value).
    pub evidence: serde_json::Value,
    /// The command that fixes it (or starts to).
    pub fix: String,
    pub frameworks: Mapping,
}

impl Finding {
    pub fn new(
        kind: FindingKind,
        severity: Severity,
        subject: (&str, &str),
        title: String,
        evidence: serde_json::Value,
        fix: String,
    ) -> Finding {
        Finding {
            id: format!("{kind}:{}/{}", subject.0, subject.1),
            kind,
            severity,
            subject: Subject {
                kind: subject.0.to_owned(),
                name: subject.1.to_owned(),
            },
            title,
            evidence,
            fix,
            frameworks: crate::frameworks::mapping(kind).clone(),
        }
    }
}
