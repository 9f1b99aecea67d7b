//! The report as SARIF 2.1.0, for code-scanning dashboards and CI: one
//! rule per finding kind (its note, default level, framework items and a
//! `security-severity` score), one result per finding, located at the
//! thing it names (a logical location: an agent, a secret, a tool, a
//! policy; posture findings have no file), with the finding's stable id as
//! its fingerprint.

use crate::frameworks::{self, FRAMEWORKS};
use crate::kind::{FindingKind, Severity};
use crate::report::Report;
use mandate_sarif::{
    Level, Location, Message, PropertyBag, ReportingConfiguration, ReportingDescriptor, Run,
    SarifLog, SarifResult, Tool, ToolComponent,
};
use serde_json::json;

fn level(s: Severity) -> Level {
    match s {
        Severity::Critical | Severity::High => Level::Error,
        Severity::Medium => Level::Warning,
        Severity::Low | Severity::Info => Level::Note,
    }
}

/// The 0–10 score code-scanning tools sort security results by.
fn score(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn mapping_bag(m: &crate::Mapping) -> PropertyBag {
    let mut bag = PropertyBag::new();
    for ((key, ids), (_, name)) in m.by_framework().into_iter().zip(FRAMEWORKS) {
        if !ids.is_empty() {
            let named: Vec<String> = ids
                .iter()
                .map(|id| format!("{id} {}", frameworks::title(key, id).unwrap_or("")))
                .collect();
            bag.insert(name.to_owned(), json!(named));
        }
    }
    bag
}

pub fn sarif(r: &Report, version: &str) -> SarifLog {
    let rules: Vec<ReportingDescriptor> = FindingKind::ALL
        .iter()
        .map(|k| {
            let sev = frameworks::severity(*k);
            let mut properties = mapping_bag(frameworks::mapping(*k));
            properties.insert("security-severity".into(), json!(score(sev)));
            properties.insert("tags".into(), json!(["security", "posture"]));
            ReportingDescriptor {
                id: k.as_str().to_owned(),
                name: Some(k.as_str().to_owned()),
                short_description: Some(Message::text(frameworks::note(*k))),
                full_description: None,
                help: None,
                default_configuration: Some(ReportingConfiguration { level: level(sev) }),
                properties: Some(properties),
            }
        })
        .collect();
    let results = r
        .findings
        .iter()
        .map(|f| {
            let mut properties = mapping_bag(&f.frameworks);
            properties.insert("severity".into(), json!(f.severity));
            properties.insert("evidence".into(), f.evidence.clone());
            properties.insert("fix".into(), json!(f.fix));
            SarifResult {
                rule_id: f.kind.as_str().to_owned(),
                rule_index: FindingKind::ALL.iter().position(|k| *k == f.kind),
                level: level(f.severity),
                message: Message::text(format!("{}. Fix: {}", f.title, f.fix)),
                locations: vec![Location::logical(
                    format!("{}/{}", f.subject.kind, f.subject.name),
                    f.subject.kind.clone(),
                )],
                partial_fingerprints: [("mandatePosture/v1".to_owned(), f.id.clone())].into(),
                properties: Some(properties),
            }
        })
        .collect();
    SarifLog::new(vec![Run {
        tool: Tool {
            driver: ToolComponent {
                name: "mandate-posture".into(),
                version: Some(version.to_owned()),
                information_uri: None,
                rules,
            },
        },
        results,
        column_kind: None,
        original_uri_base_ids: Default::default(),
        properties: None,
    }])
}
