//! `POST /v1/approvals/resolve` (admin right `proxy`): a proxy asks what
//! stands for a request policy held for a person. The broker answers with
//! the approval that speaks for it, opening the request if none does, and
//! spends a `once` approval that lets the request through.

use mandate_core::{AgentName, Approval, Held, TaskId};
use serde::{Deserialize, Serialize};

/// A held request: whose, what, and the policies that hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAsk {
    pub agent: AgentName,
    pub task: TaskId,
    pub held: Held,
    pub reasons: Vec<String>,
    pub policy_ids: Vec<String>,
    /// Which request this is (the proxy's request id), for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// Granted: go ahead (a `once` approval is now spent).
    Allowed,
    /// Waiting for a person.
    Waiting,
    /// Denied, final.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    pub outcome: ApprovalOutcome,
    pub approval: Approval,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ask_reads_as_the_proxy_sends_it_and_refuses_unknown_fields() {
        let ask: ApprovalAsk = serde_json::from_value(json!({
            "agent": "bot", "task": "task_0123456789abcdef0123456789abcdef",
            "held": {"kind": "request", "tool": "pay", "action": "charges:write", "resource": "acct:1"},
            "reasons": ["r"], "policy_ids": ["p"]
        }))
        .unwrap();
        assert!(matches!(ask.held, mandate_core::Held::Request { .. }));
        assert_eq!(
            serde_json::to_value(ApprovalOutcome::Allowed).unwrap(),
            json!("allowed")
        );
        let extra = serde_json::from_value::<ApprovalAsk>(json!({
            "agent": "bot", "task": "task_0123456789abcdef0123456789abcdef",
            "held": {"kind": "request", "tool": "pay", "action": "a", "resource": "r"},
            "reasons": [], "policy_ids": [], "admin": true
        }));
        assert!(extra.is_err());
    }
}
