use crate::{Invalid, UnixTime};
use serde::{Deserialize, Serialize};

/// What an admin token may change. The root token holds every right and is
/// the only one that can mint further admin tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRight {
    Root,
    Agents,
    Tools,
    Tasks,
    Audit,
    Policy,
    /// Store, rotate and list secrets (never read values).
    Secrets,
    /// What a credential-injection proxy needs: the catalog, secret values
    /// for injection, tasks and agents by id, and posting tool-call records.
    Proxy,
    /// Ask for decisions (`/v1/authorize`), as a gateway or resource server does.
    Verify,
    /// Read `/metrics`, as a Prometheus scraper does.
    Metrics,
    /// Decide approval requests (approve or deny).
    Approve,
    /// Open break-glass tasks.
    Breakglass,
    /// Add, list and delete webhook endpoints (each shown its signing
    /// secret once, at creation).
    Webhooks,
}

impl AdminRight {
    pub const ALL: &'static [AdminRight] = &[
        AdminRight::Root,
        AdminRight::Agents,
        AdminRight::Tools,
        AdminRight::Tasks,
        AdminRight::Audit,
        AdminRight::Policy,
        AdminRight::Secrets,
        AdminRight::Proxy,
        AdminRight::Verify,
        AdminRight::Metrics,
        AdminRight::Approve,
        AdminRight::Breakglass,
        AdminRight::Webhooks,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRight::Root => "root",
            AdminRight::Agents => "agents",
            AdminRight::Tools => "tools",
            AdminRight::Tasks => "tasks",
            AdminRight::Audit => "audit",
            AdminRight::Policy => "policy",
            AdminRight::Secrets => "secrets",
            AdminRight::Proxy => "proxy",
            AdminRight::Verify => "verify",
            AdminRight::Metrics => "metrics",
            AdminRight::Approve => "approve",
            AdminRight::Breakglass => "breakglass",
            AdminRight::Webhooks => "webhooks",
        }
    }
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        AdminRight::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(
                    "rights",
                    format!(
                        "`{}` is not one of: {}",
                        s.chars().take(40).collect::<String>(),
                        AdminRight::ALL[1..]
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }
}

/// An admin credential as stored: only the SHA-256 of the bearer value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: String,
    #[serde(skip_serializing)]
    pub hash: String,
    pub rights: Vec<AdminRight>,
    pub description: String,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    #[serde(default)]
    pub revoked_at: Option<UnixTime>,
    /// The agent this token was issued to, if any (a supervising agent
    /// acting as approver): it never approves that agent's requests, nor
    /// those of agents with the same owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::AgentName>,
}

impl AdminToken {
    /// Usable at `now`: neither expired nor revoked.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    pub fn allows(&self, right: AdminRight, now: UnixTime) -> bool {
        self.is_live(now)
            && (self.rights.contains(&AdminRight::Root) || self.rights.contains(&right))
    }
}
