use std::fmt;

/// Input that does not parse or validate. Always names the offending field so
/// that the API can say exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Prefix the field path, e.g. `actions[2]` inside `scope[0]`.
    pub fn within(mut self, parent: impl fmt::Display) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

/// A well-formed request that the domain rules refuse (scope too wide, task
/// not active, …). Distinct from [`Invalid`]: the input parsed, the answer is no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("{field}: tool `{tool}` is not among the agent's allowed tools")]
    ToolNotAllowed { field: String, tool: String },
    #[error("{field}: tool `{tool}` has no action `{action}`")]
    UnknownAction {
        field: String,
        tool: String,
        action: String,
    },
    #[error("{field}: tool `{tool}` is in environment `{tool_env}`, the agent in `{agent_env}`")]
    EnvironmentMismatch {
        field: String,
        tool: String,
        tool_env: String,
        agent_env: String,
    },
    #[error("{field}: `{requested}` is outside the task's scope")]
    OutsideScope { field: String, requested: String },
    #[error("{field}: {why}")]
    Delegation { field: String, why: String },
    #[error("task is {state}, not active")]
    TaskNotActive { state: String },
    #[error("task cannot go from {from} to {to}")]
    IllegalTransition { from: String, to: String },
}
