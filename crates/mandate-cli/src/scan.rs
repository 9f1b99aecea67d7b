//! `mandate scan PATH…`: find credentials in an agent's code and
//! configuration; report them as text, JSON or SARIF; with `--import`,
//! move one into the broker (see `scan_import.rs`).

use crate::client::Client;
use crate::scan_import::{self, ImportArgs};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mandate_scan::{Baseline, Engine, Report, ScanOptions, render};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub const SCAN_HELP: &str = "\
Rules: AWS access keys, GitHub tokens (a person's ghp_/github_pat_/gho_/ghu_/ghr_
and an app's ghs_, CRC32 tails checked), GitLab, Slack bot (xoxb) and user (xoxp)
tokens and webhooks, OpenAI, Anthropic, Google, Groq, Hugging Face, Replicate,
Perplexity, OpenRouter and other model-provider keys, Stripe live keys, Google
service-account JSON, private-key blocks, JWTs, database URLs with a password,
and high-entropy values assigned to secret-looking names. Placeholders
(`${VAR}`, `${{ secrets.X }}`, `<your-api-key>`, `xxxx`, AWS's example keys),
digests, UUIDs, lockfile hashes, images and public keys are not findings.

Each finding: file, line, column, rule, class (a person's credential is
`human-exception`), a redacted preview and a fingerprint. The value itself is
never printed, logged or written anywhere. `.gitignore` is respected (the
repository's own, not your global one); binaries and files over
--max-file-size are skipped and counted.

Baselines: `mandate scan --format json . > scan-baseline.json` records today's
findings; `mandate scan --baseline scan-baseline.json .` then reports only new
ones. Fingerprints hash rule + path + the secret, not the line, so edits
elsewhere in a file do not bring findings back.

Moving a finding into Mandate:
  mandate scan . --import 3f9c2a71 --tool github --owner platform --expires 2026-12-31
stores the value (re-read from the file, never shown) as a secret of the
finding's class and prints what replaces it in the file. Add --rewrite to
replace it with an environment-variable reference (config files only) and keep
FILE.mandate-backup; without it your files are never touched.

Exit status: 0 no findings (after the baseline), 1 findings,
2 the scan could not be done (a path missing, a bad baseline, an import refused).";

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// One line per finding and a summary.
    Text,
    /// The report as JSON (usable as a --baseline).
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

#[derive(Args)]
pub struct ScanArgs {
    /// Files or directories to scan.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Leave out the findings in FILE (the JSON or SARIF output of an
    /// earlier scan), matched by fingerprint.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Skip files larger than this (bytes; judged by size, never read).
    #[arg(long, default_value_t = 10 * 1024 * 1024, value_name = "BYTES")]
    max_file_size: u64,
    /// Scanning threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Follow symbolic links (loops are reported and skipped).
    #[arg(long)]
    follow_symlinks: bool,
    /// Scan files .gitignore excludes too (a workspace's .env often is).
    #[arg(long)]
    no_ignore: bool,
    #[command(flatten)]
    import: ImportArgs,
}

/// The exit code; errors are printed here and become 2 ("could not scan").
pub async fn run(
    args: ScanArgs,
    as_json: bool,
    client: impl FnOnce() -> Result<Client>,
) -> Result<u8> {
    match scan_and_report(args, as_json, client).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

async fn scan_and_report(
    args: ScanArgs,
    as_json: bool,
    client: impl FnOnce() -> Result<Client>,
) -> Result<u8> {
    // Before the walk: a baseline of the wrong format is a usage error.
    let baseline = args.baseline.as_deref().map(Baseline::load).transpose()?;
    let opts = ScanOptions {
        max_file_size: args.max_file_size,
        threads: args.threads,
        follow_symlinks: args.follow_symlinks,
        no_ignore: args.no_ignore,
    };
    let paths = args.paths.clone();
    let (engine, mut report) = tokio::task::spawn_blocking(move || -> Result<(Engine, Report)> {
        let engine = Engine::with_default_rules().context("building the rules")?;
        let bar = progress_bar();
        let report = mandate_scan::scan(&paths, &engine, &opts, &|n| bar.inc(n))?;
        bar.finish_and_clear();
        Ok((engine, report))
    })
    .await??;
    for w in &report.summary.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(fp) = args.import.fingerprint() {
        return scan_import::import(&report, fp, &args.import, client()?)
            .await
            .map(|()| 0);
    }
    if let Some(b) = &baseline {
        b.apply(&mut report);
    }
    let format = if as_json && matches!(args.format, Format::Text) {
        Format::Json
    } else {
        args.format
    };
    let out = match format {
        Format::Text => render::text(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Sarif => {
            serde_json::to_string_pretty(&render::sarif(&report, engine.rules()))? + "\n"
        }
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the report")?;
    Ok(u8::from(!report.findings.is_empty()))
}

/// Bytes scanned and the rate, on a terminal's stderr only.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} scanned {bytes} ({bytes_per_sec}) {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}
