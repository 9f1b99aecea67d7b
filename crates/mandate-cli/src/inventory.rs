//! `mandate inventory`: every secret, live grant and agent the broker
//! knows, per class and owner, as a table, JSON or CSV. Never a value.

use crate::client::Client;
use crate::output;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mandate_governance::Inventory;
use serde_json::Value;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
#[command(
    after_help = "Example:\n  mandate inventory\n  mandate inventory --class model --format csv > model-keys.csv\n  mandate inventory --owner payments-team --days 7 --format json\n\nClasses: model, tool, retrieval, deployment, database, human-exception.\nAuthentication strength, weakest first: join_token < federated_jwt <\nenrolled_key < enrolled_key_dpop (the weakest way the agent can still get\na session)."
)]
pub struct InventoryArgs {
    /// Only secrets (and grants of tools whose secret is) of this class.
    #[arg(long)]
    class: Option<String>,
    /// Only this owner's secrets, agents and their grants.
    #[arg(long)]
    owner: Option<String>,
    /// Days of audit log to count use over (default: the server's
    /// posture.period_days, 30).
    #[arg(long)]
    days: Option<u32>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn query(a: &InventoryArgs) -> String {
    let mut q = Vec::new();
    for (k, v) in [("class", &a.class), ("owner", &a.owner)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", urlencoding(v)));
        }
    }
    if let Some(d) = a.days {
        q.push(format!("days={d}"));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Names are `[a-z0-9-]`; anything else is the server's to refuse, so
/// only what would break the query string is escaped.
fn urlencoding(s: &str) -> String {
    s.replace('%', "%25")
        .replace('&', "%26")
        .replace('#', "%23")
        .replace(' ', "%20")
}

pub async fn run(c: &Client, a: InventoryArgs, as_json: bool) -> Result<()> {
    c.require_token("inventory")?;
    let v = c.get(&format!("/v1/inventory{}", query(&a))).await?;
    let inv: Inventory =
        serde_json::from_value(v.clone()).context("the broker's inventory did not parse")?;
    match (as_json, a.format) {
        (true, _) | (_, Format::Json) => output::json(&v),
        (_, Format::Csv) => print!("{}", csv(&inv)),
        (_, Format::Table) => table(&v),
    }
    Ok(())
}

/// Times as dates for people (`--format json` keeps Unix seconds).
fn dated(mut rows: Vec<Value>, pointers: &[&str]) -> Vec<Value> {
    for r in &mut rows {
        for p in pointers {
            if let Some(slot) = r.pointer_mut(p)
                && let Some(t) = slot.as_i64()
            {
                *slot = Value::String(mandate_governance::utc(t));
            }
        }
    }
    rows
}

fn table(v: &Value) {
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    println!("secrets:");
    output::table(
        &dated(
            list("secrets"),
            &[
                "/created_at",
                "/rotated_at",
                "/last_used_at",
                "/rotation/rotation_due_at",
            ],
        ),
        &[
            ("name", "/name"),
            ("class", "/class"),
            ("owner", "/owner"),
            ("tool", "/tool"),
            ("used by", "/used_by"),
            ("created", "/created_at"),
            ("rotated", "/rotated_at"),
            ("last used", "/last_used_at"),
            ("rotation due", "/rotation/rotation_due_at"),
            ("flags", "/flags"),
        ],
    );
    println!("\nlive grants:");
    output::table(
        &dated(list("grants"), &["/expires_at"]),
        &[
            ("agent", "/agent"),
            ("task", "/task"),
            ("tool", "/tool"),
            ("class", "/class"),
            ("expires", "/expires_at"),
        ],
    );
    println!("\nleases (dynamic credentials not yet gone):");
    output::table(
        &dated(list("leases"), &["/expires_at"]),
        &[
            ("login", "/login"),
            ("tool", "/tool"),
            ("role", "/role"),
            ("agent", "/agent"),
            ("task", "/task"),
            ("state", "/state"),
            ("expires", "/expires_at"),
        ],
    );
    println!("\nagents:");
    output::table(
        &dated(list("agents"), &["/last_seen"]),
        &[
            ("name", "/name"),
            ("owner", "/owner"),
            ("owner kind", "/owner_kind"),
            ("environment", "/environment"),
            ("auth strength", "/auth_strength"),
            ("model", "/model/model"),
            ("version", "/model/model_version"),
            ("last seen", "/last_seen"),
            ("state", "/state"),
        ],
    );
}

/// RFC 4180: quote every field, double the quotes inside.
fn field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

const CSV_HEADER: [&str; 14] = [
    "record",
    "name",
    "class",
    "owner",
    "environment",
    "tool",
    "agents",
    "created",
    "last_rotated",
    "last_used",
    "rotation_due",
    "expires",
    "auth_strength",
    "flags",
];

/// One row per secret, grant and agent, under one header.
pub fn csv(inv: &Inventory) -> String {
    let opt = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_default();
    let mut rows: Vec<[String; 14]> = Vec::new();
    for s in &inv.secrets {
        let x = &s.secret;
        rows.push([
            "secret".into(),
            x.name.to_string(),
            x.class.to_string(),
            x.owner.to_string(),
            String::new(),
            x.tool.to_string(),
            s.used_by
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            x.created_at.to_string(),
            opt(x.rotated_at),
            opt(x.last_used_at),
            s.rotation.rotation_due_at.to_string(),
            opt(x.expires_at),
            String::new(),
            s.flags.join(" "),
        ]);
    }
    for g in &inv.grants {
        rows.push([
            "grant".into(),
            g.jti.to_string(),
            g.class.map(|c| c.to_string()).unwrap_or_default(),
            String::new(),
            String::new(),
            g.tool.to_string(),
            g.agent.to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            g.expires_at.to_string(),
            String::new(),
            format!("task={}", g.task),
        ]);
    }
    for l in &inv.leases {
        rows.push([
            "lease".into(),
            l.login.clone(),
            String::new(),
            String::new(),
            String::new(),
            l.tool.to_string(),
            l.agent.to_string(),
            l.created_at.to_string(),
            String::new(),
            String::new(),
            String::new(),
            l.expires_at.to_string(),
            String::new(),
            format!("state={} task={}", l.state, l.task),
        ]);
    }
    for a in &inv.agents {
        rows.push([
            "agent".into(),
            a.name.to_string(),
            String::new(),
            a.owner.to_string(),
            a.environment.to_string(),
            a.tools
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            String::new(),
            String::new(),
            String::new(),
            opt(a.last_seen),
            String::new(),
            String::new(),
            a.auth_strength.to_string(),
            format!("{:?}", a.state).to_lowercase(),
        ]);
    }
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_every_field() {
        assert_eq!(field("a\"b,c"), "\"a\"\"b,c\"");
        let inv: Inventory = serde_json::from_value(json!({"generated_at": 0, "period_days": 30,
            "owners": [], "secrets": [], "grants": [], "leases": [], "agents": []}))
        .unwrap();
        assert_eq!(csv(&inv).lines().count(), 1, "the header only");
    }
}
