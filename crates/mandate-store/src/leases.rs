//! Leases: the record of each dynamic credential, durable before it is
//! handed out. Which ones are due for destruction is read from the tasks they
//! belong to, so every way a task ends (completion, revocation, a parent's
//! cascade, suspension, its deadline, a crash while it ended) makes its
//! leases due without the task's own write having to know about them.

use crate::StoreError;
use crate::sql::{self, Sql, Write, args};
use mandate_audit::NewEvent;
use mandate_core::{Lease, LeaseState, RuleViolation, TaskState, UnixTime};

/// Which leases to list.
#[derive(Debug, Clone, Default)]
pub struct LeaseFilter {
    pub task: Option<mandate_core::TaskId>,
    /// Only those whose revocation failed at least once and is not done.
    pub failed: bool,
    pub limit: usize,
}

/// Record a lease for a live task, before the credential is handed out.
pub(crate) fn create(
    w: &mut dyn Write,
    lease: &Lease,
    now: UnixTime,
    evs: Vec<NewEvent>,
) -> Result<(), StoreError> {
    let task = crate::tasks::get(w, lease.task.as_str())?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: lease.task.to_string(),
    })?;
    if task.state_at(now) != TaskState::Active {
        return Err(RuleViolation::TaskNotActive {
            state: task.state_at(now).as_str().to_owned(),
        }
        .into());
    }
    sql::insert(
        w,
        "INSERT INTO leases (id, task, state, next_attempt_at, body) VALUES ($1, $2, $3, $4, $5)",
        args![
            lease.id.as_str(),
            lease.task.as_str(),
            lease.state.as_str(),
            lease.next_attempt_at,
            &serde_json::to_string(lease)?
        ],
        "lease",
        lease.id.as_str(),
    )?;
    evs.into_iter().try_for_each(|ev| w.audit(ev))
}

/// Store a lease's new state (and its event, if any).
pub(crate) fn update(
    w: &mut dyn Write,
    lease: &Lease,
    ev: Option<NewEvent>,
) -> Result<(), StoreError> {
    let n = w.exec(
        "UPDATE leases SET state = $2, next_attempt_at = $3, body = $4 WHERE id = $1",
        args![
            lease.id.as_str(),
            lease.state.as_str(),
            lease.next_attempt_at,
            &serde_json::to_string(lease)?
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "lease",
            id: lease.id.to_string(),
        });
    }
    match ev {
        Some(ev) => w.audit(ev),
        None => Ok(()),
    }
}

/// Leases to destroy now: not yet confirmed gone, not waiting out a
/// backoff, and either marked for it or of a task no longer active (or
/// past its deadline).
pub(crate) fn due(db: &mut dyn Sql, now: UnixTime, limit: usize) -> Result<Vec<Lease>, StoreError> {
    sql::bodies(
        db,
        "SELECT l.body FROM leases l JOIN tasks t ON t.id = l.task
         WHERE l.state <> 'revoked'
           AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= $1)
           AND (l.state <> 'active' OR t.state <> 'active' OR t.deadline <= $1)
         ORDER BY l.id LIMIT $2",
        args![now, limit.min(10_000) as i64],
    )
}

pub(crate) fn list(db: &mut dyn Sql, f: &LeaseFilter) -> Result<Vec<Lease>, StoreError> {
    let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) } as i64;
    let mut leases: Vec<Lease> = sql::bodies(
        db,
        "SELECT body FROM leases
         WHERE (CAST($1 AS TEXT) IS NULL OR task = $1)
           AND (CAST($2 AS BIGINT) = 0 OR state = 'failed')
         ORDER BY id DESC LIMIT $3",
        args![
            f.task.as_ref().map(|t| t.as_str()),
            i64::from(f.failed),
            limit
        ],
    )?;
    leases.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.id.as_str().cmp(b.id.as_str()))
    });
    Ok(leases)
}

pub(crate) fn get(db: &mut dyn Sql, id: &str) -> Result<Option<Lease>, StoreError> {
    sql::body(db, "SELECT body FROM leases WHERE id = $1", args![id])
}

/// Failed leases, by the partial index of open ones.
pub(crate) fn count_failed(db: &mut dyn Sql) -> Result<u64, StoreError> {
    let n: i64 = sql::first(
        db,
        "SELECT count(*) FROM leases WHERE state <> 'revoked' AND state = 'failed'",
        &[],
    )?
    .map(|r| r.get(0))
    .transpose()?
    .unwrap_or(0);
    Ok(n as u64)
}

/// Leases not yet gone at the source, for the inventory.
pub(crate) fn open(db: &mut dyn Sql, limit: usize) -> Result<Vec<Lease>, StoreError> {
    let leases: Vec<Lease> = sql::bodies(
        db,
        "SELECT body FROM leases WHERE state <> 'revoked' ORDER BY id LIMIT $1",
        args![limit.min(100_000) as i64],
    )?;
    Ok(leases
        .into_iter()
        .filter(|l| l.state != LeaseState::Revoked)
        .collect())
}
