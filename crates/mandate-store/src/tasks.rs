//! Tasks and their state machine. A completion or revocation puts the task
//! on the revocation feed until its deadline; every edge is audited with
//! the change it describes. A task that ends or is suspended takes its
//! whole delegated subtree down in the same transaction.

use crate::rules::{self, LIVE_TASK_STATES};
use crate::sql::{self, Arg, Row, Sql, Write, args};
use crate::{StoreError, TaskFilter, TaskMoved, feed};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AgentName, RevocationKind, RuleViolation, Task, TaskId, TaskState, UnixTime};

/// The order in which a cascade or the sweeper acts on tasks, and so the
/// order of their feed entries and events: oldest first (ids: see `list`).
const OLDEST_FIRST: &str = "ORDER BY created_at, id";

/// What a task is read from: its JSON body, with the `state` and
/// `ended_at` columns laid over it (a cascade writes only those).
pub(crate) const COLUMNS: &str = "body, state, ended_at";

fn read(row: &Row) -> Result<Task, StoreError> {
    let mut task: Task = row.json(0)?;
    task.state = TaskState::parse(row.text(1)?)
        .map_err(|e| StoreError::Corrupt(format!("task state: {e}")))?;
    if let Some(at) = row.get::<Option<i64>>(2)? {
        task.ended_at = Some(at);
    }
    Ok(task)
}

/// Tasks selected by `sql`, which names [`COLUMNS`] first.
pub(crate) fn many(db: &mut dyn Sql, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Task>, StoreError> {
    db.query(sql, args)?.iter().map(read).collect()
}

/// The tasks below `$1`, as a recursive table expression both dialects
/// accept.
const SUBTREE_CTE: &str = "subtree(id) AS (
       SELECT id FROM tasks WHERE parent = $1
       UNION ALL
       SELECT t.id FROM tasks t JOIN subtree s ON t.parent = s.id)";

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
    // The state and deadline columns say whether it is live; its body is
    // not read (this runs on the one writer thread, per delegation).
    let row = sql::first(
        w,
        "SELECT state, deadline FROM tasks WHERE id = $1",
        args![d.parent.as_str()],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: d.parent.to_string(),
    })?;
    let state = TaskState::parse(row.text(0)?)
        .map_err(|e| StoreError::Corrupt(format!("task state: {e}")))?
        .at(row.get(1)?, now);
    if state != TaskState::Active {
        return Err(RuleViolation::TaskNotActive {
            state: state.to_string(),
        }
        .into());
    }
    create(w, child, ev)
}

/// A task a cascade ended: what the cascade needs of it, without its body.
struct Ended {
    id: String,
    agent: String,
    parent: String,
    deadline: i64,
    created_at: i64,
}

/// Revoke every live task below `id` (children, their children, …) at
/// `now`: one statement finds the subtree, writes the state and end
/// columns (which reads lay over each body) and returns what it ended,
/// here put oldest first (as `OLDEST_FIRST`: ids are one prefix and
/// lowercase hex, so byte order is the collation's).
fn end_below(db: &mut dyn Sql, id: &str, now: UnixTime) -> Result<Vec<Ended>, StoreError> {
    // Most tasks have no children, and SQLite 3.50 plans the statement
    // below by scanning every live task (14 ms with 60,000 live, even with
    // nothing below): a leaf costs one probe of `tasks_by_parent` instead.
    if !sql::exists(
        db,
        "SELECT 1 FROM tasks WHERE parent = $1 LIMIT 1",
        args![id],
    )? {
        return Ok(Vec::new());
    }
    let mut ended = db
        .query(
            // Joined with `FROM`, not `id IN (…)`: the planner then walks
            // the subtree (SQLite chose to scan every live task instead).
            &format!(
                "WITH RECURSIVE {SUBTREE_CTE}
                 UPDATE tasks SET state = 'revoked', ended_at = $2
                 FROM subtree WHERE tasks.id = subtree.id AND tasks.state IN {LIVE_TASK_STATES}
                 RETURNING tasks.id, tasks.agent, tasks.parent, tasks.deadline, tasks.created_at"
            ),
            args![id, now],
        )?
        .iter()
        .map(|r| {
            Ok(Ended {
                id: r.get(0)?,
                agent: r.get(1)?,
                parent: r.get(2)?,
                deadline: r.get(3)?,
                created_at: r.get(4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    ended.sort_unstable_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(ended)
}

/// Every task below `id`, whatever its state, oldest first: a tree view.
pub(crate) fn subtree(db: &mut dyn Sql, id: &str) -> Result<Vec<Task>, StoreError> {
    many(
        db,
        &format!(
            "WITH RECURSIVE {SUBTREE_CTE}
             SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT id FROM subtree) {OLDEST_FIRST}"
        ),
        args![id],
    )
}

pub(crate) fn get(db: &mut dyn Sql, id: &str) -> Result<Option<Task>, StoreError> {
    Ok(many(
        db,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"),
        args![id],
    )?
    .pop())
}

/// Newest first, a page at a time (see [`rules::task_page`]). The tie on
/// `created_at` is broken in SQL, by id: ids are one prefix and lowercase
/// hex, which every collation orders as bytes.
pub(crate) fn list(db: &mut dyn Sql, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    many(
        db,
        &format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE (CAST($1 AS TEXT) IS NULL OR agent = $1) AND (CAST($2 AS TEXT) IS NULL OR state = $2)
               AND (CAST($4 AS BIGINT) = 0 OR body LIKE '%\"breakglass\":{{%')
             ORDER BY created_at DESC, id LIMIT $3"
        ),
        // The body is this crate's own compact JSON: a break-glass task's
        // holds `"breakglass":{` and no other task's does.
        args![
            f.agent.as_ref().map(|a| a.as_str()),
            f.state.map(|s| s.as_str()),
            rules::task_page(f.limit),
            i64::from(f.breakglass)
        ],
    )
}

/// An agent's tasks that a revocation still has to end.
pub(crate) fn live_of(db: &mut dyn Sql, agent: &AgentName) -> Result<Vec<Task>, StoreError> {
    many(
        db,
        &format!(
            "SELECT {COLUMNS} FROM tasks WHERE agent = $1 AND state IN {LIVE_TASK_STATES} {OLDEST_FIRST}"
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
    let below = end_below(w, task.id.as_str(), now)?;
    let why = vec![format!("cascade from {} of task {}", ev.kind, task.id)];
    let mut cascade = Vec::with_capacity(below.len());
    for b in &below {
        if !task_fed && b.parent == task.id.as_str() {
            revocations.push(feed::add(w, RevocationKind::Task, &b.id, now, b.deadline)?);
        }
        cascade.push(
            rules::cascade_event(&ev, EventKind::TaskRevoked, &b.agent, &b.id).reasons(why.clone()),
        );
    }
    // Chained in this order and stored together: a 10,000-task subtree
    // is a few statements, not one per event.
    w.audit_all(cascade)?;
    w.audit(ev)?;
    if to.is_terminal()
        && let Some(b) = &task.breakglass
    {
        w.audit(
            NewEvent::new(EventKind::BreakglassClosed, "system")
                .agent(&task.agent)
                .task(&task.id)
                .reasons(vec![format!("the task is {to}")])
                .detail(serde_json::json!({
                    "opened_by": b.opened_by, "opened_at": b.opened_at, "closed_at": now,
                })),
        )?;
    }
    let subtree = below
        .into_iter()
        .map(|b| TaskId::parse(&b.id).map_err(|e| StoreError::Corrupt(format!("task id: {e}"))))
        .collect::<Result<_, _>>()?;
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
        "UPDATE tasks SET state = $2, body = $3, ended_at = $4 WHERE id = $1",
        args![
            task.id.as_str(),
            task.state.as_str(),
            &serde_json::to_string(task)?,
            task.ended_at
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
/// still live under one is revoked with it). Each change, with the feed
/// entries it wrote.
pub(crate) fn expire_due(w: &mut dyn Write, now: UnixTime) -> Result<Vec<TaskMoved>, StoreError> {
    let due: Vec<Task> = many(
        w,
        &format!(
            "SELECT {COLUMNS} FROM tasks WHERE state IN {LIVE_TASK_STATES} AND deadline <= $1 {OLDEST_FIRST}"
        ),
        args![now],
    )?;
    let mut changed: Vec<TaskMoved> = Vec::with_capacity(due.len());
    for mut task in due {
        // A child due at the same moment may already have gone with its parent.
        let gone = changed
            .iter()
            .any(|m| m.task.id == task.id || m.subtree.contains(&task.id));
        if gone {
            continue;
        }
        let ev = NewEvent::new(EventKind::TaskExpired, "system")
            .agent(&task.agent)
            .task(&task.id)
            .reasons(vec!["deadline passed".into()]);
        changed.push(transition(w, &mut task, TaskState::Expired, now, ev)?);
    }
    Ok(changed)
}
