//! `mandate approval`: the requests policy holds for a person — list,
//! show (and wait on), approve, deny.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum ApprovalCmd {
    /// List approval requests, newest first (rights: approve, audit or tasks).
    List {
        /// pending, granted, denied, used or expired.
        #[arg(long)]
        state: Option<String>,
        /// Only this task's requests.
        #[arg(long, value_parser = path_segment)]
        task: Option<String>,
    },
    /// Show one request: who asks, exactly what, why, until when.
    Show {
        #[arg(value_parser = path_segment)]
        id: String,
        /// Wait up to this long for a person to decide it (at most 25s per
        /// call; e.g. 20s).
        #[arg(long, value_parser = crate::duration::parse)]
        wait: Option<u32>,
    },
    /// Approve exactly what was asked: the next use only, or with --for
    /// every use until the time-box ends (capped by the broker's
    /// approval_max_secs and the task's deadline). Needs the approve right.
    Approve {
        #[arg(value_parser = path_segment)]
        id: String,
        /// A time-box, e.g. 15m or 1h.
        #[arg(long = "for", value_parser = crate::duration::parse)]
        for_secs: Option<u32>,
        /// Why, for the audit log.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny; final: the same thing asked again stays denied.
    Deny {
        #[arg(value_parser = path_segment)]
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

/// The longest `?wait=` one call may take inside the client's timeout.
pub const MAX_WAIT_PER_CALL: u32 = 25;

pub async fn run(c: &Client, cmd: ApprovalCmd, as_json: bool) -> Result<()> {
    let v = match cmd {
        ApprovalCmd::List { state, task } => {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(t) = task {
                q.push(format!("task={t}"));
            }
            let v = c.get(&format!("/v1/approvals?{}", q.join("&"))).await?;
            if as_json {
                output::json(&v);
            } else {
                output::table(
                    v["approvals"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("state", "/state"),
                        ("agent", "/agent"),
                        ("task", "/task"),
                        ("held", "/held/kind"),
                        ("tool", "/held/tool"),
                        ("action", "/held/action"),
                        ("resource", "/held/resource"),
                        ("valid until", "/valid_until"),
                    ],
                );
            }
            return Ok(());
        }
        ApprovalCmd::Show { id, wait } => {
            let wait = wait.unwrap_or(0).min(MAX_WAIT_PER_CALL);
            c.get(&format!("/v1/approvals/{id}?wait={wait}")).await?
        }
        ApprovalCmd::Approve { id, for_secs, note } => {
            c.post(
                &format!("/v1/approvals/{id}/approve"),
                &json!({"for_secs": for_secs, "note": note}),
            )
            .await?
        }
        ApprovalCmd::Deny { id, note } => {
            c.post(&format!("/v1/approvals/{id}/deny"), &json!({"note": note}))
                .await?
        }
    };
    if as_json {
        output::json(&v);
    } else {
        print!("{}", describe(&v));
    }
    Ok(())
}

/// Policy reasons on one line.
fn reasons(v: &Value) -> String {
    v.as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// An approval request for people: who, what, why, until when, and the
/// decision if there is one.
pub fn describe(a: &Value) -> String {
    let s = |p: &str| {
        a.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let held = &a["held"];
    let what = match held["kind"].as_str() {
        Some("task") => "the task's start".to_owned(),
        Some("grant") => format!("a token for `{}` ({})", s("/held/tool"), held["actions"]),
        Some("request") => {
            let mut w = format!(
                "`{}` on `{}` at `{}`",
                s("/held/action"),
                s("/held/resource"),
                s("/held/tool")
            );
            if let Some(n) = held["amount"].as_i64() {
                w.push_str(&format!(" (amount {n})"));
            }
            w
        }
        _ => "?".to_owned(),
    };
    let mut out = format!(
        "approval {}: {}\n  asks:   agent {} (owner {}), task {}\n  what:   {}\n  why:    {} — {}\n  until:  {} (unix)\n",
        s("/id"),
        s("/state"),
        s("/agent"),
        s("/owner"),
        s("/task"),
        what,
        s("/intent"),
        reasons(&a["reasons"]),
        a["valid_until"],
    );
    if let Some(d) = a.get("decided").filter(|d| d.is_object()) {
        out.push_str(&format!(
            "  decided by {} at {}{}{}\n",
            d["by"].as_str().unwrap_or("?"),
            d["at"],
            d["extent"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            d["note"]
                .as_str()
                .map(|n| format!(": {n}"))
                .unwrap_or_default(),
        ));
    }
    out
}

/// Wait, visibly, for a person to decide the approval holding `task`'s
/// start: a line naming the approval and the command that approves it,
/// then long polls (no busy polling) until it is decided or expires. The
/// task as it then is; an error if it was denied or nobody decided.
pub async fn wait_for_task(
    c: &Client,
    task: &Value,
    session: impl Fn() -> String,
) -> Result<Value> {
    let id = task["id"].as_str().unwrap_or_default();
    let Some(apr) = task["approval"].as_str() else {
        anyhow::bail!("task {id} is pending approval but names no approval request");
    };
    eprintln!(
        "mandate run: task {id} waits for a person's approval {apr} ({}); to approve: mandate approval approve {apr}",
        reasons(&task["reasons"])
    );
    loop {
        let a = c
            .with_token(Some(session()))
            .get(&format!("/v1/approvals/{apr}?wait={MAX_WAIT_PER_CALL}"))
            .await?;
        match a["state"].as_str() {
            Some("pending") => continue,
            Some("granted") | Some("used") => {
                eprintln!(
                    "mandate run: approval {apr} granted by {}",
                    a["decided"]["by"].as_str().unwrap_or("?")
                );
                return c
                    .with_token(Some(session()))
                    .get(&format!("/v1/tasks/{id}"))
                    .await;
            }
            Some("denied") => anyhow::bail!(
                "approval {apr} was denied by {}{}",
                a["decided"]["by"].as_str().unwrap_or("?"),
                a["decided"]["note"]
                    .as_str()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
            other => anyhow::bail!(
                "approval {apr} is {}: nobody decided it in time",
                other.unwrap_or("?")
            ),
        }
    }
}
