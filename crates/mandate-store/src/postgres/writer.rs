//! The single writer thread for PostgreSQL, with the same group commit as
//! SQLite: everything queued runs in one transaction, each job that runs
//! SQL in its own savepoint, one COMMIT (one WAL flush on the server)
//! answers them all.
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
use mandate_core::Grant;
use postgres::Transaction;
use secrecy::{ExposeSecret, SecretString};
use std::sync::mpsc;

const MAX_GROUP: usize = 512;
/// `pg_try_advisory_lock` key: "mandate" in ASCII.
const WRITER_LOCK: i64 = 0x006d_616e_6461_7465;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// The write-side context a job sees. Its first statement opens a
/// savepoint (a job that only appends audit events needs none); its events
/// are chained at once but inserted with the whole group's in one
/// statement, so an audited decision costs no round trip of its own. The
/// hot path's other write, a minted grant, is batched the same way.
pub(crate) struct Tx<'a, 't> {
    db: Db<'a, Transaction<'t>>,
    chain: &'a mut ChainHead,
    pending: &'a mut Pending,
    now_ms: i64,
    savepoint: bool,
}

/// Rows a group writes in one statement each, just before COMMIT.
#[derive(Default)]
pub(crate) struct Pending {
    events: Vec<Event>,
    /// (jti, task, body, expires_at)
    grants: Vec<(String, String, String, i64)>,
}

impl<'a, 't> Tx<'a, 't> {
    /// The transaction, inside this job's savepoint.
    pub fn db(&mut self) -> Result<&mut Db<'a, Transaction<'t>>, StoreError> {
        if !self.savepoint {
            self.db.c.batch_execute("SAVEPOINT job")?;
            self.savepoint = true;
        }
        Ok(&mut self.db)
    }

    /// Chain one audit event; it is written with the group.
    pub fn audit(&mut self, ev: NewEvent) -> Result<Event, StoreError> {
        let e = self.chain.append(ev, self.now_ms);
        self.pending.events.push(e.clone());
        Ok(e)
    }

    /// Store a minted grant with the group. Its only possible failure at
    /// insert, a reused 128-bit random `jti`, would fail the whole group:
    /// refused, never half-applied.
    pub fn grant(&mut self, g: &Grant) -> Result<(), StoreError> {
        self.pending.grants.push((
            g.jti.to_string(),
            g.task.to_string(),
            serde_json::to_string(g)?,
            g.expires_at,
        ));
        Ok(())
    }
}

/// One round trip for the group's grants, one for its events.
fn insert_pending(db: &mut Db<'_, Transaction<'_>>, p: &Pending) -> Result<(), StoreError> {
    if !p.grants.is_empty() {
        let col = |f: fn(&(String, String, String, i64)) -> &str| {
            p.grants.iter().map(f).collect::<Vec<_>>()
        };
        db.exec(
            "INSERT INTO grants (jti, task, body, expires_at)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])",
            &[
                &col(|g| &g.0),
                &col(|g| &g.1),
                &col(|g| &g.2),
                &p.grants.iter().map(|g| g.3).collect::<Vec<_>>(),
            ],
        )?;
    }
    let events = &p.events;
    if events.is_empty() {
        return Ok(());
    }
    let reasons = events
        .iter()
        .map(|e| serde_json::to_string(&e.reasons))
        .collect::<Result<Vec<_>, _>>()?;
    let col = |f: fn(&Event) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    db.exec(
        "INSERT INTO events (seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash)
         SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                              $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[])",
        &[
            &events.iter().map(|e| e.seq as i64).collect::<Vec<_>>(),
            &events.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
            &col(|e| Some(e.kind.as_str())),
            &col(|e| Some(e.actor.as_str())),
            &col(|e| e.agent.as_deref()),
            &col(|e| e.task.as_deref()),
            &col(|e| e.tool.as_deref()),
            &col(|e| e.jti.as_deref()),
            &col(|e| e.decision.as_deref()),
            &reasons,
            &col(|e| e.request_id.as_deref()),
            &col(|e| Some(e.detail.as_str())),
            &col(|e| Some(e.prev_hash.as_str())),
            &col(|e| Some(e.hash.as_str())),
        ],
    )?;
    Ok(())
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
pub(crate) fn connect(
    url: &SecretString,
    tls: &super::Tls,
) -> Result<(Conn, ChainHead), StoreError> {
    let mut client = postgres::Client::connect(url.expose_secret(), tls.clone())?;
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])?;
    let locked: bool = super::ops::col(&row, 0)?;
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
    let row = client.query_one(
        "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
        &[],
    )?;
    let current: i64 = super::ops::col(&row, 0)?;
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
            next_seq: super::ops::col::<i64>(&r, 0)? as u64 + 1,
            last_hash: super::ops::col(&r, 1)?,
        },
        None => ChainHead {
            next_seq: 1,
            last_hash: GENESIS_HASH.into(),
        },
    })
}

pub(crate) fn run(
    url: SecretString,
    tls: super::Tls,
    first: (Conn, ChainHead),
    jobs: mpsc::Receiver<Job>,
) {
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
            match connect(&url, &tls) {
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
        let mut pending = Pending::default();
        for j in group.by_ref() {
            let saved = chain.clone();
            let mark = (pending.events.len(), pending.grants.len());
            let mut t = Tx {
                db: Db {
                    c: &mut tx,
                    stmts: &mut *stmts,
                },
                chain: &mut *chain,
                pending: &mut pending,
                now_ms,
                savepoint: false,
            };
            let (ok, done) = j(Ok(&mut t));
            let opened = t.savepoint;
            dones.push(done);
            if ok {
                if opened {
                    tx.batch_execute("RELEASE SAVEPOINT job")?;
                }
            } else {
                if opened {
                    // This job only.
                    tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
                }
                *chain = saved;
                pending.events.truncate(mark.0);
                pending.grants.truncate(mark.1);
            }
        }
        insert_pending(
            &mut Db {
                c: &mut tx,
                stmts: &mut *stmts,
            },
            &pending,
        )?;
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
