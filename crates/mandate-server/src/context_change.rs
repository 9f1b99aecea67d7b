//! A live task's agent now declares another model than the task started
//! under (its session says so at the token exchange). Cedar's
//! `continue_task` decides, for each tool of the task's scope: allowed,
//! the task records the new model and goes on; denied (the default policy
//! `suspend-on-model-change`), the task is suspended, which revokes its
//! tokens and everything delegated below it. Either way it is audited as
//! `task.context_changed`.

use crate::app::{App, now};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Agent, Model, Task, TaskState};
use mandate_policy::{AgentFacts, ContinueRequest, TaskFacts, ToolFacts};
use serde_json::json;
use std::sync::Arc;

/// Why the task cannot go on (a sentence for the agent).
pub struct Stopped(pub String);

/// `task` as it may go on under `declared`, or why it was stopped.
pub async fn on_model(
    app: &App,
    agent: &Agent,
    task: Arc<Task>,
    declared: Option<&Model>,
    rid: &str,
) -> Result<Arc<Task>, Stopped> {
    if task.model.as_ref() == declared {
        return Ok(task);
    }
    let (from, to) = (
        Model::describe(task.model.as_ref()),
        Model::describe(declared),
    );
    let t = now();
    let policy = app.policy();
    let (mut denied, mut reasons, mut policy_ids) = (false, Vec::new(), Vec::new());
    for item in task.scope.items() {
        let Some(tool) = app.directory.tool(&item.tool) else {
            continue;
        };
        let d = policy.decide_continue(&ContinueRequest {
            agent: AgentFacts::of(agent),
            tool: ToolFacts::of(&tool),
            task: TaskFacts::of(&task, t),
            change: "model",
            from: &from,
            to: &to,
            now: t,
        });
        denied |= !d.allowed;
        if !d.allowed || reasons.is_empty() {
            reasons.extend(d.reasons);
            policy_ids.extend(d.policy_ids);
        }
    }
    reasons.dedup();
    policy_ids.sort();
    policy_ids.dedup();
    let decision = if denied { "deny" } else { "allow" };
    let ev = NewEvent::new(
        EventKind::TaskContextChanged,
        format!("agent:{}", agent.name),
    )
    .agent(&agent.name)
    .task(&task.id)
    .request_id(Some(rid.to_owned()))
    .decision(decision)
    .reasons(reasons.clone())
    .detail(json!({"change": "model", "from": from, "to": to, "policy_ids": policy_ids}));
    let moved = match denied {
        true => {
            app.store
                .transition_task(&task.id, TaskState::Suspended, t, ev)
                .await
        }
        false => {
            let mut next = (*task).clone();
            next.model = declared.cloned();
            app.store.rescope_task(next, t, ev).await
        }
    };
    let moved = moved.map_err(|e| {
        tracing::error!(error = %e, task = %task.id, "context change could not be recorded");
        Stopped(format!(
            "the agent's model changed from {from} to {to} and the change could not be recorded"
        ))
    })?;
    let after = Arc::new(app.moved(moved));
    if denied {
        tracing::warn!(task = %task.id, %from, %to, "task suspended: its agent's model changed");
        return Err(Stopped(format!(
            "the task was suspended: its agent's model changed from {from} to {to} ({})",
            reasons.join("; ")
        )));
    }
    Ok(after)
}
