//! Token misuse: a verified token presented as its holder never would
//! (relayed, replayed, at another tool, after its task ended). Wherever
//! it is seen — the broker's `/v1/authorize`, or a proxy, which reports it
//! with the call's record — it becomes one `token.misuse` event with the
//! evidence, and then [`respond`] applies `on_misuse` for the task's
//! environment: `suspend` suspends a live task, which revokes its tokens
//! and everything delegated below it.

use crate::app::{App, now};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Misuse, MisuseCheck, OnMisuse, TaskId, TaskState};
use serde_json::json;

/// Where and on what a misuse was seen (never the token itself).
pub struct Sighting<'a> {
    /// `admin:<id>` of the asking gateway, or `proxy:<id>`.
    pub actor: &'a str,
    pub misuse: &'a Misuse,
    /// The refusal the presenter got (`code: message`).
    pub refusal: String,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub jti: Option<String>,
    /// The presenting client's address, when the reporter saw it.
    pub client: Option<String>,
    /// A delegated token's earlier agents, root first.
    pub chain: Vec<String>,
    pub request_id: Option<String>,
}

/// The `token.misuse` event for a sighting.
pub fn event(s: Sighting<'_>) -> NewEvent {
    let m = s.misuse;
    let mut detail = json!({"check": m.check.as_str()});
    for (k, v) in [
        ("bound_jkt", &m.bound_jkt),
        ("presented_jkt", &m.presented_jkt),
        ("proof_jti", &m.proof_jti),
        ("client", &s.client),
    ] {
        if let Some(v) = v {
            detail[k] = json!(v);
        }
    }
    if !s.chain.is_empty() {
        detail["chain"] = json!(s.chain);
    }
    let mut ev = NewEvent::new(EventKind::TokenMisuse, s.actor)
        .decision("deny")
        .reasons(vec![s.refusal])
        .request_id(s.request_id)
        .detail(detail);
    ev.agent = s.agent;
    ev.task = s.task;
    ev.tool = s.tool;
    ev.jti = s.jti;
    ev
}

/// Act on chained `token.misuse` events: suspend each named task that is
/// still active where its environment's `on_misuse` says so. Failures
/// are logged: the evidence is already on record.
pub async fn respond(app: &App, events: &[NewEvent]) {
    for ev in events.iter().filter(|e| e.kind == EventKind::TokenMisuse) {
        let check = serde_json::from_str::<serde_json::Value>(&ev.detail)
            .ok()
            .and_then(|d| {
                d["check"]
                    .as_str()
                    .and_then(|c| c.parse::<MisuseCheck>().ok())
            });
        let (Some(check), Some(task)) = (check, ev.task.as_deref()) else {
            continue;
        };
        if !check.task_may_be_live() {
            continue;
        }
        if let Err(e) = suspend(app, task, check, ev.request_id.as_deref()).await {
            tracing::error!(error = %e, task, %check, "could not suspend a task after token misuse");
        }
    }
}

async fn suspend(
    app: &App,
    task: &str,
    check: MisuseCheck,
    request_id: Option<&str>,
) -> Result<(), mandate_store::StoreError> {
    let Ok(id) = TaskId::parse(task) else {
        return Ok(());
    };
    let Some(t) = app.store.get_task(&id).await? else {
        return Ok(());
    };
    let at = now();
    if t.state_at(at) != TaskState::Active
        || app.settings.raw.on_misuse(t.environment) != OnMisuse::Suspend
    {
        return Ok(());
    }
    let ev = NewEvent::new(EventKind::TaskSuspended, "system")
        .agent(&t.agent)
        .task(&t.id)
        .request_id(request_id.map(str::to_owned))
        .reasons(vec![format!("token misuse: {check}")])
        .detail(json!({"on_misuse": "suspend", "check": check.as_str()}));
    match app
        .store
        .transition_task(&t.id, TaskState::Suspended, at, ev)
        .await
    {
        Ok(moved) => {
            tracing::warn!(task, %check, subtree = moved.subtree.len(), "task suspended for token misuse");
            app.moved(moved);
            Ok(())
        }
        // Moved on meanwhile (ended, or suspended by another report).
        Err(mandate_store::StoreError::Rule(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
