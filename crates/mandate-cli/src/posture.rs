//! `mandate posture`: the broker's posture report as Markdown, a
//! self-contained HTML page, JSON or SARIF, with an exit code for CI gates.

use crate::client::Client;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mandate_governance::{Report, Severity};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Md,
    Html,
    Json,
    /// SARIF 2.1.0 for code-scanning dashboards (findings at logical
    /// locations: the agent, secret, tool or policy they name).
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FailOn {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<FailOn> for Severity {
    fn from(f: FailOn) -> Severity {
        match f {
            FailOn::Info => Severity::Info,
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

#[derive(Args)]
#[command(
    after_help = "Example:\n  mandate posture                       # Markdown on stdout\n  mandate posture --format html --output posture.html\n  mandate posture --fail-on high        # a CI gate\n\nExit status: 0 when no finding is at or above --fail-on (or none is\ngiven), 3 when one is, 1 when the report could not be made.\n\nEach finding has a stable id, a severity, its evidence, the command that\nfixes it, and its place in OWASP NHI Top 10 (2025), OWASP Agentic Top 10\n(2026), NIST AI RMF, CSA MAESTRO, NIST CSF 2.0 and, for authentication\nstrength, NIST SP 800-63."
)]
pub struct PostureArgs {
    #[arg(long, value_enum, default_value = "md")]
    format: Format,
    /// Exit 3 when any finding is at this severity or above.
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// Write the report here instead of stdout.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Days of audit log to count use over (default: the server's
    /// posture.period_days, 30).
    #[arg(long)]
    days: Option<u32>,
}

/// The exit status when findings reach `--fail-on` (1 is an error).
pub const FINDINGS_AT_OR_ABOVE: u8 = 3;

pub async fn run(c: &Client, a: PostureArgs, as_json: bool) -> Result<u8> {
    c.require_token("posture")?;
    let path = match a.days {
        Some(d) => format!("/v1/posture?days={d}"),
        None => "/v1/posture".to_owned(),
    };
    let v = c.get(&path).await?;
    let report: Report =
        serde_json::from_value(v.clone()).context("the broker's report did not parse")?;
    let text = match (as_json, a.format) {
        (true, _) | (_, Format::Json) => serde_json::to_string_pretty(&v)? + "\n",
        (_, Format::Md) => mandate_governance::markdown(&report),
        (_, Format::Html) => mandate_governance::html(&report),
        (_, Format::Sarif) => {
            let log = mandate_governance::sarif(&report, env!("CARGO_PKG_VERSION"));
            serde_json::to_string_pretty(&log)? + "\n"
        }
    };
    match &a.output {
        Some(p) => std::fs::write(p, text)
            .with_context(|| format!("--output: cannot write {}", p.display()))?,
        None => print!("{text}"),
    }
    let failing = a.fail_on.map_or(0, |s| report.at_or_above(s.into()));
    if failing > 0 {
        eprintln!(
            "{failing} finding(s) at or above {}",
            Severity::from(a.fail_on.expect("counted only with --fail-on"))
        );
        return Ok(FINDINGS_AT_OR_ABOVE);
    }
    Ok(0)
}
