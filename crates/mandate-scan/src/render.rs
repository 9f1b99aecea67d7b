//! A report as text for people and as SARIF for code-scanning tools (the
//! JSON form is the [`Report`] itself).

use crate::report::Report;
use crate::rule::Rule;
use crate::sarif::{
    self, ArtifactLocation, Level, Location, Message, ReportingConfiguration, ReportingDescriptor,
    Run, SarifLog, SarifResult,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The partial-fingerprint key results carry in SARIF (and a SARIF
/// baseline is read by).
pub const FINGERPRINT_KEY: &str = "mandateFingerprint/v1";

/// One line per finding, then a summary line.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let whose = if f.human {
            "a person's credential"
        } else {
            "an application's credential"
        };
        let _ = writeln!(
            out,
            "{}:{}:{}: {} ({}, {}) {}  fingerprint {}",
            f.file, f.line, f.column, f.rule, f.class, whose, f.preview, f.fingerprint
        );
    }
    let s = &report.summary;
    let _ = write!(
        out,
        "{} finding{} in {} files ({})",
        report.findings.len(),
        if report.findings.len() == 1 { "" } else { "s" },
        s.files_scanned,
        size(s.bytes_scanned)
    );
    if s.baselined > 0 {
        let _ = write!(out, "; {} in the baseline not shown", s.baselined);
    }
    if !s.skipped.is_empty() {
        let parts: Vec<String> = s
            .skipped
            .iter()
            .map(|(why, n)| format!("{n} {}", why.as_str()))
            .collect();
        let _ = write!(out, "; skipped {}", parts.join(", "));
    }
    out.push('\n');
    out
}

fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// SARIF 2.1.0: every rule of the catalog in the driver, results with
/// the file relative to where the scan was started, line and column.
pub fn sarif<'a>(report: &Report, rules: impl Iterator<Item = &'a Rule>) -> SarifLog {
    let descriptors: Vec<ReportingDescriptor> = rules
        .map(|r| ReportingDescriptor {
            id: r.id.to_owned(),
            name: None,
            short_description: Some(Message::text(r.description)),
            full_description: None,
            help: Some(Message::text(format!(
                "Move the value into Mandate (`mandate scan PATH --import FINGERPRINT --tool TOOL --owner TEAM`), \
                 revoke it at its issuer if it was ever committed, and let agents reach the tool through the proxy. \
                 Class: {}; {}.",
                r.class(),
                if r.human { "a person's credential" } else { "an application's credential" }
            ))),
            default_configuration: Some(ReportingConfiguration { level: Level::Error }),
            properties: Some(
                serde_json::json!({"tags": ["security", "secret"], "class": r.class().as_str(), "human": r.human})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        })
        .collect();
    let index: BTreeMap<&str, usize> = descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    // Relative paths stay as given (code-scanning tools resolve them
    // against the checkout); an absolute root becomes a uriBaseId so
    // every `uri` is relative.
    let mut bases: BTreeMap<String, String> = BTreeMap::new();
    let results = report
        .findings
        .iter()
        .map(|f| {
            let mut location = Location::in_file(sarif::path_to_uri(&f.file), f.line, f.column);
            if Path::new(&f.file).is_absolute()
                && let Some(physical) = location.physical_location.as_mut()
            {
                let root = f
                    .file
                    .strip_suffix(&f.relative)
                    .unwrap_or(&f.file)
                    .to_owned();
                let next = format!("SRCROOT{}", bases.len());
                let id = bases.entry(root).or_insert(next).clone();
                physical.artifact_location = ArtifactLocation {
                    uri: sarif::path_to_uri(&f.relative),
                    uri_base_id: Some(id),
                };
            }
            SarifResult {
                rule_id: f.rule.clone(),
                rule_index: index.get(f.rule.as_str()).copied(),
                level: Level::Error,
                message: Message::text(format!(
                    "{} {} credential ({}), {}",
                    if f.human {
                        "A person's"
                    } else {
                        "An application's"
                    },
                    f.class,
                    f.rule,
                    f.preview
                )),
                locations: vec![location],
                partial_fingerprints: BTreeMap::from([(
                    FINGERPRINT_KEY.to_owned(),
                    f.fingerprint.clone(),
                )]),
                properties: None,
            }
        })
        .collect();
    let original_uri_base_ids = bases
        .into_iter()
        .map(|(root, id)| {
            let uri = format!(
                "file://{}",
                sarif::path_to_uri(&format!("{}/", root.trim_end_matches('/')))
            );
            (
                id,
                ArtifactLocation {
                    uri,
                    uri_base_id: None,
                },
            )
        })
        .collect();
    SarifLog::new(vec![Run {
        tool: sarif::Tool {
            driver: sarif::ToolComponent {
                name: "mandate scan".to_owned(),
                version: Some(report.version.clone()),
                information_uri: None,
                rules: descriptors,
            },
        },
        results,
        column_kind: Some("unicodeCodePoints".to_owned()),
        original_uri_base_ids,
        properties: None,
    }])
}
