use crate::{AgentName, Jti, ScopeItem, TaskId, UnixTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One credential minted under a task: an access token for one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub jti: Jti,
    pub task: TaskId,
    pub agent: AgentName,
    pub scope: ScopeItem,
    pub audience: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
}

/// Maps a federated workload identity (`iss` + `sub`, optionally more claims
/// that must match exactly) to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub agent: AgentName,
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token, by `jti`.
    Token,
    /// Every grant of a task, by task id.
    Task,
    /// Every session and task of an agent, by agent name.
    Agent,
    /// Every token a withdrawn signing key signed, by `kid`.
    Key,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::Task => "task",
            RevocationKind::Agent => "agent",
            RevocationKind::Key => "key",
        }
    }
}

/// One entry of the revocation feed. It can be forgotten after
/// `expires_at`: by then every token it covers has expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub seq: u64,
    pub kind: RevocationKind,
    pub id: String,
    pub revoked_at: UnixTime,
    pub expires_at: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_kind_names_match_the_wire_format() {
        // Stores and the audit chain key revocations by `as_str`; feeds
        // carry the serde form. A mismatch would lose revocations.
        for kind in [
            RevocationKind::Token,
            RevocationKind::Task,
            RevocationKind::Agent,
            RevocationKind::Key,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
    }
}
