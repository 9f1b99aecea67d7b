//! `mandate breakglass`: emergency tasks that skip approval and nothing
//! else — open (with a justification, for at most the broker's cap),
//! list, close.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum BreakglassCmd {
    /// Open an emergency task for AGENT on one TOOL (right: breakglass).
    /// It skips approval, keeps every other rule (the agent's own tools,
    /// its environment), is flagged on every token and audit record,
    /// announced (breakglass.opened/used/closed), and closes by itself at
    /// the end of --duration (at most the broker's breakglass_max_secs,
    /// default 1h; longer is refused).
    Open {
        #[arg(long, value_parser = path_segment)]
        agent: String,
        #[arg(long, value_parser = path_segment)]
        tool: String,
        /// ACTION[,ACTION…] the task may use, e.g. db:read,db:write.
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
        /// A resource pattern (repeatable); all resources without one.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Why the glass is broken: required, kept with the task.
        #[arg(long)]
        justification: String,
        /// How long, e.g. 30m or 1h.
        #[arg(long, value_parser = crate::duration::parse)]
        duration: u32,
    },
    /// Break-glass tasks, newest first, open or closed.
    List,
    /// Close a break-glass task now (it completes; its tokens die).
    Close {
        #[arg(value_parser = path_segment)]
        id: String,
    },
}

pub async fn run(c: &Client, cmd: BreakglassCmd, as_json: bool) -> Result<()> {
    match cmd {
        BreakglassCmd::Open {
            agent,
            tool,
            actions,
            resources,
            justification,
            duration,
        } => {
            let v = c
                .post(
                    "/v1/breakglass",
                    &json!({"agent": agent, "tool": tool, "actions": actions,
                            "resources": resources, "justification": justification,
                            "duration_secs": duration}),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!("{}", v["id"].as_str().unwrap_or_default());
                eprintln!(
                    "break-glass task for {} open until {} (unix); every use is flagged and announced",
                    v["agent"].as_str().unwrap_or("?"),
                    v["deadline"]
                );
            }
        }
        BreakglassCmd::List => {
            let v = c.get("/v1/breakglass").await?;
            if as_json {
                output::json(&v);
            } else {
                output::table(
                    v["breakglass"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("state", "/state"),
                        ("agent", "/agent"),
                        ("tool", "/scope/0/tool"),
                        ("opened by", "/breakglass/opened_by"),
                        ("deadline", "/deadline"),
                        ("justification", "/breakglass/justification"),
                    ],
                );
            }
        }
        BreakglassCmd::Close { id } => {
            let v = c
                .post(&format!("/v1/tasks/{id}/complete"), &json!({}))
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!("closed {id} ({})", v["state"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(())
}
