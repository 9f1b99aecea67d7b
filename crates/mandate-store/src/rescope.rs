//! A task's context switch, in one transaction: the new scope and intent,
//! and whatever no longer fits cut off at once — each unexpired token of
//! the task outside the new scope (a feed entry each) and each live task
//! delegated from it whose scope is outside (revoked with its subtree).

use crate::rules::LIVE_TASK_STATES;
use crate::sql::{self, Write, args};
use crate::{StoreError, TaskMoved, feed, rules, tasks};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Grant, RevocationKind, RuleViolation, Task, TaskState, UnixTime};

/// Store `next` (the task with its new scope and intent) if the task is
/// still active as this write reads it, with `ev` (its detail gains the
/// `jti`s revoked).
pub(crate) fn rescope(
    w: &mut dyn Write,
    next: &Task,
    now: UnixTime,
    ev: NewEvent,
) -> Result<TaskMoved, StoreError> {
    let id = next.id.as_str();
    let current = tasks::get(w, id)?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: id.to_owned(),
    })?;
    let state = current.state_at(now);
    if state != TaskState::Active {
        return Err(RuleViolation::TaskNotActive {
            state: state.to_string(),
        }
        .into());
    }
    tasks::save(w, next)?;
    let mut revocations = Vec::new();
    let mut revoked_tokens = Vec::new();
    let grants: Vec<Grant> = sql::bodies(
        w,
        "SELECT body FROM grants WHERE task = $1 AND expires_at > $2 ORDER BY jti",
        args![id, now],
    )?;
    for g in grants
        .iter()
        .filter(|g| !mandate_core::grant_fits(&next.scope, g))
    {
        revocations.push(feed::add(
            w,
            RevocationKind::Token,
            g.jti.as_str(),
            now,
            g.expires_at,
        )?);
        revoked_tokens.push(g.jti.to_string());
    }
    let children: Vec<Task> = tasks::many(
        w,
        &format!(
            "SELECT {} FROM tasks WHERE parent = $1 AND state IN {LIVE_TASK_STATES} ORDER BY created_at, id",
            tasks::COLUMNS
        ),
        args![id],
    )?;
    let mut subtree = Vec::new();
    for mut child in children
        .into_iter()
        .filter(|c| !mandate_core::child_fits(&next.scope, c))
    {
        let cause = rules::cascade_event(
            &ev,
            EventKind::TaskRevoked,
            child.agent.as_str(),
            child.id.as_str(),
        )
        .reasons(vec![format!("outside the new scope of task {id}")]);
        let moved = tasks::transition(w, &mut child, TaskState::Revoked, now, cause)?;
        revocations.extend(moved.revocations);
        subtree.push(moved.task.id);
        subtree.extend(moved.subtree);
    }
    let mut detail: serde_json::Value =
        serde_json::from_str(&ev.detail).unwrap_or_else(|_| serde_json::json!({}));
    detail["revoked_tokens"] = serde_json::json!(revoked_tokens);
    w.audit(ev.detail(detail))?;
    Ok(TaskMoved {
        task: next.clone(),
        subtree,
        revocations,
    })
}
