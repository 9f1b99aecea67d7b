//! `mandate lease`: the dynamic credentials the broker made, and whether
//! each is gone at its source (never a password).

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// List leases, newest first (rights: audit or tasks).
    List {
        /// Only this task's.
        #[arg(long, value_parser = path_segment)]
        task: Option<String>,
        /// Only those whose revocation failed and is being retried.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one lease.
    Show {
        #[arg(value_parser = path_segment)]
        id: String,
    },
}

pub async fn run(c: &Client, cmd: LeaseCmd, as_json: bool) -> Result<()> {
    c.require_token("lease")?;
    match cmd {
        LeaseCmd::List {
            task,
            failed,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(t) = task {
                q.push(format!("task={t}"));
            }
            if failed {
                q.push("failed=true".into());
            }
            let v = c.get(&format!("/v1/leases?{}", q.join("&"))).await?;
            if as_json {
                output::json(&v);
            } else {
                output::table(
                    v["leases"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("task", "/task"),
                        ("tool", "/tool"),
                        ("role", "/role"),
                        ("login", "/login"),
                        ("state", "/state"),
                        ("expires", "/expires_at"),
                        ("attempts", "/attempts"),
                        ("last error", "/last_error"),
                    ],
                );
            }
        }
        LeaseCmd::Show { id } => {
            let v = c.get(&format!("/v1/leases/{id}")).await?;
            if as_json {
                output::json(&v);
            } else {
                output::record(&v);
            }
        }
    }
    Ok(())
}
