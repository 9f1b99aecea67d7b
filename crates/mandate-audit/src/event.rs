use serde::{Deserialize, Serialize};
use std::fmt;

/// What happened. The dotted names are what SIEM rules match on; keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "owner.created")]
    OwnerCreated,
    #[serde(rename = "agent.created")]
    AgentCreated,
    #[serde(rename = "agent.revoked")]
    AgentRevoked,
    #[serde(rename = "agent.binding_added")]
    AgentBindingAdded,
    #[serde(rename = "agent.join_token_issued")]
    JoinTokenIssued,
    #[serde(rename = "agent.key_enrolled")]
    AgentKeyEnrolled,
    #[serde(rename = "tool.created")]
    ToolCreated,
    #[serde(rename = "tool.updated")]
    ToolUpdated,
    #[serde(rename = "login.succeeded")]
    LoginSucceeded,
    #[serde(rename = "login.failed")]
    LoginFailed,
    #[serde(rename = "task.created")]
    TaskCreated,
    #[serde(rename = "task.denied")]
    TaskDenied,
    #[serde(rename = "task.delegated")]
    TaskDelegated,
    #[serde(rename = "task.completed")]
    TaskCompleted,
    #[serde(rename = "task.revoked")]
    TaskRevoked,
    #[serde(rename = "task.expired")]
    TaskExpired,
    /// Paused (by an operator, or for token misuse): its tokens are
    /// revoked and everything delegated below it ends.
    #[serde(rename = "task.suspended")]
    TaskSuspended,
    #[serde(rename = "task.resumed")]
    TaskResumed,
    /// Its scope or intent changed (`rescope`), or its agent's declared
    /// model or version did.
    #[serde(rename = "task.context_changed")]
    TaskContextChanged,
    #[serde(rename = "grant.minted")]
    GrantMinted,
    #[serde(rename = "grant.refused")]
    GrantRefused,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A verified token presented as its holder never would (relayed,
    /// replayed, at another tool, after its task ended), with the evidence.
    #[serde(rename = "token.misuse")]
    TokenMisuse,
    #[serde(rename = "decision")]
    Decision,
    #[serde(rename = "admin_token.created")]
    AdminTokenCreated,
    #[serde(rename = "admin_token.revoked")]
    AdminTokenRevoked,
    #[serde(rename = "policy.reloaded")]
    PolicyReloaded,
    /// Changed policy files failed validation; the previous set stays.
    #[serde(rename = "policy.rejected")]
    PolicyRejected,
    /// The chain's head, signed by the broker's key (every
    /// `audit_checkpoint_secs` when there is something new).
    #[serde(rename = "audit.checkpoint")]
    AuditCheckpoint,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "secret.stored")]
    SecretStored,
    #[serde(rename = "secret.rotated")]
    SecretRotated,
    /// Forgotten by the broker (revoked at its provider first).
    #[serde(rename = "secret.deleted")]
    SecretDeleted,
    /// A proxy fetched a value to inject (never shown to an agent).
    #[serde(rename = "secret.delivered")]
    SecretDelivered,
    /// A task fetched a value itself: the flagged `reveal` exception.
    #[serde(rename = "secret.retrieved")]
    SecretRetrieved,
    #[serde(rename = "secret.refused")]
    SecretRefused,
    /// A call through a proxy: denied, or allowed and about to go upstream
    /// (written before it does).
    #[serde(rename = "tool.invoked")]
    ToolInvoked,
    /// An allowed call's outcome: status, latency, bytes.
    #[serde(rename = "tool.completed")]
    ToolCompleted,
    /// A tunnel through the proxy's egress listener to a host the task's
    /// tools declare (written before it opens; with its outcome when the
    /// proxy ships both at once).
    #[serde(rename = "egress.allowed")]
    EgressAllowed,
    /// A tunnel refused: no or a dead token, a host no tool of the task
    /// declares, a malformed request.
    #[serde(rename = "egress.denied")]
    EgressDenied,
    /// An allowed tunnel's outcome, when shipped apart from its opening:
    /// bytes each way, how long, why it ended.
    #[serde(rename = "egress.closed")]
    EgressClosed,
    /// A client address starts being refused at the token endpoint after
    /// too many failures (once per run of refusals, not per request).
    #[serde(rename = "client.throttled")]
    ClientThrottled,
    /// Policy held a task start, a grant or a request for a person.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.granted")]
    ApprovalGranted,
    /// Final: the same thing asked again stays refused.
    #[serde(rename = "approval.denied")]
    ApprovalDenied,
    /// A granted approval let its thing through (a `once` one is spent).
    #[serde(rename = "approval.used")]
    ApprovalUsed,
    /// An operator opened an emergency task that skipped approval.
    #[serde(rename = "breakglass.opened")]
    BreakglassOpened,
    /// A break-glass task minted a token or made a call.
    #[serde(rename = "breakglass.used")]
    BreakglassUsed,
    /// A break-glass task ended (its deadline, completion or revocation).
    #[serde(rename = "breakglass.closed")]
    BreakglassClosed,
    /// A webhook endpoint was added (its URL and kinds; never its secret).
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
    /// The anomaly detector flagged a task (rule, evidence, the action
    /// taken for its environment).
    #[serde(rename = "anomaly.detected")]
    AnomalyDetected,
    /// An operator saw an anomaly and says so (its `seq` in the detail).
    #[serde(rename = "anomaly.acknowledged")]
    AnomalyAcknowledged,
    /// A secret passed its class's maximum age without a rotation (once
    /// per version).
    #[serde(rename = "secret.rotation_due")]
    SecretRotationDue,
    /// A secret went unused for its class's period: revoke it (once per
    /// idle spell).
    #[serde(rename = "secret.unused")]
    SecretUnused,
    /// A dynamic credential's lease was recorded, before the credential was
    /// handed out (the login; never its password).
    #[serde(rename = "lease.created")]
    LeaseCreated,
    /// The source confirmed the credential gone.
    #[serde(rename = "lease.revoked")]
    LeaseRevoked,
    /// A revocation attempt failed (retried with backoff).
    #[serde(rename = "lease.failed")]
    LeaseFailed,
    /// A login found at the source with no lease (the broker stopped
    /// between making it and recording it), destroyed at start.
    #[serde(rename = "lease.orphan_revoked")]
    LeaseOrphanRevoked,
}

impl EventKind {
    /// Every kind, in declaration order (the OpenAPI enum lists the same).
    pub const ALL: [EventKind; 60] = [
        EventKind::OwnerCreated,
        EventKind::AgentCreated,
        EventKind::AgentRevoked,
        EventKind::AgentBindingAdded,
        EventKind::JoinTokenIssued,
        EventKind::AgentKeyEnrolled,
        EventKind::ToolCreated,
        EventKind::ToolUpdated,
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::TaskCreated,
        EventKind::TaskDenied,
        EventKind::TaskDelegated,
        EventKind::TaskCompleted,
        EventKind::TaskRevoked,
        EventKind::TaskExpired,
        EventKind::TaskSuspended,
        EventKind::TaskResumed,
        EventKind::TaskContextChanged,
        EventKind::GrantMinted,
        EventKind::GrantRefused,
        EventKind::TokenRevoked,
        EventKind::TokenMisuse,
        EventKind::Decision,
        EventKind::AdminTokenCreated,
        EventKind::AdminTokenRevoked,
        EventKind::PolicyReloaded,
        EventKind::PolicyRejected,
        EventKind::AuditCheckpoint,
        EventKind::KeyRotated,
        EventKind::KeyRevoked,
        EventKind::SecretStored,
        EventKind::SecretRotated,
        EventKind::SecretDeleted,
        EventKind::SecretDelivered,
        EventKind::SecretRetrieved,
        EventKind::SecretRefused,
        EventKind::ToolInvoked,
        EventKind::ToolCompleted,
        EventKind::EgressAllowed,
        EventKind::EgressDenied,
        EventKind::EgressClosed,
        EventKind::ClientThrottled,
        EventKind::ApprovalRequested,
        EventKind::ApprovalGranted,
        EventKind::ApprovalDenied,
        EventKind::ApprovalUsed,
        EventKind::BreakglassOpened,
        EventKind::BreakglassUsed,
        EventKind::BreakglassClosed,
        EventKind::WebhookCreated,
        EventKind::WebhookDeleted,
        EventKind::AnomalyDetected,
        EventKind::AnomalyAcknowledged,
        EventKind::SecretRotationDue,
        EventKind::SecretUnused,
        EventKind::LeaseCreated,
        EventKind::LeaseRevoked,
        EventKind::LeaseFailed,
        EventKind::LeaseOrphanRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        use EventKind::*;
        match self {
            OwnerCreated => "owner.created",
            AgentCreated => "agent.created",
            AgentRevoked => "agent.revoked",
            AgentBindingAdded => "agent.binding_added",
            JoinTokenIssued => "agent.join_token_issued",
            AgentKeyEnrolled => "agent.key_enrolled",
            ToolCreated => "tool.created",
            ToolUpdated => "tool.updated",
            LoginSucceeded => "login.succeeded",
            LoginFailed => "login.failed",
            TaskCreated => "task.created",
            TaskDenied => "task.denied",
            TaskDelegated => "task.delegated",
            TaskCompleted => "task.completed",
            TaskRevoked => "task.revoked",
            TaskExpired => "task.expired",
            TaskSuspended => "task.suspended",
            TaskResumed => "task.resumed",
            TaskContextChanged => "task.context_changed",
            GrantMinted => "grant.minted",
            GrantRefused => "grant.refused",
            TokenRevoked => "token.revoked",
            TokenMisuse => "token.misuse",
            Decision => "decision",
            AdminTokenCreated => "admin_token.created",
            AdminTokenRevoked => "admin_token.revoked",
            PolicyReloaded => "policy.reloaded",
            PolicyRejected => "policy.rejected",
            KeyRotated => "key.rotated",
            KeyRevoked => "key.revoked",
            SecretStored => "secret.stored",
            SecretRotated => "secret.rotated",
            SecretDeleted => "secret.deleted",
            SecretDelivered => "secret.delivered",
            SecretRetrieved => "secret.retrieved",
            SecretRefused => "secret.refused",
            ToolInvoked => "tool.invoked",
            ToolCompleted => "tool.completed",
            EgressAllowed => "egress.allowed",
            EgressDenied => "egress.denied",
            EgressClosed => "egress.closed",
            ClientThrottled => "client.throttled",
            AuditCheckpoint => "audit.checkpoint",
            ApprovalRequested => "approval.requested",
            ApprovalGranted => "approval.granted",
            ApprovalDenied => "approval.denied",
            ApprovalUsed => "approval.used",
            BreakglassOpened => "breakglass.opened",
            BreakglassUsed => "breakglass.used",
            BreakglassClosed => "breakglass.closed",
            WebhookCreated => "webhook.created",
            WebhookDeleted => "webhook.deleted",
            AnomalyDetected => "anomaly.detected",
            AnomalyAcknowledged => "anomaly.acknowledged",
            SecretRotationDue => "secret.rotation_due",
            SecretUnused => "secret.unused",
            LeaseCreated => "lease.created",
            LeaseRevoked => "lease.revoked",
            LeaseFailed => "lease.failed",
            LeaseOrphanRevoked => "lease.orphan_revoked",
        }
    }

    /// The kind an opening record's outcome is chained as when the opening
    /// itself was chained before (a proxy record resent across batches).
    pub fn outcome(self) -> EventKind {
        match self {
            EventKind::EgressAllowed | EventKind::EgressClosed => EventKind::EgressClosed,
            _ => EventKind::ToolCompleted,
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before it is chained: the caller says what happened, the store
/// assigns `seq`, time and hashes inside the same transaction as the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: EventKind,
    /// Who acted: `agent:<name>`, `admin:<token id>`, `system`.
    pub actor: String,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub jti: Option<String>,
    pub decision: Option<String>,
    pub reasons: Vec<String>,
    pub request_id: Option<String>,
    /// Extra structured facts as a JSON object text. Never a secret or token.
    pub detail: String,
}

impl NewEvent {
    pub fn new(kind: EventKind, actor: impl Into<String>) -> Self {
        NewEvent {
            kind,
            actor: actor.into(),
            agent: None,
            task: None,
            tool: None,
            jti: None,
            decision: None,
            reasons: Vec::new(),
            request_id: None,
            detail: "{}".into(),
        }
    }
    pub fn agent(mut self, v: impl ToString) -> Self {
        self.agent = Some(v.to_string());
        self
    }
    pub fn task(mut self, v: impl ToString) -> Self {
        self.task = Some(v.to_string());
        self
    }
    pub fn tool(mut self, v: impl ToString) -> Self {
        self.tool = Some(v.to_string());
        self
    }
    pub fn jti(mut self, v: impl ToString) -> Self {
        self.jti = Some(v.to_string());
        self
    }
    pub fn decision(mut self, v: impl ToString) -> Self {
        self.decision = Some(v.to_string());
        self
    }
    pub fn reasons(mut self, v: Vec<String>) -> Self {
        self.reasons = v;
        self
    }
    pub fn request_id(mut self, v: Option<String>) -> Self {
        self.request_id = v;
        self
    }
    pub fn detail(mut self, v: serde_json::Value) -> Self {
        self.detail = v.to_string();
        self
    }
}

/// A chained audit record, as stored and exported (one JSON line each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    pub kind: EventKind,
    pub actor: String,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub jti: Option<String>,
    pub decision: Option<String>,
    pub reasons: Vec<String>,
    pub request_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn all_lists_every_kind_once_and_names_round_trip() {
        let declared = include_str!("event.rs")
            .matches("#[serde(rename = \"")
            .count();
        let unique: std::collections::HashSet<_> = EventKind::ALL.iter().collect();
        assert_eq!((EventKind::ALL.len(), unique.len()), (declared, declared));
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
