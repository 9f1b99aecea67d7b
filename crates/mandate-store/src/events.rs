//! The audit chain as stored: one row per event, by `seq`.

use crate::StoreError;
use crate::sql::{self, Row, Sql, Write, args};
use mandate_audit::{ChainHead, Event, EventKind, GENESIS_HASH, NewEvent};

/// The columns of an event, in [`event`]'s order; a macro, so that every
/// statement with them is put together at compile time (one is run for
/// each audit event).
macro_rules! columns {
    () => {
        "seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash"
    };
}
pub(crate) use columns;

const INSERT: &str = concat!(
    "INSERT INTO events (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
const SINCE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
);
/// Newest first; the partial index `events_anomalies` serves them.
const ANOMALIES: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM events WHERE kind = 'anomaly.detected' AND seq < $1 ORDER BY seq DESC LIMIT $2"
);
const TASK_ANOMALIES: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM events WHERE kind = 'anomaly.detected' AND seq < $1 AND task = $3 ORDER BY seq DESC LIMIT $2"
);

/// `anomaly.detected` events, newest first (see `Store::anomalies`).
pub(crate) fn anomalies(
    db: &mut dyn Sql,
    task: Option<&str>,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let before = sql::bigint(before.unwrap_or(i64::MAX as u64));
    let limit = limit.min(1000) as i64;
    let rows = match task {
        Some(t) => db.query(TASK_ANOMALIES, args![before, limit, t])?,
        None => db.query(ANOMALIES, args![before, limit])?,
    };
    rows.iter().map(event).collect()
}

const LAST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM events ORDER BY seq DESC LIMIT 1"
);

fn event(r: &Row) -> Result<Event, StoreError> {
    let kind = r.text(2)?;
    Ok(Event {
        seq: r.get::<i64>(0)? as u64,
        time_ms: r.get(1)?,
        kind: EventKind::parse(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event kind `{kind}`")))?,
        actor: r.get(3)?,
        agent: r.get(4)?,
        task: r.get(5)?,
        tool: r.get(6)?,
        jti: r.get(7)?,
        decision: r.get(8)?,
        reasons: r.json(9)?,
        request_id: r.get(10)?,
        detail: r.get(11)?,
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
    })
}

/// Store one chained event, for a writer that stores them one at a time.
pub(crate) fn insert(db: &mut dyn Sql, e: &Event) -> Result<(), StoreError> {
    db.exec(
        INSERT,
        args![
            sql::bigint(e.seq),
            e.time_ms,
            e.kind.as_str(),
            &e.actor,
            e.agent.as_deref(),
            e.task.as_deref(),
            e.tool.as_deref(),
            e.jti.as_deref(),
            e.decision.as_deref(),
            &serde_json::to_string(&e.reasons)?,
            e.request_id.as_deref(),
            &e.detail,
            &e.prev_hash,
            &e.hash
        ],
    )?;
    Ok(())
}

/// Rows per multi-row INSERT in [`insert_all`]: 500 × 14 parameters, far
/// below SQLite's limit of 32,766.
const ROWS_PER_INSERT: usize = 500;

/// `INSERT INTO events … VALUES (…), (…)` with `rows` rows of parameters.
fn insert_rows(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(80 + rows * 70);
    sql.push_str(concat!("INSERT INTO events (", columns!(), ") VALUES "));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 1..=14 {
            if c > 1 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * 14 + c);
        }
        sql.push(')');
    }
    sql
}

/// Store chained events, in order, [`ROWS_PER_INSERT`] to a statement
/// (for a writer that stores them as they come, like SQLite's).
pub(crate) fn insert_all(db: &mut dyn Sql, events: &[Event]) -> Result<(), StoreError> {
    static FULL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    // A cascade's events share their reasons: each list is serialised once.
    let mut reasons: Vec<String> = Vec::new();
    let mut reason_of = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if i == 0 || events[i - 1].reasons != e.reasons {
            reasons.push(serde_json::to_string(&e.reasons)?);
        }
        reason_of.push(reasons.len() - 1);
    }
    for (n, chunk) in events.chunks(ROWS_PER_INSERT).enumerate() {
        let first = n * ROWS_PER_INSERT;
        let mut args = Vec::with_capacity(chunk.len() * 14);
        for (i, e) in chunk.iter().enumerate() {
            args.extend_from_slice(args![
                sql::bigint(e.seq),
                e.time_ms,
                e.kind.as_str(),
                &e.actor,
                e.agent.as_deref(),
                e.task.as_deref(),
                e.tool.as_deref(),
                e.jti.as_deref(),
                e.decision.as_deref(),
                &reasons[reason_of[first + i]],
                e.request_id.as_deref(),
                &e.detail,
                &e.prev_hash,
                &e.hash
            ]);
        }
        let sql = if chunk.len() == ROWS_PER_INSERT {
            FULL.get_or_init(|| insert_rows(ROWS_PER_INSERT)).as_str()
        } else {
            &insert_rows(chunk.len())
        };
        db.exec(sql, &args)?;
    }
    Ok(())
}

/// Events with no other change (decisions, refusals).
pub(crate) fn append(w: &mut dyn Write, events: Vec<NewEvent>) -> Result<(), StoreError> {
    events.into_iter().try_for_each(|e| w.audit(e))
}

/// Up to `limit` events after `after`, in chain order.
pub(crate) fn since(db: &mut dyn Sql, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
    db.query(SINCE, args![sql::bigint(after), sql::bigint(limit as u64)])?
        .iter()
        .map(event)
        .collect()
}

/// The event with the highest `seq`, if any.
pub(crate) fn last(db: &mut dyn Sql) -> Result<Option<Event>, StoreError> {
    sql::first(db, LAST, &[])?.map(|r| event(&r)).transpose()
}

/// Where the next event goes: after the last stored one, or at the start.
pub(crate) fn chain_head(db: &mut dyn Sql) -> Result<ChainHead, StoreError> {
    Ok(match last(db)? {
        Some(e) => ChainHead {
            next_seq: e.seq + 1,
            last_hash: e.hash,
        },
        None => ChainHead {
            next_seq: 1,
            last_hash: GENESIS_HASH.into(),
        },
    })
}
