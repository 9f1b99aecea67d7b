//! `mandate anomalies`: what the broker's anomaly detector found, and
//! the findings section of `mandate task show`.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand)]
pub enum AnomaliesCmd {
    /// List findings, newest first (rights: audit or tasks).
    List {
        /// Only this task's findings.
        #[arg(long, value_parser = path_segment)]
        task: Option<String>,
        /// post_revocation_use, denial_burst, rate_spike, relay,
        /// out_of_scope or unrequested_tool.
        #[arg(long, value_parser = path_segment)]
        rule: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Say you have looked at a finding (by its seq): it leaves the
    /// posture report's unacknowledged list.
    Ack {
        seq: u64,
        /// What you found (kept in the audit event).
        #[arg(long, default_value = "")]
        note: String,
    },
}

const COLUMNS: &[(&str, &str)] = &[
    ("seq", "/seq"),
    ("rule", "/rule"),
    ("task", "/task"),
    ("agent", "/agent"),
    ("tool", "/tool"),
    ("action", "/action"),
    ("outcome", "/outcome"),
];

/// Findings matching the query, as the broker lists them.
pub async fn fetch(
    c: &Client,
    task: Option<&str>,
    rule: Option<&str>,
    limit: usize,
) -> Result<Value> {
    let mut q = vec![format!("limit={limit}")];
    if let Some(t) = task {
        q.push(format!("task={t}"));
    }
    if let Some(r) = rule {
        q.push(format!("rule={r}"));
    }
    c.get(&format!("/v1/anomalies?{}", q.join("&"))).await
}

pub async fn run(c: &Client, cmd: AnomaliesCmd, as_json: bool) -> Result<()> {
    let (task, rule, limit) = match cmd {
        AnomaliesCmd::List { task, rule, limit } => (task, rule, limit),
        AnomaliesCmd::Ack { seq, note } => {
            let v = c
                .post(
                    &format!("/v1/anomalies/{seq}/acknowledge"),
                    &serde_json::json!({"note": note}),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else if v["already"] == true {
                println!("anomaly {seq} was already acknowledged");
            } else {
                println!("anomaly {seq} acknowledged");
            }
            return Ok(());
        }
    };
    let v = fetch(c, task.as_deref(), rule.as_deref(), limit).await?;
    if as_json {
        output::json(&v);
    } else {
        output::table(rows(&v), COLUMNS);
    }
    Ok(())
}

fn rows(v: &Value) -> &[Value] {
    v["anomalies"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
}

/// The section `task show` prints after the task: its findings, or a
/// line saying why there is none to show.
pub async fn section(c: &Client, task: &str) {
    println!("\nanomalies:");
    match fetch(c, Some(task), None, 20).await {
        Ok(v) if rows(&v).is_empty() => println!("  none"),
        Ok(v) => {
            for a in rows(&v) {
                let s = |k: &str| a[k].as_str().unwrap_or("-").to_owned();
                println!(
                    "  seq {}  {}  action {} ({})  {}",
                    a["seq"],
                    s("rule"),
                    s("action"),
                    s("outcome"),
                    a["evidence"]
                );
            }
        }
        // An agent's own session may not read them (rights audit or tasks).
        Err(e) => println!("  not shown: {e:#}"),
    }
}
