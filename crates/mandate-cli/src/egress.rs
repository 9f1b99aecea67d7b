//! `mandate run --egress-proxy URL`: the command's `HTTPS_PROXY` points at
//! the proxy's egress listener with an access token of the command's own
//! task, so whatever it runs (curl, an SDK) reaches only the hosts of the
//! task's `reveal` tools; the proxy refuses and audits the rest.
//!
//! The token sits in the command's environment. `mandate run` keeps the
//! operator's `MANDATE_TOKEN` out of it because that is someone else's
//! power; this token is the agent's own, for the task it is running, and
//! worth less than the session file the command already has (which can
//! open new tasks). It is minted once: a command that outlives it (the
//! tool's `max_ttl_secs`, at most the task's deadline) has new tunnels
//! refused with `token_expired`, which `mandate run` warns of up front.

use crate::agent_side::exchange;
use crate::client::Client;
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct EgressArgs {
    /// The proxy's egress listener (`egress_listen`), e.g.
    /// http://127.0.0.1:8401: the command gets HTTPS_PROXY pointing there
    /// with a token of its task, so it reaches only the hosts the task's
    /// reveal tools declare.
    #[arg(long, value_name = "URL", requires = "egress_resource")]
    egress_proxy: Option<String>,
    /// The audience of a tool in --scope to mint that token for (any one:
    /// the proxy admits the hosts of every reveal tool in the task).
    #[arg(long, value_name = "AUDIENCE", requires = "egress_proxy")]
    egress_resource: Option<String>,
}

/// `http://host:port` of the egress listener, checked before a task opens.
fn listener(url: &str) -> Result<&str> {
    let authority = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains(['/', '@', '?', '#']))
        .filter(|a| !a.chars().any(|c| c.is_whitespace() || c.is_control()));
    authority.context("--egress-proxy must be http://host:port (the proxy's egress listener)")
}

/// `NO_PROXY` with the broker's host added, so the command still reaches
/// the broker (its own `mandate` calls) directly.
fn no_proxy(existing: Option<String>, broker: &str) -> String {
    let host = broker
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?', '#']).next())
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    match existing.filter(|e| !e.trim().is_empty()) {
        Some(e) => format!("{e},{host}"),
        None => host.to_owned(),
    }
}

impl EgressArgs {
    /// Refuse a bad URL before any task exists.
    pub fn check(&self) -> Result<()> {
        if let Some(u) = &self.egress_proxy {
            listener(u)?;
        }
        Ok(())
    }

    /// The variables that send the command's HTTPS through the egress
    /// listener (none without `--egress-proxy`), with a token of `task`.
    pub async fn env(
        &self,
        c: &Client,
        session: &str,
        task: &str,
        deadline: u64,
    ) -> Result<Vec<(&'static str, String)>> {
        let (Some(url), Some(resource)) = (&self.egress_proxy, &self.egress_resource) else {
            return Ok(Vec::new());
        };
        let authority = listener(url)?;
        let v = exchange(c, session, task, resource, None, None)
            .await
            .context("--egress-resource: no token for the egress proxy")?;
        let token = v["access_token"]
            .as_str()
            .context("no access_token in the token endpoint's answer")?;
        let expires_in = v["expires_in"].as_u64().unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now + expires_in < deadline {
            eprintln!(
                "mandate run: the egress token expires in {expires_in}s, before the task's deadline; tunnels opened after that are refused (token_expired)"
            );
        }
        let proxy = format!("http://mandate:{token}@{authority}");
        let no_proxy = no_proxy(std::env::var("NO_PROXY").ok(), &c.base);
        Ok(vec![
            ("HTTPS_PROXY", proxy.clone()),
            ("https_proxy", proxy),
            ("NO_PROXY", no_proxy.clone()),
            ("no_proxy", no_proxy),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_proxy_is_a_plain_http_host_and_port() {
        assert_eq!(listener("http://127.0.0.1:8401").unwrap(), "127.0.0.1:8401");
        assert_eq!(
            listener("http://proxy.internal:8401/").unwrap(),
            "proxy.internal:8401"
        );
        for bad in [
            "https://p:8401",
            "p:8401",
            "http://",
            "http://u:p@p:8401",
            "http://p:8401/x",
            "http://p 1",
        ] {
            assert!(listener(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_broker_is_kept_out_of_the_proxy() {
        assert_eq!(
            no_proxy(None, "https://broker.internal:8200"),
            "broker.internal"
        );
        assert_eq!(
            no_proxy(Some("localhost".into()), "http://127.0.0.1:8200/"),
            "localhost,127.0.0.1"
        );
        assert_eq!(no_proxy(Some(" ".into()), "http://b"), "b");
    }
}
