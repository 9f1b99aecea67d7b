//! Step-up approval: a person's yes (or no) to exactly one held thing — a
//! task waiting to start, a token for one tool, or one request — recorded
//! with who asked, what, why and until when.
//!
//! The rules live here: what an approval covers (exactly what was held,
//! nothing wider), how long it stands, who may decide it (never the agent
//! that asked, nor one of its chain or its owner), and that a decision is
//! final.

use crate::{
    Action, AgentName, AnomalyRule, ApprovalId, Environment, Invalid, OwnerName, ResourcePattern,
    Scope, TaskId, ToolName, UnixTime,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Held {
    /// A task that may not start until approved, with the scope it asked.
    Task { scope: Scope },
    /// A token for one tool of a live task, as the exchange asked for it.
    Grant {
        tool: ToolName,
        actions: Vec<Action>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resources: Option<Vec<ResourcePattern>>,
    },
    /// One request with a token: this action on this resource (and, when
    /// the asker stated one, this amount).
    Request {
        tool: ToolName,
        action: String,
        resource: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<i64>,
    },
    /// A task the anomaly detector suspended for a person to look at:
    /// approving resumes it, denying revokes it (and its subtree).
    Resume { rule: AnomalyRule },
}

impl Held {
    /// The tool it concerns, for a grant or request.
    pub fn tool(&self) -> Option<&ToolName> {
        match self {
            Held::Task { .. } | Held::Resume { .. } => None,
            Held::Grant { tool, .. } | Held::Request { tool, .. } => Some(tool),
        }
    }

    /// A stable key for "the same thing asked again" within one task: the
    /// canonical JSON of what is held (serde keeps field order fixed).
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

closed_enum!(
    /// Where an approval stands. `expired` is also what a pending or
    /// granted one reads as once its time is up (see [`Approval::state_at`]).
    ApprovalState, "state", {
        Pending => "pending",
        Granted => "granted",
        Denied => "denied",
        Used => "used",
        Expired => "expired",
    }
);

/// How long a granted approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extent {
    /// The next matching use, before the request's validity ends.
    Once,
    /// Every matching use until `valid_until`.
    Timebox,
}

/// A person's verdict on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve {
        extent: Extent,
        for_secs: Option<u32>,
    },
    Deny,
}

/// The decision recorded on an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// The approver as the audit log names it (`admin:<token id>`).
    pub by: String,
    pub at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<Extent>,
}

/// An approval request and, once decided, its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub task: TaskId,
    /// Who asks: the task's agent, its owner and environment, and the
    /// agents it was delegated through (root first).
    pub agent: AgentName,
    pub owner: OwnerName,
    pub environment: Environment,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<AgentName>,
    pub held: Held,
    /// Why: the task's intent and the policies that held it.
    pub intent: String,
    pub policy_ids: Vec<String>,
    pub reasons: Vec<String>,
    pub state: ApprovalState,
    pub requested_at: UnixTime,
    /// Pending: until when a person may decide it. Granted: until when it
    /// may be used. Never past the task's deadline.
    pub valid_until: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<UnixTime>,
}

/// Who is deciding: an admin token, possibly issued to an agent (a
/// supervising agent acting as approver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub actor: String,
    /// The agent the token was issued to, with that agent's owner.
    pub agent: Option<(AgentName, OwnerName)>,
}

/// Why a verdict cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval {id} is already {state}; a decision is final")]
    Decided {
        id: ApprovalId,
        state: ApprovalState,
    },
    #[error("approval {id} expired at {at} before anyone decided it")]
    Expired { id: ApprovalId, at: UnixTime },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// What an approval means for the thing it holds, right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Granted and usable: go ahead (a `once` approval is then used).
    Allows,
    /// Nobody has decided yet.
    Waits,
    /// Denied: final for this request.
    Refuses,
    /// Used, or its time ran out: a new request may be opened.
    Lapsed,
}

impl Approval {
    /// The state as of `now`: pending or granted past `valid_until` reads
    /// as expired, whatever the stored state still says.
    pub fn state_at(&self, now: UnixTime) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Granted if now >= self.valid_until => {
                ApprovalState::Expired
            }
            s => s,
        }
    }

    /// Does this approval speak for `held` on `task`? Only for exactly the
    /// same thing: another action, resource, amount, tool or task is a new
    /// request, never covered by this one.
    pub fn covers(&self, task: &TaskId, held: &Held) -> bool {
        &self.task == task && &self.held == held
    }

    pub fn standing(&self, now: UnixTime) -> Standing {
        match self.state_at(now) {
            ApprovalState::Pending => Standing::Waits,
            ApprovalState::Granted => Standing::Allows,
            ApprovalState::Denied => Standing::Refuses,
            ApprovalState::Used | ApprovalState::Expired => Standing::Lapsed,
        }
    }

    /// Record that a granted approval let its thing through at `now`: a
    /// `once` approval is then used up.
    pub fn use_at(&mut self, now: UnixTime) {
        if self.decided.as_ref().and_then(|d| d.extent) == Some(Extent::Once) {
            self.state = ApprovalState::Used;
            self.used_at = Some(now);
        }
    }

    /// May `approver` decide this request? Never the agent that asked, an
    /// agent it was delegated through, nor an agent of the same owner.
    pub fn check_approver(&self, approver: &Approver) -> Result<(), ApprovalError> {
        let Some((agent, owner)) = &approver.agent else {
            return Ok(());
        };
        if agent == &self.agent || self.chain.contains(agent) {
            return Err(ApprovalError::Conflict(format!(
                "agent `{agent}` cannot approve its own request or one delegated from it"
            )));
        }
        if owner == &self.owner {
            return Err(ApprovalError::Conflict(format!(
                "agent `{agent}` has the same owner (`{owner}`) as the agent asking"
            )));
        }
        Ok(())
    }

    /// Record `verdict` by `approver` at `now`. Approving covers exactly
    /// what was held: once, or for `for_secs` (at most `max_secs`, never
    /// past `deadline`, the task's). Denying is final.
    pub fn decide(
        &mut self,
        verdict: Verdict,
        approver: &Approver,
        note: Option<String>,
        now: UnixTime,
        max_secs: u32,
        deadline: UnixTime,
    ) -> Result<(), ApprovalError> {
        match self.state_at(now) {
            ApprovalState::Pending => {}
            ApprovalState::Expired if self.state == ApprovalState::Pending => {
                return Err(ApprovalError::Expired {
                    id: self.id.clone(),
                    at: self.valid_until,
                });
            }
            state => {
                return Err(ApprovalError::Decided {
                    id: self.id.clone(),
                    state,
                });
            }
        }
        self.check_approver(approver)?;
        if let Some(n) = &note
            && n.chars().count() > 1024
        {
            return Err(Invalid::new("note", "must be at most 1024 characters").into());
        }
        let extent = match verdict {
            Verdict::Deny => {
                self.state = ApprovalState::Denied;
                None
            }
            Verdict::Approve { extent, for_secs } => {
                if matches!(self.held, Held::Task { .. } | Held::Resume { .. })
                    && extent == Extent::Timebox
                {
                    return Err(Invalid::new(
                        "for_secs",
                        "a task's start or resumption is approved once; its deadline bounds it",
                    )
                    .into());
                }
                match (extent, for_secs) {
                    (Extent::Once, Some(_)) => {
                        return Err(Invalid::new(
                            "for_secs",
                            "only a time-boxed approval takes a duration",
                        )
                        .into());
                    }
                    (Extent::Timebox, None) => {
                        return Err(Invalid::new(
                            "for_secs",
                            "a time-boxed approval needs a duration",
                        )
                        .into());
                    }
                    (Extent::Timebox, Some(s)) if s == 0 || s > max_secs => {
                        return Err(Invalid::new(
                            "for_secs",
                            format!("must be between 1 and {max_secs} (approval_max_secs)"),
                        )
                        .into());
                    }
                    (Extent::Timebox, Some(s)) => {
                        self.valid_until = (now + i64::from(s)).min(deadline);
                    }
                    (Extent::Once, None) => self.valid_until = self.valid_until.min(deadline),
                }
                self.state = ApprovalState::Granted;
                Some(extent)
            }
        };
        self.decided = Some(Decided {
            by: approver.actor.clone(),
            at: now,
            note,
            extent,
        });
        Ok(())
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Task { .. } => f.write_str("the task's start"),
            Held::Resume { rule } => write!(f, "resuming the task after anomaly `{rule}`"),
            Held::Grant { tool, actions, .. } => {
                let actions: Vec<&str> = actions.iter().map(Action::as_str).collect();
                write!(f, "a token for `{tool}` ({})", actions.join(" "))
            }
            Held::Request {
                tool,
                action,
                resource,
                amount,
            } => {
                write!(f, "`{action}` on `{resource}` at `{tool}`")?;
                match amount {
                    Some(a) => write!(f, " (amount {a})"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
