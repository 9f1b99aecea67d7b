//! The single writer thread and its group commit.
//!
//! Requests queue jobs; the thread takes everything queued (up to a cap),
//! runs each inside its own savepoint of one transaction, commits once,
//! and only then answers every caller. One fsync covers the whole group, so
//! durable throughput grows with concurrency instead of being capped by the
//! disk's sync rate. A failing job rolls back its savepoint only.

use super::checkpoint;
use super::link::Link;
use crate::backend::{self, Done, Head, Job};
use crate::sql::{Arg, Row, Sql, Write};
use crate::{StoreError, events, grants};
use mandate_audit::{ChainHead, NewEvent};
use mandate_core::Grant;
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

/// What a job sees: the connection inside its savepoint and the audit
/// chain head, which rolls back with the savepoint. Events and grants are
/// inserted at once: in-process, a row costs no round trip.
struct Tx<'a> {
    link: Link<'a>,
    chain: &'a mut ChainHead,
    now_ms: i64,
}

impl Sql for Tx<'_> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.link.exec(sql, args)
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        self.link.query(sql, args)
    }

    fn try_insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        self.link.try_insert(sql, args)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.link.batch(sql)
    }
}

impl Write for Tx<'_> {
    fn audit(&mut self, ev: NewEvent) -> Result<(), StoreError> {
        let e = self.chain.append(ev, self.now_ms);
        events::insert(&mut self.link, &e)
    }

    fn audit_all(&mut self, evs: Vec<NewEvent>) -> Result<(), StoreError> {
        let chained: Vec<_> = evs
            .into_iter()
            .map(|ev| self.chain.append(ev, self.now_ms))
            .collect();
        events::insert_all(&mut self.link, &chained)
    }

    fn grant(&mut self, grant: &Grant) -> Result<(), StoreError> {
        grants::insert(&mut self.link, grant)
    }
}

pub(crate) fn run(
    mut conn: Connection,
    mut chain: ChainHead,
    jobs: mpsc::Receiver<Job>,
    restart: &AtomicBool,
    published: &Head,
) {
    while let Some(group) = backend::next_group(&jobs) {
        let chain_before = chain.clone();
        let (dones, outcome) = commit_group(&mut conn, &mut chain, group);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, group = dones.len(), "group commit failed; every write in it is refused");
            chain = chain_before;
        }
        published.committed(&chain);
        for d in dones {
            d(outcome
                .as_ref()
                .map(|_| ())
                .map_err(StoreError::group_failed));
        }
        checkpoint::restart_log(&conn, restart);
    }
}

fn commit_group(
    conn: &mut Connection,
    chain: &mut ChainHead,
    group: Vec<Job>,
) -> (Vec<Done>, Result<(), StoreError>) {
    let now_ms = backend::now_ms();
    let mut dones = Vec::with_capacity(group.len());
    let mut group = group.into_iter();
    let outcome = (|| -> Result<(), StoreError> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for j in group.by_ref() {
            let saved = chain.clone();
            let sp = tx.savepoint()?;
            let (ok, done) = j(Ok(&mut Tx {
                link: Link(&sp),
                chain: &mut *chain,
                now_ms,
            }));
            dones.push(done);
            if ok {
                sp.commit()?;
            } else {
                drop(sp); // rolls back this job only
                *chain = saved;
            }
        }
        tx.commit()?;
        Ok(())
    })();
    // Jobs that never ran (the transaction failed first) are told why.
    if let Err(e) = &outcome {
        dones.extend(backend::refuse(group, e));
    }
    (dones, outcome)
}
