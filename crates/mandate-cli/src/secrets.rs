//! `mandate secret …`: store, list, show, rotate. Values are read from a
//! file, an environment variable or stdin — never from a command-line
//! argument, where `ps` and shell history would keep them.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where the value comes from (stdin when neither is given).
#[derive(Args)]
pub struct ValueSource {
    /// Read the value from this file (a trailing newline is dropped).
    #[arg(long, conflicts_with = "from_env")]
    from_file: Option<PathBuf>,
    /// Read the value from this environment variable.
    #[arg(long, value_name = "VAR")]
    from_env: Option<String>,
}

impl ValueSource {
    fn read(&self) -> Result<Zeroizing<String>> {
        let mut value = Zeroizing::new(String::new());
        if let Some(path) = &self.from_file {
            *value = std::fs::read_to_string(path)
                .with_context(|| format!("--from-file: cannot read {}", path.display()))?;
        } else if let Some(var) = &self.from_env {
            *value = std::env::var(var)
                .with_context(|| format!("--from-env: environment variable {var} is not set"))?;
        } else {
            std::io::stdin()
                .read_to_string(&mut value)
                .context("reading the value from stdin")?;
        }
        while value.ends_with('\n') || value.ends_with('\r') {
            value.pop();
        }
        if value.is_empty() {
            bail!("the value is empty (give --from-file, --from-env, or pipe it on stdin)");
        }
        Ok(value)
    }
}

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a tool's upstream credential (sealed at once; never printed).
    Put {
        name: String,
        /// The tool whose requests the proxy injects it into (one secret per tool).
        #[arg(long)]
        tool: String,
        /// model, tool, retrieval, deployment, database or human-exception.
        #[arg(long)]
        class: String,
        /// The accountable team or service.
        #[arg(long)]
        owner: String,
        /// A person's own credential: an exception that needs --expires.
        #[arg(long)]
        human_credential: bool,
        /// Used by several agents: flagged in every listing.
        #[arg(long)]
        shared: bool,
        /// Expiry: a date (2026-12-31, end of that day UTC) or Unix seconds.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        source: ValueSource,
    },
    /// List secrets: metadata, flags, where they are used. Never values.
    List,
    /// Show one secret's metadata.
    Show {
        #[arg(value_parser = path_segment)]
        name: String,
    },
    /// Replace the value; proxies switch to it without a restart.
    Rotate {
        #[arg(value_parser = path_segment)]
        name: String,
        /// Say what the credential is now (e.g. `tool` when an
        /// application's token replaces a person's `human-exception`).
        #[arg(long)]
        class: Option<String>,
        #[command(flatten)]
        source: ValueSource,
    },
    /// Forget a secret you have revoked at its provider (the proxy stops
    /// injecting it at once).
    Delete {
        #[arg(value_parser = path_segment)]
        name: String,
    },
}

pub(crate) fn parse_expiry(s: &str) -> Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &fmt)
        .with_context(|| format!("--expires: `{s}` is neither YYYY-MM-DD nor Unix seconds"))?;
    Ok(date.with_hms(23, 59, 59)?.assume_utc().unix_timestamp())
}

pub async fn run(c: &Client, cmd: SecretCmd, as_json: bool) -> Result<()> {
    c.require_token("secret")?;
    let v: Value = match cmd {
        SecretCmd::Put {
            name,
            tool,
            class,
            owner,
            human_credential,
            shared,
            expires,
            description,
            source,
        } => {
            let expires_at = expires.as_deref().map(parse_expiry).transpose()?;
            let value = source.read()?;
            let mut body = json!({"name": name, "tool": tool, "class": class, "owner": owner,
                "human_credential": human_credential, "shared": shared, "description": description,
                "value": value.as_str()});
            if let Some(e) = expires_at {
                body["expires_at"] = json!(e);
            }
            let v = c.post("/v1/secrets", &body).await;
            if let Some(s) = body.get_mut("value") {
                // serde_json has no zeroize; overwrite our copy at least.
                *s = Value::Null;
            }
            v?
        }
        SecretCmd::List => {
            let v = c.get("/v1/secrets").await?;
            if !as_json {
                output::table(
                    v["secrets"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[
                        ("name", "/name"),
                        ("tool", "/tool"),
                        ("class", "/class"),
                        ("owner", "/owner"),
                        ("version", "/version"),
                        ("human", "/human_credential"),
                        ("shared", "/shared"),
                        ("expires", "/expires_at"),
                        ("last used", "/last_used_at"),
                        ("agents", "/used_by/agents"),
                    ],
                );
                return Ok(());
            }
            v
        }
        SecretCmd::Show { name } => c.get(&format!("/v1/secrets/{name}")).await?,
        SecretCmd::Rotate {
            name,
            class,
            source,
        } => {
            let value = source.read()?;
            let mut body = json!({"value": value.as_str()});
            if let Some(class) = class {
                body["class"] = json!(class);
            }
            c.post(&format!("/v1/secrets/{name}/rotate"), &body).await?
        }
        SecretCmd::Delete { name } => c.delete(&format!("/v1/secrets/{name}")).await?,
    };
    if as_json {
        output::json(&v);
    } else {
        output::record(&v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_dates_and_seconds_and_names_the_flag() {
        assert_eq!(parse_expiry("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_expiry("2026-12-31").unwrap(), 1_798_761_599);
        let e = parse_expiry("next tuesday").unwrap_err().to_string();
        assert!(e.starts_with("--expires"), "{e}");
    }
}
