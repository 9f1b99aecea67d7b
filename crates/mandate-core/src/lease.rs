//! A lease: the record of one dynamic credential (a database login), tied
//! to its task. It is durable before the credential is handed out (written
//! while the source makes it, or before where the source cannot list what
//! it made) and ends only when the source confirms the credential is gone,
//! so a crash anywhere leaves a row, or a login named after its task, that
//! says what to destroy.

use crate::{AgentName, Invalid, LeaseId, TaskId, ToolName, UnixTime};
use serde::{Deserialize, Serialize};

closed_enum!(
    /// Where a lease is in its life.
    LeaseState, "state", {
        /// Handed out (or being made); its task is live.
        Active => "active",
        /// Its task ended (or issuing failed): to be destroyed at the source.
        Revoking => "revoking",
        /// A revocation attempt failed; retried with backoff, and an alarm.
        Failed => "failed",
        /// Confirmed gone at the source.
        Revoked => "revoked",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub task: TaskId,
    pub agent: AgentName,
    pub tool: ToolName,
    pub role: String,
    /// The login made at the source (not a secret; its password is).
    pub login: String,
    pub state: LeaseState,
    pub created_at: UnixTime,
    /// The task's deadline: the source's own expiry for the credential.
    pub expires_at: UnixTime,
    #[serde(default)]
    pub revoked_at: Option<UnixTime>,
    /// Failed revocation attempts so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<UnixTime>,
}

/// Seconds before the next revocation attempt after `attempts` failures:
/// 1, 2, 4 … capped at five minutes.
pub fn lease_backoff(attempts: u32) -> i64 {
    (1i64 << attempts.saturating_sub(1).min(9)).min(300)
}

/// A role name as a task's scope and the credential route name it.
pub fn role_name(raw: &str) -> Result<&str, Invalid> {
    if raw.is_empty()
        || raw.len() > 63
        || !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(
            "role",
            "must be 1 to 63 characters of a-z, 0-9, `_` and `-`",
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let b: Vec<i64> = (1..=11).map(lease_backoff).collect();
        assert_eq!(b, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(lease_backoff(0), 1);
    }

    #[test]
    fn role_names_are_lowercase_words() {
        assert_eq!(role_name("read-only_2").unwrap(), "read-only_2");
        for bad in ["", "Admin", "a b", "x;drop", &"r".repeat(64)] {
            assert_eq!(role_name(bad).unwrap_err().field, "role", "{bad}");
        }
    }
}
