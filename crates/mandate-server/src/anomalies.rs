//! The anomaly detector at work: a background task that follows the audit
//! chain by `seq` (woken by the store's `appended` head after each
//! commit that added events, and every second besides), feeds each event to `mandate_anomaly::Detector`
//! and carries out each finding's action for its task's environment,
//! then records it as an `anomaly.detected` event.
//!
//! It starts at the chain's head when the broker starts: events written
//! while no broker ran are not looked at again (their misuse was acted
//! on by `on_misuse` when it was reported). It never runs on a request's
//! path; a request only pays for the store's wake-up.
//!
//! With `misuse::respond`: `on_misuse` stays the immediate answer to a
//! relayed token (it suspends before the refused request has been
//! answered); the detector comes after it, records the finding and acts
//! only on a task still active then, so the two never suspend twice.

use crate::app::{App, now};
use crate::approvals::{self, Asker};
use mandate_anomaly::{AnomalyAction, Detector, Finding};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Held, TaskId, TaskState};
use mandate_policy::ApprovalNeed;
use mandate_store::StoreError;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Events read per page.
const PAGE: usize = 1024;
/// Poll this often even without a wake-up (another writer, a missed one).
const POLL: Duration = Duration::from_secs(1);
/// At most one read of the chain this often: under load a wake-up comes
/// with every group commit, and reading a page per commit cost the
/// broker a tenth of its `/v1/authorize` throughput on two cores
/// (benchmarks); one read per 50 ms keeps pages large and adds at most
/// that to the time from a request to its finding's action.
const READ_EVERY: Duration = Duration::from_millis(50);

/// Follow the chain from its head until the task is aborted.
pub async fn follow(app: Arc<App>) {
    let mut detector = Detector::new(app.settings.raw.anomaly.clone());
    // Subscribed before the head is read: nothing appended in between is missed.
    let mut head = app.store.appended();
    let mut after = loop {
        match app.store.last_event().await {
            Ok(head) => break head.map_or(0, |e| e.seq),
            Err(e) => {
                tracing::error!(error = %e, "anomaly detector cannot read the chain's head");
                tokio::time::sleep(POLL).await;
            }
        }
    };
    loop {
        tokio::time::sleep(READ_EVERY).await;
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    // The store is closing: no more wake-ups, only the poll.
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        let newest = *head.borrow_and_update();
        app.metrics
            .anomaly_lag(i64::try_from(newest.saturating_sub(after)).unwrap_or(i64::MAX));
        loop {
            let page = match app.store.events_since(after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "anomaly detector cannot read the chain");
                    break;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            let t = now() * 1000;
            for ev in &page {
                for finding in detector.observe(ev, t) {
                    act(&app, finding).await;
                }
            }
            after = last;
            if page.len() < PAGE {
                break;
            }
        }
    }
}

/// What happened to the task.
fn outcome(r: Result<Option<&'static str>, StoreError>) -> &'static str {
    match r {
        Ok(Some(o)) => o,
        Ok(None) => "task_not_active",
        // Moved on meanwhile (ended, or suspended by someone else).
        Err(StoreError::Rule(_)) => "task_not_active",
        Err(e) => {
            tracing::error!(error = %e, "anomaly action failed");
            "failed"
        }
    }
}

/// Carry out `f`'s action on its task, then record it.
async fn act(app: &App, f: Finding) {
    let task = match TaskId::parse(&f.task) {
        Ok(id) => app.store.get_task(&id).await.ok().flatten(),
        Err(_) => None,
    };
    let t = now();
    let (env, action, done) = match &task {
        None => (None, AnomalyAction::Alert, "unknown_task"),
        Some(task) => {
            let action = app.settings.raw.anomaly.action(f.rule, task.environment);
            let done = if action == AnomalyAction::Alert {
                "recorded"
            } else if task.state_at(t) != TaskState::Active {
                "task_not_active"
            } else {
                outcome(apply(app, &f, task, action, t).await)
            };
            (Some(task.environment), action, done)
        }
    };
    tracing::warn!(task = %f.task, rule = %f.rule, %action, outcome = done, "anomaly detected");
    app.metrics.anomaly(f.rule.as_str(), action.as_str());
    let mut ev = NewEvent::new(EventKind::AnomalyDetected, "system")
        .task(&f.task)
        .decision(action.as_str())
        .reasons(vec![format!("anomaly: {}", f.rule)])
        .detail(json!({
            "rule": f.rule, "evidence": f.evidence, "action": action, "outcome": done,
            "environment": env, "seen_at_ms": f.seen_at,
        }));
    ev.agent = f.agent;
    ev.tool = f.tool;
    if let Err(e) = app.store.append_events(vec![ev]).await {
        tracing::error!(error = %e, task = %f.task, "could not record an anomaly");
    }
}

/// Suspend the task, or suspend it and open a request to resume it.
async fn apply(
    app: &App,
    f: &Finding,
    task: &mandate_core::Task,
    action: AnomalyAction,
    t: i64,
) -> Result<Option<&'static str>, StoreError> {
    let why = format!("anomaly: {}", f.rule);
    let suspend = NewEvent::new(EventKind::TaskSuspended, "system")
        .agent(&task.agent)
        .task(&task.id)
        .reasons(vec![why.clone()])
        .detail(json!({"anomaly": f.rule, "action": action}));
    let moved = match action {
        AnomalyAction::Alert => return Ok(Some("recorded")),
        AnomalyAction::Suspend => {
            app.store
                .transition_task(&task.id, TaskState::Suspended, t, suspend)
                .await?
        }
        AnomalyAction::RequireApproval => {
            let Some(agent) = app.store.get_agent(&task.agent).await? else {
                return Ok(None);
            };
            let asker = Asker {
                agent: &agent,
                task,
                actor: "system",
                request_id: None,
            };
            let need = ApprovalNeed {
                reasons: vec![why],
                policy_ids: Vec::new(),
            };
            let held = Held::Resume { rule: f.rule };
            let approval = approvals::candidate(app, &asker, held, &need, t);
            let requested = approvals::requested_event(&approval, &asker);
            let moved = app
                .store
                .suspend_for_review(approval, suspend, requested, t)
                .await?;
            app.metrics.approval("requested");
            moved
        }
    };
    tracing::warn!(task = %task.id, rule = %f.rule, subtree = moved.subtree.len(), "task suspended for an anomaly");
    app.moved(moved);
    Ok(Some(match action {
        AnomalyAction::RequireApproval => "suspended_pending_approval",
        _ => "suspended",
    }))
}
