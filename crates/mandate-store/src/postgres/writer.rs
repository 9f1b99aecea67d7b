//! The single writer thread for PostgreSQL, with the same group commit as
//! SQLite: everything queued runs in one transaction, each job that runs
//! SQL in its own savepoint, one COMMIT (one WAL flush on the server)
//! answers them all.
//!
//! Round trips are what a group costs here, so a job's audit events are
//! kept until the end of the group and written with everyone's in one
//! statement; so is the grant of a job that writes nothing else (minting,
//! the hot path). Such a grant is checked at the end with the rest: one
//! whose `jti` is taken or whose task is unknown refuses its own job
//! (`Conflict`, as on SQLite), events and all, and nothing else. Events
//! are chained only then, so a refused job leaves no gap in the chain.
//!
//! The writer's connection holds a session advisory lock, so a second
//! broker pointed at the same database refuses to start instead of forking
//! the audit chain. When the connection breaks, the group in flight fails
//! (nothing half-applied: it never committed, or it did and the head is
//! re-read), and the next group reconnects, retakes the lock and re-reads
//! the chain head.

use super::connect::{self, Tls};
use super::db::{Conn, Db};
use crate::backend::{self, Done, Head, Job};
use crate::sql::{Arg, Row, Sql, Write};
use crate::{StoreError, events, grants, schema};
use mandate_audit::{ChainHead, Event, NewEvent};
use mandate_core::Grant;
use postgres::Transaction;
use secrecy::SecretString;
use std::collections::HashSet;
use std::sync::mpsc;

/// `pg_try_advisory_lock` key: "mandate" in ASCII.
const WRITER_LOCK: i64 = 0x006d_616e_6461_7465;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_delegation.sql"),
    include_str!("../../migrations/postgres/0003_task_ended_at.sql"),
    include_str!("../../migrations/postgres/0004_approvals.sql"),
    include_str!("../../migrations/postgres/0005_webhooks.sql"),
    include_str!("../../migrations/postgres/0006_anomalies.sql"),
    include_str!("../../migrations/postgres/0007_governance.sql"),
    include_str!("../../migrations/postgres/0009_leases.sql"),
];

/// What a job leaves to the end of its group.
#[derive(Default)]
struct Deferred {
    events: Vec<NewEvent>,
    grants: Vec<Grant>,
}

/// What a job sees. Its first statement opens a savepoint (a job that only
/// appends events or mints a grant needs none).
struct Tx<'a, 't> {
    db: Db<'a, Transaction<'t>>,
    deferred: Deferred,
    savepoint: bool,
}

impl<'a, 't> Tx<'a, 't> {
    /// The transaction, inside this job's savepoint.
    fn db(&mut self) -> Result<&mut Db<'a, Transaction<'t>>, StoreError> {
        if !self.savepoint {
            self.db.c.batch_execute("SAVEPOINT job")?;
            self.savepoint = true;
        }
        Ok(&mut self.db)
    }
}

impl Sql for Tx<'_, '_> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.db()?.exec(sql, args)
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        self.db()?.query(sql, args)
    }

    fn try_insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        self.db()?.try_insert(sql, args)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.db()?.batch(sql)
    }
}

impl Write for Tx<'_, '_> {
    fn audit(&mut self, ev: NewEvent) -> Result<(), StoreError> {
        self.deferred.events.push(ev);
        Ok(())
    }

    fn audit_all(&mut self, evs: Vec<NewEvent>) -> Result<(), StoreError> {
        self.deferred.events.extend(evs);
        Ok(())
    }

    fn grant(&mut self, grant: &Grant) -> Result<(), StoreError> {
        self.deferred.grants.push(grant.clone());
        Ok(())
    }
}

/// Connect, take the writer lock, migrate, and read the chain head.
pub(crate) fn connect(url: &SecretString, tls: &Tls) -> Result<(Conn, ChainHead), StoreError> {
    let mut client = connect::client(url, tls)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])?
        .try_get(0)?;
    if !locked {
        return Err(StoreError::Backend(
            "another Mandate broker is writing to this database (its writer lock is held); one broker per database".into(),
        ));
    }
    let mut conn = Conn::new(client);
    schema::migrate(&mut conn.db(), MIGRATIONS)?;
    let head = events::chain_head(&mut conn.db())?;
    Ok((conn, head))
}

pub(crate) fn run(
    url: SecretString,
    tls: Tls,
    first: (Conn, ChainHead),
    jobs: mpsc::Receiver<Job>,
    published: &Head,
) {
    let mut state = Some(first);
    while let Some(group) = backend::next_group(&jobs) {
        if !state.as_mut().is_some_and(|(c, _)| c.is_alive()) {
            state = None;
            match connect(&url, &tls) {
                Ok(s) => {
                    tracing::info!("reconnected the database writer");
                    state = Some(s);
                }
                Err(e) => {
                    tracing::error!(error = %e, group = group.len(), "database unavailable; refusing this group of writes");
                    let why = StoreError::Backend(format!("database unavailable: {e}"));
                    for done in backend::refuse(group, &why) {
                        done(Ok(()));
                    }
                    continue;
                }
            }
        }
        let Some((conn, chain)) = state.as_mut() else {
            continue;
        };
        let (ran, outcome) = commit_group(conn, chain, group);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, group = ran.len(), "group commit failed; every write in it is refused");
            // The COMMIT may have landed before the connection broke: the
            // head is whatever the database says, never a guess.
            match events::chain_head(&mut conn.db()) {
                Ok(head) => *chain = head,
                Err(_) => state = None,
            }
        }
        if let Some((_, chain)) = &state {
            published.committed(chain);
        }
        for (done, refused) in ran {
            done(match (&outcome, refused) {
                (Err(e), _) => Err(e.group_failed()),
                (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
            });
        }
    }
    // Release the writer lock before the connection goes: the server drops
    // a closed session's locks only once it notices, and a broker opened
    // right after this one closes must find the lock free.
    if let Some((mut conn, _)) = state {
        let _ = conn
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK]);
    }
}

/// How to answer a job, and why it was refused after it ran (if it was).
type Answer = (Done, Option<StoreError>);

/// A job that ran, with what it left to the end of the group.
struct Ran {
    done: Done,
    refused: Option<StoreError>,
    deferred: Deferred,
}

fn commit_group(
    conn: &mut Conn,
    chain: &mut ChainHead,
    group: Vec<Job>,
) -> (Vec<Answer>, Result<(), StoreError>) {
    let now_ms = backend::now_ms();
    let mut ran: Vec<Ran> = Vec::with_capacity(group.len());
    let mut group = group.into_iter();
    let Conn { client, stmts, .. } = conn;
    let outcome = (|| -> Result<(), StoreError> {
        let mut tx = client.transaction()?;
        for j in group.by_ref() {
            let mut t = Tx {
                db: Db {
                    c: &mut tx,
                    stmts: &mut *stmts,
                },
                deferred: Deferred::default(),
                savepoint: false,
            };
            let (ok, done) = j(Ok(&mut t));
            // A job that wrote rows of its own (or several grants) stores
            // its grants in its savepoint, so they share its fate.
            let refused = if ok && (t.savepoint || t.deferred.grants.len() > 1) {
                std::mem::take(&mut t.deferred.grants)
                    .iter()
                    .try_for_each(|g| grants::insert(&mut t, g))
                    .err()
            } else {
                None
            };
            let (opened, deferred) = (t.savepoint, t.deferred);
            let kept = ok && refused.is_none();
            match (opened, kept) {
                (true, true) => tx.batch_execute("RELEASE SAVEPOINT job")?,
                // This job only.
                (true, false) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?
                }
                (false, _) => {}
            }
            ran.push(Ran {
                done,
                refused,
                deferred: if kept { deferred } else { Deferred::default() },
            });
        }
        let mut db = Db {
            c: &mut tx,
            stmts: &mut *stmts,
        };
        insert_grants(&mut db, &mut ran)?;
        let mut chained = Vec::new();
        for r in ran.iter_mut().filter(|r| r.refused.is_none()) {
            for ev in r.deferred.events.drain(..) {
                chained.push(chain.append(ev, now_ms));
            }
        }
        insert_events(&mut db, &chained)?;
        tx.commit()?;
        Ok(())
    })();
    let mut answers: Vec<_> = ran.into_iter().map(|r| (r.done, r.refused)).collect();
    // Jobs that never ran (the transaction failed first) are told why.
    if let Err(e) = &outcome {
        answers.extend(backend::refuse(group, e).into_iter().map(|d| (d, None)));
    }
    (answers, outcome)
}

fn refused_grant(g: &Grant) -> Option<StoreError> {
    Some(StoreError::Conflict {
        what: "grant",
        id: g.jti.to_string(),
    })
}

/// The deferred grants in one statement. One whose `jti` is taken (before
/// or earlier in the group) or whose task is unknown is not stored, and
/// refuses its job. Checked as of the end of the group, so a task created
/// later in the same group counts (SQLite would refuse that grant; no
/// caller mints for a task whose creation it has not seen commit).
fn insert_grants(db: &mut Db<'_, Transaction<'_>>, ran: &mut [Ran]) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    let mut batch = Vec::new();
    for (i, r) in ran.iter_mut().enumerate() {
        match r.deferred.grants.first() {
            Some(g) if r.refused.is_none() && !seen.insert(g.jti.to_string()) => {
                r.refused = refused_grant(g);
            }
            Some(_) if r.refused.is_none() => batch.push(i),
            _ => {}
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let grant = |i: &usize| &ran[*i].deferred.grants[0];
    let bodies = batch
        .iter()
        .map(|i| serde_json::to_string(grant(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = db.rows(
        "INSERT INTO grants (jti, task, body, expires_at)
         SELECT g.jti, g.task, g.body, g.expires_at
         FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[]) AS g (jti, task, body, expires_at)
         WHERE EXISTS (SELECT 1 FROM tasks WHERE tasks.id = g.task)
         ON CONFLICT (jti) DO NOTHING
         RETURNING jti",
        &[
            &batch.iter().map(|i| grant(i).jti.as_str()).collect::<Vec<_>>(),
            &batch.iter().map(|i| grant(i).task.as_str()).collect::<Vec<_>>(),
            &bodies,
            &batch.iter().map(|i| grant(i).expires_at).collect::<Vec<_>>(),
        ],
    )?;
    let stored = stored
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<HashSet<_>, _>>()?;
    for i in batch {
        let r = &mut ran[i];
        if !stored.contains(r.deferred.grants[0].jti.as_str()) {
            r.refused = refused_grant(&r.deferred.grants[0]);
        }
    }
    Ok(())
}

/// The group's events in one statement.
fn insert_events(db: &mut Db<'_, Transaction<'_>>, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let reasons = events
        .iter()
        .map(|e| serde_json::to_string(&e.reasons))
        .collect::<Result<Vec<_>, _>>()?;
    let col = |f: fn(&Event) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    db.execute(
        concat!(
            "INSERT INTO events (",
            events::columns!(),
            ") SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[],
                $13::TEXT[], $14::TEXT[])"
        ),
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
