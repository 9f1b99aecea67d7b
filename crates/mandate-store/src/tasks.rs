//! Tasks and their state machine. A completion or revocation puts the task
//! on the revocation feed until its deadline; every edge is audited with
//! the change it describes.

use crate::rules::{self, LIVE_TASK_STATES};
use crate::sql::{self, Sql, Write, args};
use crate::{StoreError, TaskFilter, feed};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AgentName, Revocation, RevocationKind, Task, TaskState, UnixTime};

/// The order in which a cascade or the sweeper acts on tasks, and so the
/// order of their feed entries and events: oldest first (ids: see `list`).
const OLDEST_FIRST: &str = "ORDER BY created_at, id";

pub(crate) fn create(w: &mut dyn Write, task: &Task, ev: NewEvent) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO tasks (id, agent, state, deadline, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            task.id.as_str(),
            task.agent.as_str(),
            task.state.as_str(),
            task.deadline,
            &serde_json::to_string(task)?,
            task.created_at
        ],
        "task",
        task.id.as_str(),
    )?;
    w.audit(ev)
}

pub(crate) fn get(db: &mut dyn Sql, id: &str) -> Result<Option<Task>, StoreError> {
    sql::body(db, "SELECT body FROM tasks WHERE id = $1", args![id])
}

/// Newest first, a page at a time (see [`rules::task_page`]). The tie on
/// `created_at` is broken in SQL, by id: ids are one prefix and lowercase
/// hex, which every collation orders as bytes.
pub(crate) fn list(db: &mut dyn Sql, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    sql::bodies(
        db,
        "SELECT body FROM tasks
         WHERE (CAST($1 AS TEXT) IS NULL OR agent = $1) AND (CAST($2 AS TEXT) IS NULL OR state = $2)
         ORDER BY created_at DESC, id LIMIT $3",
        args![
            f.agent.as_ref().map(|a| a.as_str()),
            f.state.map(|s| s.as_str()),
            rules::task_page(f.limit)
        ],
    )
}

/// An agent's tasks that a revocation still has to end.
pub(crate) fn live_of(db: &mut dyn Sql, agent: &AgentName) -> Result<Vec<Task>, StoreError> {
    sql::bodies(
        db,
        &format!(
            "SELECT body FROM tasks WHERE agent = $1 AND state IN {LIVE_TASK_STATES} {OLDEST_FIRST}"
        ),
        args![agent.as_str()],
    )
}

/// Apply the edge to `to` (refused, with nothing written, if the state
/// machine has no such edge), with `ev`. Completion and revocation add a
/// feed entry for the task, expiring at its deadline.
pub(crate) fn transition(
    w: &mut dyn Write,
    task: &mut Task,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Option<Revocation>, StoreError> {
    task.transition(to, now)?;
    w.exec(
        "UPDATE tasks SET state = $2, body = $3 WHERE id = $1",
        args![
            task.id.as_str(),
            task.state.as_str(),
            &serde_json::to_string(task)?
        ],
    )?;
    let fed = if matches!(to, TaskState::Revoked | TaskState::Completed) {
        Some(feed::add(
            w,
            RevocationKind::Task,
            task.id.as_str(),
            now,
            task.deadline,
        )?)
    } else {
        None
    };
    w.audit(ev)?;
    Ok(fed)
}

pub(crate) fn transition_by_id(
    w: &mut dyn Write,
    id: &str,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<(Task, Option<Revocation>), StoreError> {
    let mut task = get(w, id)?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: id.to_owned(),
    })?;
    let fed = transition(w, &mut task, to, now, ev)?;
    Ok((task, fed))
}

/// Move every live task whose deadline is at or before `now` to `expired`,
/// oldest first, each with a `task.expired` event by `system`.
pub(crate) fn expire_due(w: &mut dyn Write, now: UnixTime) -> Result<Vec<Task>, StoreError> {
    let due: Vec<Task> = sql::bodies(
        w,
        &format!(
            "SELECT body FROM tasks WHERE state IN {LIVE_TASK_STATES} AND deadline <= $1 {OLDEST_FIRST}"
        ),
        args![now],
    )?;
    let mut expired = Vec::with_capacity(due.len());
    for mut task in due {
        let ev = NewEvent::new(EventKind::TaskExpired, "system")
            .agent(&task.agent)
            .task(&task.id)
            .reasons(vec!["deadline passed".into()]);
        transition(w, &mut task, TaskState::Expired, now, ev)?;
        expired.push(task);
    }
    Ok(expired)
}
