//! The posture report: findings plus their counts by severity and by
//! framework item, as the broker serves it and the CLI renders it.

use crate::assess::assess;
use crate::facts::Facts;
use crate::finding::Finding;
use crate::kind::Severity;
use mandate_core::UnixTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: UnixTime,
    pub period_days: u32,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub by_severity: BTreeMap<Severity, usize>,
    /// Framework key → item id → findings mapped to it.
    pub by_framework: BTreeMap<String, BTreeMap<String, usize>>,
}

/// `2026-12-07 18:29 UTC`, for people reading a report.
pub fn utc(t: UnixTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

impl Report {
    pub fn of(f: &Facts) -> Report {
        let findings = assess(f);
        let mut summary = Summary::default();
        for s in Severity::ALL {
            summary.by_severity.insert(*s, 0);
        }
        for x in &findings {
            *summary.by_severity.entry(x.severity).or_default() += 1;
            for (fw, ids) in x.frameworks.by_framework() {
                for id in ids {
                    *summary
                        .by_framework
                        .entry(fw.to_owned())
                        .or_default()
                        .entry(id.clone())
                        .or_default() += 1;
                }
            }
        }
        Report {
            generated_at: f.now,
            period_days: f.period_days,
            findings,
            summary,
        }
    }

    /// How many findings are at `severity` or worse (a CI gate's test).
    pub fn at_or_above(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= severity)
            .count()
    }
}
