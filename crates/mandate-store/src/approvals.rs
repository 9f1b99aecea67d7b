//! Approval requests. The same thing held again on the same task finds
//! its latest request instead of opening another, and that lookup, the
//! use of a `once` approval and a person's verdict each happen inside one
//! write, so two requests can never both spend one approval.

use crate::sql::{self, Row, Sql, Write, args};
use crate::{ApprovalFilter, DecidedApproval, Resolved, StoreError, TaskMoved, tasks};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Approval, Approver, Held, Standing, Task, TaskState, UnixTime, Verdict};

const SELECT: &str = "SELECT body, state, valid_until FROM approvals";

/// The body, with the `state` and `valid_until` columns laid over it.
fn read(r: &Row) -> Result<Approval, StoreError> {
    let mut a: Approval = r.json(0)?;
    a.state = r.text(1)?.parse().map_err(StoreError::corrupt)?;
    a.valid_until = r.get(2)?;
    Ok(a)
}

fn insert(w: &mut dyn Write, a: &Approval) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO approvals (id, task, held_key, state, requested_at, valid_until, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            a.id.as_str(),
            a.task.as_str(),
            &a.held.key(),
            a.state.as_str(),
            a.requested_at,
            a.valid_until,
            &serde_json::to_string(a)?
        ],
        "approval",
        a.id.as_str(),
    )
}

fn save(w: &mut dyn Write, a: &Approval) -> Result<(), StoreError> {
    w.exec(
        "UPDATE approvals SET state = $2, valid_until = $3, body = $4 WHERE id = $1",
        args![
            a.id.as_str(),
            a.state.as_str(),
            a.valid_until,
            &serde_json::to_string(a)?
        ],
    )?;
    Ok(())
}

pub(crate) fn get(db: &mut dyn Sql, id: &str) -> Result<Option<Approval>, StoreError> {
    sql::first(db, &format!("{SELECT} WHERE id = $1"), args![id])?
        .map(|r| read(&r))
        .transpose()
}

/// Newest first. `state` filters on the stored state: an `expired` filter
/// also finds pending and granted ones whose time is up.
pub(crate) fn list(db: &mut dyn Sql, f: &ApprovalFilter) -> Result<Vec<Approval>, StoreError> {
    let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) } as i64;
    // A state filter is applied as of `now`, after reading: read a full page.
    let page = if f.state.is_some() { 1000 } else { limit };
    let rows = match &f.task {
        Some(t) => db.query(
            &format!("{SELECT} WHERE task = $1 ORDER BY requested_at DESC, id DESC LIMIT $2"),
            args![t.as_str(), page],
        )?,
        None => db.query(
            &format!("{SELECT} ORDER BY requested_at DESC, id DESC LIMIT $1"),
            args![page],
        )?,
    };
    let mut out = Vec::new();
    for r in &rows {
        let a = read(r)?;
        if f.state.is_none_or(|s| a.state_at(f.now) == s) {
            out.push(a);
        }
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(out)
}

/// The request that speaks for `candidate`'s thing on its task at `now`:
/// a denial (final) before a usable approval before a pending request.
/// Requests opened in the same second have no order, so the answer must
/// not depend on one.
fn speaking(
    w: &mut dyn Write,
    c: &Approval,
    now: UnixTime,
) -> Result<Option<Approval>, StoreError> {
    let rows = w.query(
        &format!("{SELECT} WHERE task = $1 AND held_key = $2"),
        args![c.task.as_str(), &c.held.key()],
    )?;
    let mut best: Option<(u8, Approval)> = None;
    for r in &rows {
        let a = read(r)?;
        if !a.covers(&c.task, &c.held) {
            continue;
        }
        let rank = match a.standing(now) {
            Standing::Refuses => 3,
            Standing::Allows => 2,
            Standing::Waits => 1,
            Standing::Lapsed => continue,
        };
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, a));
        }
    }
    Ok(best.map(|(_, a)| a))
}

/// What stands for `candidate`'s thing now: the request that speaks for
/// it (granted, pending or denied), else `candidate`, opened with `ev`. A
/// granted `once` approval is used up here.
pub(crate) fn resolve(
    w: &mut dyn Write,
    candidate: Approval,
    ev: NewEvent,
    now: UnixTime,
) -> Result<Resolved, StoreError> {
    if let Some(mut found) = speaking(w, &candidate, now)? {
        match found.standing(now) {
            Standing::Allows => {
                found.use_at(now);
                save(w, &found)?;
                let mut used = NewEvent::new(EventKind::ApprovalUsed, ev.actor.clone())
                    .agent(&found.agent)
                    .task(&found.task)
                    .detail(serde_json::json!({
                        "approval": found.id,
                        "state": found.state,
                    }));
                used.tool = found.held.tool().map(|t| t.to_string());
                w.audit(used)?;
                return Ok(Resolved::Allowed(found));
            }
            Standing::Waits => {
                return Ok(Resolved::Waiting {
                    approval: found,
                    opened: false,
                });
            }
            Standing::Refuses => return Ok(Resolved::Denied(found)),
            Standing::Lapsed => {}
        }
    }
    insert(w, &candidate)?;
    w.audit(ev)?;
    Ok(Resolved::Waiting {
        approval: candidate,
        opened: true,
    })
}

/// Create a task held for a person and its approval request, together.
pub(crate) fn create_held_task(
    w: &mut dyn Write,
    task: &Task,
    task_ev: NewEvent,
    approval: &Approval,
    approval_ev: NewEvent,
) -> Result<(), StoreError> {
    let holds_it = task.approval.as_ref() == Some(&approval.id)
        && approval.task == task.id
        && approval.held
            == (Held::Task {
                scope: task.scope.clone(),
            });
    if task.state != TaskState::PendingApproval || !holds_it {
        return Err(StoreError::Refused(
            "a held task is pending approval, names its request, and the request holds its scope",
        ));
    }
    tasks::create(w, task, task_ev)?;
    insert(w, approval)?;
    w.audit(approval_ev)
}

/// Suspend a live task and open the request that asks a person whether
/// to resume it (`Held::Resume`), in one write.
pub(crate) fn suspend_for_review(
    w: &mut dyn Write,
    approval: &Approval,
    suspend_ev: NewEvent,
    approval_ev: NewEvent,
    now: UnixTime,
) -> Result<TaskMoved, StoreError> {
    if !matches!(approval.held, Held::Resume { .. }) {
        return Err(StoreError::Refused(
            "a task is held for review by a request to resume it",
        ));
    }
    let moved = tasks::transition_by_id(
        w,
        approval.task.as_str(),
        TaskState::Suspended,
        now,
        suspend_ev,
    )?;
    insert(w, approval)?;
    w.audit(approval_ev)?;
    Ok(moved)
}

/// Record a person's verdict. For a held task, approving starts it and
/// denying revokes it, in the same write.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    w: &mut dyn Write,
    id: &str,
    verdict: Verdict,
    approver: &Approver,
    note: Option<String>,
    now: UnixTime,
    max_secs: u32,
    ev: NewEvent,
) -> Result<DecidedApproval, StoreError> {
    let mut a = get(w, id)?.ok_or_else(|| StoreError::NotFound {
        what: "approval",
        id: id.to_owned(),
    })?;
    let mut task = tasks::get(w, a.task.as_str())?.ok_or_else(|| StoreError::NotFound {
        what: "task",
        id: a.task.to_string(),
    })?;
    let waits = match a.held {
        Held::Task { .. } => true,
        Held::Resume { .. } => task.state == TaskState::Suspended && now < task.deadline,
        _ => task.is_live(now),
    };
    if !waits && !matches!(a.held, Held::Task { .. }) {
        return Err(StoreError::Refused(
            "the approval's task has ended; there is nothing left to approve",
        ));
    }
    a.decide(verdict, approver, note, now, max_secs, task.deadline)?;
    let mut moved = None;
    if let Held::Resume { rule } = &a.held {
        // Approving resumes the task the detector suspended; denying ends
        // it (and its subtree) for good.
        let (to, kind) = match verdict {
            Verdict::Approve { .. } => (TaskState::Active, EventKind::TaskResumed),
            Verdict::Deny => (TaskState::Revoked, EventKind::TaskRevoked),
        };
        let ev = NewEvent::new(kind, approver.actor.clone())
            .agent(&task.agent)
            .task(&task.id)
            .reasons(vec![format!("approval {} after anomaly {rule}", a.id)]);
        moved = Some(tasks::transition(w, &mut task, to, now, ev)?);
    }
    if let Held::Task { scope } = &a.held {
        if task.state != TaskState::PendingApproval
            || &task.scope != scope
            || task.approval.as_ref() != Some(&a.id)
        {
            return Err(StoreError::Refused(
                "the task is no longer waiting for this approval",
            ));
        }
        match verdict {
            Verdict::Approve { .. } => {
                task.transition(TaskState::Active, now)?;
                tasks::save(w, &task)?;
            }
            Verdict::Deny => {
                let revoked = NewEvent::new(EventKind::TaskRevoked, approver.actor.clone())
                    .agent(&task.agent)
                    .task(&task.id)
                    .reasons(vec![format!("approval {} denied", a.id)]);
                moved = Some(tasks::transition(
                    w,
                    &mut task,
                    TaskState::Revoked,
                    now,
                    revoked,
                )?);
            }
        }
    }
    save(w, &a)?;
    let decided = a.decided.as_ref();
    w.audit(ev.detail(serde_json::json!({
        "approval": a.id,
        "held": a.held,
        "extent": decided.and_then(|d| d.extent),
        "valid_until": a.valid_until,
        "note": decided.and_then(|d| d.note.as_deref()),
    })))?;
    Ok(DecidedApproval {
        approval: a,
        task,
        moved,
    })
}
