//! `mandate webhook …`: the endpoints the broker tells of audit events.
//! The signing secret is printed once, at creation; the broker never shows
//! it again.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

const CREATE_HELP: &str = "\
Each event of the chosen kinds is POSTed to URL as JSON
  {\"type\": \"task.suspended\", \"timestamp\": \"…\", \"data\": {the audit event}}
with the Standard Webhooks headers webhook-id, webhook-timestamp and
webhook-signature (v1, HMAC-SHA256 with the printed whsec_… secret).
Verify with any Standard Webhooks library, e.g. in Python:
  from standardwebhooks import Webhook
  Webhook(secret).verify(body, headers)
Failed deliveries are retried (1 s doubling to 5 min) in order; an
endpoint that is down delays nothing else.

Examples:
  mandate webhook create --url https://pager.example/mandate
  mandate webhook create --url https://siem.example/in --kind 'task.*' --kind token.misuse";

#[derive(Subcommand)]
pub enum WebhookCmd {
    /// Add an endpoint; prints its signing secret (whsec_…) once.
    #[command(after_long_help = CREATE_HELP)]
    Create {
        /// Where to POST events: an http:// or https:// URL (redirects are not followed).
        #[arg(long)]
        url: String,
        /// An event kind (task.suspended) or a family (approval.*) to deliver
        /// (repeatable). Default: approval.*, breakglass.*, anomaly.*,
        /// token.misuse, task.suspended.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// What the endpoint is for (shown in `webhook list`).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List endpoints with their kinds and delivery state (never a secret).
    List,
    /// Delete an endpoint (`whk_…`): nothing more is sent to it.
    Delete {
        #[arg(value_parser = path_segment)]
        id: String,
    },
}

pub async fn run(c: &Client, cmd: WebhookCmd, as_json: bool) -> Result<()> {
    c.require_token("webhook")?;
    match cmd {
        WebhookCmd::Create {
            url,
            kinds,
            description,
        } => {
            let mut body = json!({"url": url, "description": description});
            if !kinds.is_empty() {
                body["kinds"] = json!(kinds);
            }
            let v = c.post("/v1/webhooks", &body).await?;
            if as_json {
                output::json(&v);
            } else {
                println!("{}", v["secret"].as_str().unwrap_or_default());
                eprintln!(
                    "webhook {} for {}; the signing secret above is shown once",
                    v["id"].as_str().unwrap_or_default(),
                    kinds_text(&v["kinds"])
                );
            }
        }
        WebhookCmd::List => {
            let v = c.get("/v1/webhooks").await?;
            if as_json {
                output::json(&v);
            } else {
                output::table(
                    v["webhooks"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("url", "/url"),
                        ("kinds", "/kinds"),
                        ("pending", "/delivery/pending_events"),
                        ("failing", "/delivery/attempts"),
                        ("last error", "/delivery/last_error"),
                        ("description", "/description"),
                    ],
                );
            }
        }
        WebhookCmd::Delete { id } => {
            let v = c.delete(&format!("/v1/webhooks/{id}")).await?;
            if as_json {
                output::json(&v);
            } else {
                println!("deleted {}", v["id"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn kinds_text(kinds: &Value) -> String {
    kinds
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
