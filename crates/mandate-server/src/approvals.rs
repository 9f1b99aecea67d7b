//! Approval requests as the broker opens and settles them: the one place
//! that `/v1/authorize`, the proxies (through `/v1/approvals/resolve`),
//! the token endpoint and task creation go through. The rules of an
//! approval are `mandate_core::Approval`'s; the store makes each lookup,
//! use and verdict one write.

use crate::app::App;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Agent, Approval, ApprovalId, ApprovalState, Held, RandomId, Task, UnixTime};
use mandate_policy::{ApprovalNeed, Settled};
use mandate_store::{Resolved, StoreError};
use serde_json::json;

/// Who asks, as the audit log will name them.
pub struct Asker<'a> {
    pub agent: &'a Agent,
    pub task: &'a Task,
    /// `agent:<name>`, `admin:<id>` or `proxy:<id>`: who brought the request.
    pub actor: &'a str,
    pub request_id: Option<String>,
}

/// A new pending request for `held`, valid for `approval_request_ttl_secs`
/// and never past the task's deadline.
pub fn candidate(
    app: &App,
    asker: &Asker<'_>,
    held: Held,
    need: &ApprovalNeed,
    now: UnixTime,
) -> Approval {
    let task = asker.task;
    let ttl = i64::from(app.settings.raw.approval_request_ttl_secs);
    Approval {
        id: ApprovalId::from_random(mandate_token::random_bytes()),
        task: task.id.clone(),
        agent: asker.agent.name.clone(),
        owner: asker.agent.owner.clone(),
        environment: task.environment,
        chain: task
            .delegation
            .as_ref()
            .map(|d| d.chain.iter().map(|l| l.agent.clone()).collect())
            .unwrap_or_default(),
        held,
        intent: task.intent.clone(),
        policy_ids: need.policy_ids.clone(),
        reasons: need.reasons.clone(),
        state: ApprovalState::Pending,
        requested_at: now,
        valid_until: (now + ttl).min(task.deadline),
        decided: None,
        used_at: None,
    }
}

/// The `approval.requested` event for a new request: who, what, why and
/// until when.
pub fn requested_event(a: &Approval, asker: &Asker<'_>) -> NewEvent {
    let mut ev = NewEvent::new(EventKind::ApprovalRequested, asker.actor)
        .agent(&a.agent)
        .task(&a.task)
        .decision("pending")
        .reasons(a.reasons.clone())
        .request_id(asker.request_id.clone())
        .detail(json!({
            "approval": a.id,
            "held": a.held,
            "intent": a.intent,
            "policy_ids": a.policy_ids,
            "chain": a.chain,
            "valid_until": a.valid_until,
        }));
    ev.tool = a.held.tool().map(|t| t.to_string());
    ev
}

/// What stands for `held` on the asker's task now: a granted approval
/// (a `once` one spent by this call), the pending request (opened now if
/// none was), or a final denial.
pub async fn resolve(
    app: &App,
    asker: &Asker<'_>,
    held: Held,
    need: &ApprovalNeed,
    now: UnixTime,
) -> Result<Resolved, StoreError> {
    let candidate = candidate(app, asker, held, need, now);
    let ev = requested_event(&candidate, asker);
    let resolved = app.store.resolve_approval(candidate, ev, now).await?;
    if let Resolved::Waiting { opened: true, .. } = &resolved {
        app.metrics.approval("requested");
    }
    Ok(resolved)
}

/// The store's answer as the decision path takes it.
pub fn settled(r: &Resolved) -> Settled<'_> {
    match r {
        Resolved::Allowed(a) => Settled::Allowed(a),
        Resolved::Waiting { approval, .. } => Settled::Waiting(approval),
        Resolved::Denied(a) => Settled::Denied(a),
    }
}
