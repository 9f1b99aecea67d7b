//! The task (mandate) and its state machine.

use crate::{AgentName, Delegation, Environment, RuleViolation, Scope, TaskId, UnixTime};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    PendingApproval,
    Active,
    Suspended,
    Completed,
    Expired,
    Revoked,
}

impl TaskState {
    pub const ALL: &'static [TaskState] = &[
        TaskState::PendingApproval,
        TaskState::Active,
        TaskState::Suspended,
        TaskState::Completed,
        TaskState::Expired,
        TaskState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::PendingApproval => "pending_approval",
            TaskState::Active => "active",
            TaskState::Suspended => "suspended",
            TaskState::Completed => "completed",
            TaskState::Expired => "expired",
            TaskState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Result<Self, crate::Invalid> {
        TaskState::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                crate::Invalid::new(
                    "state",
                    format!(
                        "`{}` is not one of: {}",
                        s.chars().take(40).collect::<String>(),
                        TaskState::ALL
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// The state as of `now` of a task stored in this state with this
    /// deadline: an active task past its deadline is expired even before
    /// the sweeper has recorded it.
    pub fn at(self, deadline: UnixTime, now: UnixTime) -> TaskState {
        if self == TaskState::Active && now >= deadline {
            TaskState::Expired
        } else {
            self
        }
    }

    /// Terminal states never change again; their grants are dead.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Expired | TaskState::Revoked
        )
    }

    /// The legal edges of the state machine.
    pub fn can_become(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (PendingApproval, Active | Revoked | Expired)
                | (Active, Completed | Expired | Revoked | Suspended)
                | (Suspended, Active | Revoked | Expired)
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mandate: an agent, a purpose, a scope, a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub agent: AgentName,
    pub intent: String,
    pub scope: Scope,
    pub environment: Environment,
    pub state: TaskState,
    /// Who asked for this work: a person or system, free text for the audit trail.
    pub requested_by: Option<String>,
    /// Why the policy decided what it did (policy ids and messages).
    pub reasons: Vec<String>,
    pub created_at: UnixTime,
    pub deadline: UnixTime,
    pub ended_at: Option<UnixTime>,
    /// Set on a task another task delegated: its parent, root and chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
    /// The model the task's agent declared when the task started (or when
    /// policy last let it go on under another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::Model>,
    /// The approval request that held this task's start for a person,
    /// when policy held it (granted once the task is active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::ApprovalId>,
    /// Set on an emergency task an operator opened: it skipped approval,
    /// and every token and record of it says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakglass: Option<crate::BreakGlass>,
}

impl Task {
    /// Move to `to`, or refuse with the illegal edge named.
    pub fn transition(&mut self, to: TaskState, now: UnixTime) -> Result<(), RuleViolation> {
        if !self.state.can_become(to) {
            return Err(RuleViolation::IllegalTransition {
                from: self.state.to_string(),
                to: to.to_string(),
            });
        }
        self.state = to;
        if to.is_terminal() {
            self.ended_at = Some(now);
        }
        Ok(())
    }

    /// Active and before its deadline. The sweeper lags the clock, so the
    /// deadline is checked here too rather than trusting `state` alone.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.state == TaskState::Active && now < self.deadline
    }

    /// The state as of `now`: an active task past its deadline is expired
    /// even before the sweeper has recorded it.
    pub fn state_at(&self, now: UnixTime) -> TaskState {
        self.state.at(self.deadline, now)
    }

    pub fn remaining_secs(&self, now: UnixTime) -> i64 {
        self.deadline - now
    }
}

/// A task's intent as given (trimmed), or why it cannot be one.
pub fn intent(raw: &str) -> Result<String, crate::Invalid> {
    let intent = raw.trim();
    if intent.is_empty() || intent.len() > 2048 {
        return Err(crate::Invalid::new(
            "intent",
            "must be 1 to 2048 characters",
        ));
    }
    Ok(intent.to_owned())
}

/// A grant's lifetime: the least of what was asked, the tool's maximum and
/// what is left of the task. A grant never outlives its task.
pub fn cap_grant_ttl(
    requested: Option<u32>,
    tool_max: u32,
    task: &Task,
    now: UnixTime,
) -> Result<u32, RuleViolation> {
    if !task.is_live(now) {
        let state = if task.state == TaskState::Active {
            TaskState::Expired
        } else {
            task.state
        };
        return Err(RuleViolation::TaskNotActive {
            state: state.to_string(),
        });
    }
    let remaining = u32::try_from(task.remaining_secs(now)).unwrap_or(u32::MAX);
    Ok(requested
        .unwrap_or(u32::MAX)
        .max(1)
        .min(tool_max)
        .min(remaining))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RandomId;

    fn task(state: TaskState, deadline: UnixTime) -> Task {
        Task {
            id: TaskId::from_random([1; 16]),
            agent: AgentName::parse("a").unwrap(),
            intent: "x".into(),
            scope: serde_json::from_value(serde_json::json!([{"tool":"t","actions":["a"]}]))
                .unwrap(),
            environment: Environment::Staging,
            state,
            requested_by: None,
            reasons: vec![],
            created_at: 0,
            deadline,
            ended_at: None,
            delegation: None,
            model: None,
            approval: None,
            breakglass: None,
        }
    }

    #[test]
    fn state_at_expires_an_active_task_at_its_deadline_only() {
        let t = task(TaskState::Active, 1000);
        assert_eq!(t.state_at(999), TaskState::Active);
        assert_eq!(t.state_at(1000), TaskState::Expired);
        assert_eq!(
            task(TaskState::Completed, 1000).state_at(2000),
            TaskState::Completed
        );
    }

    #[test]
    fn terminal_states_are_final() {
        for &from in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            for &to in TaskState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn grant_ttl_is_capped_by_task_remaining_and_tool_max() {
        let t = task(TaskState::Active, 1000);
        assert_eq!(cap_grant_ttl(None, 600, &t, 0).unwrap(), 600);
        assert_eq!(cap_grant_ttl(Some(60), 600, &t, 0).unwrap(), 60);
        assert_eq!(cap_grant_ttl(None, 600, &t, 900).unwrap(), 100);
        assert_eq!(cap_grant_ttl(Some(0), 600, &t, 900).unwrap(), 1);
    }

    #[test]
    fn token_for_completed_or_overdue_task_is_refused() {
        assert!(cap_grant_ttl(None, 600, &task(TaskState::Completed, 1000), 0).is_err());
        assert!(cap_grant_ttl(None, 600, &task(TaskState::Active, 1000), 1000).is_err());
        assert!(cap_grant_ttl(None, 600, &task(TaskState::PendingApproval, 1000), 0).is_err());
    }

    #[test]
    fn state_names_match_the_wire_format_and_parse_back() {
        // `as_str` is what stores and filters use; serde is what the API
        // speaks. They must agree, and every name must parse to its state.
        for &state in TaskState::ALL {
            let wire = serde_json::to_value(state).unwrap();
            assert_eq!(wire, serde_json::json!(state.as_str()));
            assert_eq!(state.to_string(), state.as_str());
            assert_eq!(TaskState::parse(state.as_str()).unwrap(), state);
        }
        assert!(TaskState::parse("running").is_err());
    }

    #[test]
    fn refused_grants_name_the_state_as_of_now() {
        // An active task past its deadline is reported as expired, not active.
        let refused = |t: &Task, now| cap_grant_ttl(None, 600, t, now).unwrap_err();
        assert_eq!(
            refused(&task(TaskState::Active, 1000), 1000),
            RuleViolation::TaskNotActive {
                state: "expired".into()
            }
        );
        assert_eq!(
            refused(&task(TaskState::Suspended, 1000), 0),
            RuleViolation::TaskNotActive {
                state: "suspended".into()
            }
        );
    }

    #[test]
    fn illegal_transitions_name_both_states() {
        let mut t = task(TaskState::Completed, 1000);
        assert_eq!(
            t.transition(TaskState::Active, 6),
            Err(RuleViolation::IllegalTransition {
                from: "completed".into(),
                to: "active".into()
            })
        );
    }

    #[test]
    fn an_intent_is_trimmed_and_bounded() {
        assert_eq!(intent("  triage issues ").unwrap(), "triage issues");
        for bad in ["", "   ", &"x".repeat(2049)] {
            assert_eq!(intent(bad).unwrap_err().field, "intent");
        }
        assert!(intent(&format!(" {} ", "x".repeat(2048))).is_ok());
    }

    #[test]
    fn transition_records_end_time() {
        let mut t = task(TaskState::Active, 1000);
        t.transition(TaskState::Completed, 5).unwrap();
        assert_eq!(t.ended_at, Some(5));
        assert!(t.transition(TaskState::Active, 6).is_err());
    }
}
