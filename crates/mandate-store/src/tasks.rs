//! Tasks and their state machine. A completion or revocation puts the task
//! on the revocation feed until its deadline; every edge is audited with
//! the change it describes. A task that ends or is suspended takes its
//! whole delegated subtree down in the same transaction.

use crate::rules::{self, LIVE_TASK_STATES};
use crate::sql::{self, Sql, Write, args};
use crate::{StoreError, TaskFilter, TaskMoved, feed};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AgentName, RevocationKind, RuleViolation, Task, TaskState, UnixTime};

/// The order in which a cascade or the sweeper acts on tasks, and so the
/// order of their feed entries and events: oldest first (ids: see `list`).
const OLDEST_FIRST: &str = "ORDER BY created_at, id";

pub(crate) fn create(w: &mut dyn Write, task: &Task, ev: NewEvent) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO tasks (id, agent, state, deadline, body, created_at, parent) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            task.id.as_str(),
            task.agent.as_str(),
            task.state.as_str(),
            task.deadline,
            &serde_json::to_string(task)?,
            task.created_at,
            task.delegation.as_ref().map(|d| d.parent.as_str())
        ],
        "task",
        task.id.as_str(),
    )?;
    w.audit(ev)
}

/// Create `child`, delegated from its parent, if the parent is still
/// active at `now` when this transaction reads it: a parent revoked a
/// moment earlier has no window to mint children in.
pub(crate) fn delegate(
    w: &mut dyn Write,
    child: &Task,
    now: UnixTime,
    ev: NewEvent,
) -> Result<(), StoreError> {
    let d = child
        .delegation
        .as_ref()
        .ok_or(StoreError::Refused("a delegated task names its parent"))?;
    let parent = get(w, d.parent.as_str())?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: d.parent.to_string(),
    })?;
    if !parent.is_live(now) {
        return Err(RuleViolation::TaskNotActive {
            state: parent.state_at(now).to_string(),
        }
        .into());
    }
    create(w, child, ev)
}

/// Live tasks below `id` (children, their children, …), oldest first.
fn live_subtree(db: &mut dyn Sql, id: &str) -> Result<Vec<Task>, StoreError> {
    sql::bodies(
        db,
        &format!(
            "WITH RECURSIVE subtree(id) AS (
               SELECT id FROM tasks WHERE parent = $1
               UNION ALL
               SELECT t.id FROM tasks t JOIN subtree s ON t.parent = s.id)
             SELECT body FROM tasks
             WHERE id IN (SELECT id FROM subtree) AND state IN {LIVE_TASK_STATES} {OLDEST_FIRST}"
        ),
        args![id],
    )
}

/// Every task below `id`, whatever its state, oldest first: a tree view.
pub(crate) fn subtree(db: &mut dyn Sql, id: &str) -> Result<Vec<Task>, StoreError> {
    sql::bodies(
        db,
        &format!(
            "WITH RECURSIVE subtree(id) AS (
               SELECT id FROM tasks WHERE parent = $1
               UNION ALL
               SELECT t.id FROM tasks t JOIN subtree s ON t.parent = s.id)
             SELECT body FROM tasks WHERE id IN (SELECT id FROM subtree) {OLDEST_FIRST}"
        ),
        args![id],
    )
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
/// feed entry for the task, expiring at its deadline; suspension one for
/// each of its unexpired tokens, which stay dead if the task is resumed
/// (it mints new ones), so no verifier needs to see the resumption in
/// time. Ending or suspending
/// a task revokes every live task delegated below it, each with a
/// `task.revoked` event; no feed entry is needed for them when the task
/// has one (a delegated token names every ancestor task, and a verifier
/// refuses it when any of them is revoked), otherwise each revoked child
/// gets one, which covers its own subtree the same way.
pub(crate) fn transition(
    w: &mut dyn Write,
    task: &mut Task,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<TaskMoved, StoreError> {
    task.transition(to, now)?;
    save(w, task)?;
    let mut revocations = Vec::new();
    if matches!(to, TaskState::Revoked | TaskState::Completed) {
        revocations.push(feed::add(
            w,
            RevocationKind::Task,
            task.id.as_str(),
            now,
            task.deadline,
        )?);
    }
    if to == TaskState::Suspended {
        for (jti, exp) in live_grants(w, task.id.as_str(), now)? {
            revocations.push(feed::add(w, RevocationKind::Token, &jti, now, exp)?);
        }
    }
    let task_fed = matches!(to, TaskState::Revoked | TaskState::Completed);
    let mut subtree = live_subtree(w, task.id.as_str())?;
    for child in &mut subtree {
        let cascade =
            rules::cascade_event(&ev, EventKind::TaskRevoked, child).reasons(vec![format!(
                "cascade from {} of task {}",
                ev.kind, task.id
            )]);
        child.transition(TaskState::Revoked, now)?;
        save(w, child)?;
        let is_child = child
            .delegation
            .as_ref()
            .is_some_and(|d| d.parent == task.id);
        if !task_fed && is_child {
            revocations.push(feed::add(
                w,
                RevocationKind::Task,
                child.id.as_str(),
                now,
                child.deadline,
            )?);
        }
        w.audit(cascade)?;
    }
    w.audit(ev)?;
    Ok(TaskMoved {
        task: task.clone(),
        subtree,
        revocations,
    })
}

/// The `jti` and expiry of a task's tokens still unexpired at `now`.
fn live_grants(
    db: &mut dyn Sql,
    task: &str,
    now: UnixTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    db.query(
        "SELECT jti, expires_at FROM grants WHERE task = $1 AND expires_at > $2 ORDER BY jti",
        args![task, now],
    )?
    .iter()
    .map(|r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))
    .collect()
}

pub(crate) fn save(w: &mut dyn Write, task: &Task) -> Result<(), StoreError> {
    w.exec(
        "UPDATE tasks SET state = $2, body = $3 WHERE id = $1",
        args![
            task.id.as_str(),
            task.state.as_str(),
            &serde_json::to_string(task)?
        ],
    )?;
    Ok(())
}

pub(crate) fn transition_by_id(
    w: &mut dyn Write,
    id: &str,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<TaskMoved, StoreError> {
    let mut task = get(w, id)?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: id.to_owned(),
    })?;
    transition(w, &mut task, to, now, ev)
}

/// Move every live task whose deadline is at or before `now` to `expired`,
/// oldest first, each with a `task.expired` event by `system` (a subtree
/// still live under one is revoked with it). Every task changed.
pub(crate) fn expire_due(w: &mut dyn Write, now: UnixTime) -> Result<Vec<Task>, StoreError> {
    let due: Vec<Task> = sql::bodies(
        w,
        &format!(
            "SELECT body FROM tasks WHERE state IN {LIVE_TASK_STATES} AND deadline <= $1 {OLDEST_FIRST}"
        ),
        args![now],
    )?;
    let mut changed = Vec::with_capacity(due.len());
    for mut task in due {
        // A child due at the same moment may already have gone with its parent.
        if changed.iter().any(|t: &Task| t.id == task.id) {
            continue;
        }
        let ev = NewEvent::new(EventKind::TaskExpired, "system")
            .agent(&task.agent)
            .task(&task.id)
            .reasons(vec!["deadline passed".into()]);
        let moved = transition(w, &mut task, TaskState::Expired, now, ev)?;
        changed.push(moved.task);
        changed.extend(moved.subtree);
    }
    Ok(changed)
}
