//! `mandate run --db TOOL:ROLE`: once the task is active, a database login
//! made for it (valid until its deadline) goes to the command as
//! `DATABASE_URL` and the `PG*` variables libpq and most drivers read.
//! When the command exits the task ends, and the broker drops the login
//! before it answers, so it is gone before `mandate run` exits.

use crate::client::Client;
use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct DbArgs {
    /// A tool with a database engine and one of its roles, e.g.
    /// orders-db:readonly (the task's scope must name that role): the
    /// command gets DATABASE_URL, PGHOST, PGPORT, PGDATABASE, PGUSER and
    /// PGPASSWORD for a login that lives exactly as long as the task.
    #[arg(long, value_name = "TOOL:ROLE")]
    db: Option<String>,
}

impl DbArgs {
    /// `(tool, role)`, refused before any task exists when malformed.
    pub fn check(&self) -> Result<Option<(&str, &str)>> {
        let Some(v) = &self.db else { return Ok(None) };
        match v.split_once(':') {
            Some((t, r)) if !t.is_empty() && !r.is_empty() && !r.contains(':') => {
                for part in [t, r] {
                    if !part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    }) {
                        bail!("--db: `{v}` must be TOOL:ROLE in a-z, 0-9, `-` and `_`");
                    }
                }
                Ok(Some((t, r)))
            }
            _ => bail!("--db: `{v}` must be TOOL:ROLE, e.g. orders-db:readonly"),
        }
    }

    /// The command's variables (none without `--db`).
    pub async fn env(
        &self,
        c: &Client,
        session: &str,
        task: &str,
    ) -> Result<Vec<(String, String)>> {
        let Some((tool, role)) = self.check()? else {
            return Ok(Vec::new());
        };
        let v = c
            .with_token(Some(session.to_owned()))
            .post(
                &format!("/v1/tasks/{task}/credentials/{tool}/{role}"),
                &serde_json::json!({}),
            )
            .await
            .with_context(|| format!("--db {tool}:{role}: no login was made"))?;
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("no `{k}` in the answer"))
        };
        let mut env = vec![
            ("DATABASE_URL".to_owned(), text("url")?),
            ("PGPASSWORD".to_owned(), text("password")?),
        ];
        if let Some(facts) = v["facts"].as_object() {
            for (k, val) in facts {
                if let Some(s) = val.as_str() {
                    env.push((k.clone(), s.to_owned()));
                }
            }
        }
        eprintln!(
            "mandate run: database login {} ({tool}:{role}, lease {}) until the task ends",
            v["login"].as_str().unwrap_or("?"),
            v["lease"].as_str().unwrap_or("?")
        );
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_and_role_are_checked_before_any_task() {
        let ok = DbArgs {
            db: Some("orders-db:readonly".into()),
        };
        assert_eq!(ok.check().unwrap(), Some(("orders-db", "readonly")));
        for bad in ["orders-db", ":ro", "db:", "db:ro:x", "DB:ro", "db:r o"] {
            let e = DbArgs {
                db: Some(bad.into()),
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("--db:"), "{bad}: {e}");
        }
        assert_eq!(DbArgs { db: None }.check().unwrap(), None);
    }
}
