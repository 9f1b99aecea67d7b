//! Baselines: the findings a team has accepted, keyed by fingerprint
//! (rule + path + secret hash), never by line number, so editing a file
//! above a known secret does not bring it back. A baseline is the JSON
//! report of an earlier scan, or its SARIF.

use crate::render::FINGERPRINT_KEY;
use crate::report::Report;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline {path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "baseline {path}: not JSON ({reason}); make one with `mandate scan --format json PATH > scan-baseline.json`"
    )]
    NotJson { path: String, reason: String },
    #[error(
        "baseline {path}: {what}, not a `mandate scan` report; make one with `mandate scan --format json PATH > scan-baseline.json`"
    )]
    OtherFormat { path: String, what: String },
}

/// The accepted fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    fingerprints: BTreeSet<String>,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| BaselineError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Baseline::parse(&bytes).map_err(|e| match e {
            Parse::NotJson(reason) => BaselineError::NotJson {
                path: shown.clone(),
                reason,
            },
            Parse::Other(what) => BaselineError::OtherFormat {
                path: shown.clone(),
                what,
            },
        })
    }

    fn parse(bytes: &[u8]) -> Result<Baseline, Parse> {
        // Only the parser's position goes into the message: a baseline
        // given by mistake might be a file full of secrets.
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            Parse::NotJson(format!(
                "{:?} at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let fingerprints = if v.get("tool").and_then(Value::as_str) == Some(Report::TOOL) {
            let report: Report = serde_json::from_value(v).map_err(|e| {
                Parse::Other(format!("a mandate-scan report with a bad field ({e})"))
            })?;
            report.findings.into_iter().map(|f| f.fingerprint).collect()
        } else if v.get("runs").is_some() && v.get("version").is_some() {
            sarif_fingerprints(&v)?
        } else {
            return Err(Parse::Other(describe(&v)));
        };
        Ok(Baseline { fingerprints })
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.fingerprints.contains(fingerprint)
    }

    /// Drop the findings the baseline lists; count them in the summary.
    pub fn apply(&self, report: &mut Report) {
        let before = report.findings.len();
        report.findings.retain(|f| !self.contains(&f.fingerprint));
        report.summary.baselined += (before - report.findings.len()) as u64;
    }
}

enum Parse {
    NotJson(String),
    Other(String),
}

fn sarif_fingerprints(v: &Value) -> Result<BTreeSet<String>, Parse> {
    let runs = v["runs"]
        .as_array()
        .ok_or_else(|| Parse::Other("SARIF without a runs list".into()))?;
    let ours = runs
        .iter()
        .all(|r| r.pointer("/tool/driver/name").and_then(Value::as_str) == Some("mandate scan"));
    if !ours {
        return Err(Parse::Other("SARIF from another tool".into()));
    }
    Ok(runs
        .iter()
        .filter_map(|r| r["results"].as_array())
        .flatten()
        .filter_map(|r| r["partialFingerprints"][FINGERPRINT_KEY].as_str())
        .map(str::to_owned)
        .collect())
}

/// Name what the file looks like, for the error.
fn describe(v: &Value) -> String {
    if v.get("plugins_used").is_some() && v.get("results").is_some() {
        "a detect-secrets baseline (keyed by line number)".into()
    } else if v
        .as_array()
        .is_some_and(|a| a.first().is_some_and(|f| f.get("RuleID").is_some()))
    {
        "a gitleaks/betterleaks report".into()
    } else {
        match v {
            Value::Object(_) => "a JSON object without \"tool\": \"mandate-scan\"".into(),
            Value::Array(_) => "a JSON array".into(),
            _ => "a bare JSON value".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Baseline, String> {
        Baseline::parse(s.as_bytes()).map_err(|e| match e {
            Parse::NotJson(r) | Parse::Other(r) => r,
        })
    }

    #[test]
    fn a_report_is_a_baseline() {
        let b = parse(r#"{"tool":"mandate-scan","version":"0.1.0","findings":[{"file":"a","line":1,"column":1,
            "rule":"jwt","class":"tool","human":false,"preview":"e…(9 chars)","fingerprint":"f1"}],
            "summary":{"files_scanned":1,"bytes_scanned":1,"skipped":{},"baselined":0,"warnings":[]}}"#)
        .unwrap();
        assert!(b.contains("f1"));
    }

    #[test]
    fn other_formats_are_named() {
        let e = parse(r#"{"version":"1.5.0","plugins_used":[],"results":{}}"#).unwrap_err();
        assert!(e.contains("detect-secrets"), "{e}");
        let e = parse(r#"[{"RuleID":"x"}]"#).unwrap_err();
        assert!(e.contains("gitleaks"), "{e}");
        let e = parse("AKIA... not json").unwrap_err();
        assert!(
            !e.contains("AKIA"),
            "the file's content stays out of the message: {e}"
        );
    }
}
