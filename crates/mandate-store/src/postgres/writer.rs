//! The single writer thread for PostgreSQL, with the same group commit as
//! SQLite: everything queued runs in one transaction, each job that runs
//! SQL in its own savepoint, one COMMIT (one WAL flush on the server)
//! answers them all.
//!
//! Round trips are what a group costs here, so a job's audit events are
//! kept until the end of the group and written with everyone's in one
//! statement, chained only then.
//!
//! The writer's connection holds a session advisory lock, so a second
//! broker pointed at the same database refuses to start instead of forking
//! the audit chain. When the connection breaks, the group in flight fails
//! (nothing half-applied: it never committed, or it did and the head is
//! re-read), and the next group reconnects, retakes the lock and re-reads
//! the chain head.

use super::connect::{self, Tls};
use super::db::{Conn, Db};
use crate::backend::{self, Done, Job};
use crate::sql::{Arg, Row, Sql, Write};
use crate::{StoreError, events, grants, schema};
use mandate_audit::{ChainHead, Event, NewEvent};
use mandate_core::Grant;
use postgres::Transaction;
use secrecy::SecretString;
use std::sync::mpsc;

/// `pg_try_advisory_lock` key: "mandate" in ASCII.
const WRITER_LOCK: i64 = 0x006d_616e_6461_7465;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// What a job sees. Its first statement opens a savepoint (a job that only
/// appends events needs none).
struct Tx<'a, 't> {
    db: Db<'a, Transaction<'t>>,
    events: Vec<NewEvent>,
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
        self.events.push(ev);
        Ok(())
    }

    fn grant(&mut self, grant: &Grant) -> Result<(), StoreError> {
        grants::insert(self, grant)
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
        let (dones, outcome) = commit_group(conn, chain, group);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, group = dones.len(), "group commit failed; every write in it is refused");
            // The COMMIT may have landed before the connection broke: the
            // head is whatever the database says, never a guess.
            match events::chain_head(&mut conn.db()) {
                Ok(head) => *chain = head,
                Err(_) => state = None,
            }
        }
        for done in dones {
            done(
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(StoreError::group_failed),
            );
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

fn commit_group(
    conn: &mut Conn,
    chain: &mut ChainHead,
    group: Vec<Job>,
) -> (Vec<Done>, Result<(), StoreError>) {
    let now_ms = backend::now_ms();
    let mut dones = Vec::with_capacity(group.len());
    let mut group = group.into_iter();
    let Conn { client, stmts, .. } = conn;
    let outcome = (|| -> Result<(), StoreError> {
        let mut tx = client.transaction()?;
        let mut chained = Vec::new();
        for j in group.by_ref() {
            let mut t = Tx {
                db: Db {
                    c: &mut tx,
                    stmts: &mut *stmts,
                },
                events: Vec::new(),
                savepoint: false,
            };
            let (ok, done) = j(Ok(&mut t));
            let (opened, events) = (t.savepoint, t.events);
            dones.push(done);
            match (opened, ok) {
                (true, true) => tx.batch_execute("RELEASE SAVEPOINT job")?,
                // This job only.
                (true, false) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?
                }
                (false, _) => {}
            }
            if ok {
                chained.extend(events.into_iter().map(|ev| chain.append(ev, now_ms)));
            }
        }
        insert_events(
            &mut Db {
                c: &mut tx,
                stmts: &mut *stmts,
            },
            &chained,
        )?;
        tx.commit()?;
        Ok(())
    })();
    // Jobs that never ran (the transaction failed first) are told why.
    if let Err(e) = &outcome {
        dones.extend(backend::refuse(group, e));
    }
    (dones, outcome)
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
        &format!(
            "INSERT INTO events ({})
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                                  $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[])",
            events::COLUMNS
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
