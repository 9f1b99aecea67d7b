//! The single writer thread and its group commit.
//!
//! Requests queue closures; the thread takes everything queued (up to a
//! cap), runs each inside its own savepoint of one transaction, commits once,
//! and only then answers every caller. One fsync covers the whole group, so
//! durable throughput grows with concurrency instead of being capped by the
//! disk's sync rate. A failing closure rolls back its savepoint only.

use crate::StoreError;
use mandate_audit::{ChainHead, Event, NewEvent};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

const MAX_GROUP: usize = 512;

/// The write-side context a job sees: the connection inside its savepoint
/// and the audit chain head, which rolls back with the savepoint.
pub(crate) struct Tx<'a> {
    pub conn: &'a Connection,
    chain: &'a mut ChainHead,
    now_ms: i64,
}

impl Tx<'_> {
    /// Chain and insert one audit event.
    pub fn audit(&mut self, ev: NewEvent) -> Result<Event, StoreError> {
        let e = self.chain.append(ev, self.now_ms);
        self.conn
            .prepare_cached(
                "INSERT INTO events (seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                e.seq as i64,
                e.time_ms,
                e.kind.as_str(),
                e.actor,
                e.agent,
                e.task,
                e.tool,
                e.jti,
                e.decision,
                serde_json::to_string(&e.reasons)?,
                e.request_id,
                e.detail,
                e.prev_hash,
                e.hash,
            ])?;
        Ok(e)
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub(crate) type Job = Box<dyn FnOnce(&mut Tx<'_>) -> (bool, Done) + Send>;

/// Wrap a typed closure as a job whose answer is sent after commit.
pub(crate) fn job<R, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<Result<R, StoreError>>)
where
    R: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |t| {
        let result = f(t);
        let ok = result.is_ok();
        let done: Done = Box::new(move |commit| {
            let _ = tx.send(commit.and(result));
        });
        (ok, done)
    });
    (job, rx)
}

pub(crate) fn run(
    mut conn: Connection,
    mut chain: ChainHead,
    jobs: mpsc::Receiver<Job>,
    restart: &AtomicBool,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let chain_before = chain.clone();
        let now_ms = now_ms();
        let mut dones = Vec::with_capacity(group.len());
        let outcome = (|| -> Result<(), StoreError> {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for j in group.drain(..) {
                let saved = chain.clone();
                let sp = tx.savepoint()?;
                let (ok, done) = j(&mut Tx {
                    conn: &sp,
                    chain: &mut chain,
                    now_ms,
                });
                if ok {
                    sp.commit()?;
                } else {
                    drop(sp); // rolls back this job only
                    chain = saved;
                }
                dones.push(done);
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = &outcome {
            tracing::error!(error = %e, group = dones.len(), "group commit failed; every write in it is refused");
            chain = chain_before;
        }
        for d in dones {
            d(outcome
                .as_ref()
                .map(|_| ())
                .map_err(StoreError::group_failed));
        }
        // Jobs whose closure never ran (an early `?` above) drop their
        // senders, which callers see as `Closed`; nothing is half-applied.
        drop(group);
        super::checkpoint::restart_log(&conn, restart);
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
