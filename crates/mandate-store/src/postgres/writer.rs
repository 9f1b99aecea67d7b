//! The single writer thread for PostgreSQL, with the same group commit as
//! SQLite: everything queued runs in one transaction, each job in its own
//! savepoint, one COMMIT (one WAL flush on the server) answers them all.
//!
//! The writer's connection holds a session advisory lock, so a second
//! broker pointed at the same database refuses to start instead of forking
//! the audit chain. When the connection breaks, the group in flight fails
//! (nothing half-applied: it never committed, or it did and the head is
//! re-read), and the next group reconnects, retakes the lock and re-reads
//! the chain head.

use super::db::{Conn, Db};
use crate::StoreError;
use mandate_audit::{ChainHead, Event, GENESIS_HASH, NewEvent};
use postgres::{NoTls, Transaction};
use secrecy::{ExposeSecret, SecretString};
use std::sync::mpsc;

const MAX_GROUP: usize = 512;
/// `pg_try_advisory_lock` key: "mandate" in ASCII.
const WRITER_LOCK: i64 = 0x006d_616e_6461_7465;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// The write-side context a job sees: its savepoint and the chain head,
/// which rolls back with the savepoint.
pub(crate) struct Tx<'a, 't> {
    pub db: Db<'a, Transaction<'t>>,
    chain: &'a mut ChainHead,
    now_ms: i64,
}

impl Tx<'_, '_> {
    /// Chain and insert one audit event.
    pub fn audit(&mut self, ev: NewEvent) -> Result<Event, StoreError> {
        let e = self.chain.append(ev, self.now_ms);
        self.db.exec(
            "INSERT INTO events (seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &(e.seq as i64),
                &e.time_ms,
                &e.kind.as_str(),
                &e.actor,
                &e.agent,
                &e.task,
                &e.tool,
                &e.jti,
                &e.decision,
                &serde_json::to_string(&e.reasons)?,
                &e.request_id,
                &e.detail,
                &e.prev_hash,
                &e.hash,
            ],
        )?;
        Ok(e)
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job runs against its savepoint, or is told why there is none.
pub(crate) type Job = Box<dyn FnOnce(Result<&mut Tx<'_, '_>, String>) -> (bool, Done) + Send>;

pub(crate) fn job<R, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<Result<R, StoreError>>)
where
    R: Send + 'static,
    F: FnOnce(&mut Tx<'_, '_>) -> Result<R, StoreError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |t| {
        let result = match t {
            Ok(t) => f(t),
            Err(why) => Err(StoreError::Backend(why)),
        };
        let ok = result.is_ok();
        let done: Done = Box::new(move |commit| {
            let _ = tx.send(commit.and(result));
        });
        (ok, done)
    });
    (job, rx)
}

/// Connect, take the writer lock, migrate, and read the chain head.
pub(crate) fn connect(url: &SecretString) -> Result<(Conn, ChainHead), StoreError> {
    let mut client = postgres::Client::connect(url.expose_secret(), NoTls)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])?
        .get(0);
    if !locked {
        return Err(StoreError::Backend(
            "another Mandate broker is writing to this database (its writer lock is held); one broker per database".into(),
        ));
    }
    migrate(&mut client)?;
    let head = chain_head(&mut client)?;
    Ok((Conn::new(client), head))
}

fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )?
        .get(0);
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        // DDL is transactional here: a failed migration leaves nothing behind.
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(i as i64 + 1), &(now_ms() / 1000)],
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}

fn chain_head(client: &mut postgres::Client) -> Result<ChainHead, StoreError> {
    let last = client.query_opt(
        "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    Ok(match last {
        Some(r) => ChainHead {
            next_seq: r.get::<_, i64>(0) as u64 + 1,
            last_hash: r.get(1),
        },
        None => ChainHead {
            next_seq: 1,
            last_hash: GENESIS_HASH.into(),
        },
    })
}

pub(crate) fn run(url: SecretString, first: (Conn, ChainHead), jobs: mpsc::Receiver<Job>) {
    let mut state = Some(first);
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        if !state.as_mut().is_some_and(|(c, _)| c.is_alive()) {
            state = None;
            match connect(&url) {
                Ok(s) => {
                    tracing::info!("reconnected the database writer");
                    state = Some(s);
                }
                Err(e) => {
                    tracing::error!(error = %e, group = group.len(), "database unavailable; refusing this group of writes");
                    for j in group {
                        let (_, done) = j(Err(format!("database unavailable: {e}")));
                        done(Ok(()));
                    }
                    continue;
                }
            }
        }
        let Some((conn, chain)) = state.as_mut() else {
            continue;
        };
        let (dones, outcome) = commit_group(conn, chain, group);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, group = dones.len(), "group commit failed; every write in it is refused");
            // The COMMIT may have landed before the connection broke: the
            // head is whatever the database says, never a guess.
            match chain_head(&mut conn.client) {
                Ok(head) => *chain = head,
                Err(_) => state = None,
            }
        }
        for d in dones {
            d(outcome
                .as_ref()
                .map(|_| ())
                .map_err(StoreError::group_failed));
        }
    }
}

fn commit_group(
    conn: &mut Conn,
    chain: &mut ChainHead,
    group: Vec<Job>,
) -> (Vec<Done>, Result<(), StoreError>) {
    let now_ms = now_ms();
    let mut dones = Vec::with_capacity(group.len());
    let mut group = group.into_iter();
    let Conn { client, stmts, .. } = conn;
    let outcome = (|| -> Result<(), StoreError> {
        let mut tx = client.transaction()?;
        for j in group.by_ref() {
            let saved = chain.clone();
            let mut sp = tx.transaction()?;
            let (ok, done) = j(Ok(&mut Tx {
                db: Db {
                    c: &mut sp,
                    stmts: &mut *stmts,
                },
                chain: &mut *chain,
                now_ms,
            }));
            if ok {
                sp.commit()?;
            } else {
                sp.rollback()?; // this job only
                *chain = saved;
            }
            dones.push(done);
        }
        tx.commit()?;
        Ok(())
    })();
    // Jobs whose closure never ran (an early `?` above) are told why.
    for j in group {
        let (_, done) = j(Err(
            "the group's transaction failed before this write ran".into()
        ));
        dones.push(done);
    }
    (dones, outcome)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
