//! PostgreSQL backend: the SQLite backend's design against a server. One
//! writer thread commits groups of writes (each in its savepoint, with its
//! audit events) and holds the database's writer lock; reads use a small
//! pool of connections. `synchronous_commit` is the server's (default `on`):
//! a commit is flushed before anyone is told it happened.
//!
//! The connection URL may carry a password: it is kept as a secret and
//! never logged; [`PostgresStore`]'s `Debug` shows user, host and database.
//!
//! Connections use TLS (see `connect`) when the server offers it, and
//! insist on it with `sslmode=require` in the URL; `sslmode=disable` is
//! plain TCP. A client certificate, when given, is offered to servers that
//! authenticate clients by certificate (`hostssl … cert` in `pg_hba.conf`).

mod connect;
mod db;
mod reader;
mod writer;

use crate::StoreError;
use crate::backend::{Backend, Job, Writer};
use crate::pool::Pool;
use crate::sql::Sql;
use connect::Tls;
use db::Conn;
pub use mandate_pg_connect::PostgresTls;
pub use reader::PostgresAuditReader;
use secrecy::SecretString;

const READERS: usize = 8;

pub struct PostgresStore {
    url: SecretString,
    tls: Tls,
    target: String,
    writer: Writer,
    readers: Pool<Conn>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStore({})", self.target)
    }
}

impl PostgresStore {
    /// Connect, take the writer lock, migrate, and start the writer.
    /// Fails if the server is unreachable or another broker holds the lock.
    pub async fn open(url: SecretString, settings: PostgresTls) -> Result<Self, StoreError> {
        let target = connect::describe(&url)?;
        let tls = connect::tls(settings)?;
        let (writer_url, writer_tls) = (url.clone(), tls.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // The synchronous client runs its own small runtime: it must live
        // and die on a thread of its own, never on an async worker.
        // The head is known once connected: published before `open` returns.
        let writer =
            Writer::start(
                "mandate-pg-writer",
                None,
                move |jobs, published| match writer::connect(&writer_url, &writer_tls) {
                    Ok(first) => {
                        published.committed(&first.1);
                        let _ = ready_tx.send(Ok(()));
                        writer::run(writer_url, writer_tls, first, jobs, &published);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                writer.stop();
                return Err(e);
            }
            Err(_) => return Err(StoreError::Backend("the writer thread died".into())),
        }
        tracing::info!(database = %target, "opened PostgreSQL store");
        Ok(PostgresStore {
            url,
            tls,
            target,
            writer,
            readers: Pool::new(READERS),
        })
    }

    /// Stop accepting writes, let queued ones commit, join the writer.
    pub fn close(&self) {
        self.writer.stop();
        // A client owns a runtime, which may not be dropped on an async
        // worker thread.
        let readers = self.readers.drain();
        if !readers.is_empty() {
            let _ = std::thread::spawn(move || drop(readers)).join();
        }
    }
}

impl Backend for PostgresStore {
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        self.writer.send(job)
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&mut dyn Sql) -> Result<R, StoreError> + Send + 'static,
    {
        let (url, tls) = (self.url.clone(), self.tls.clone());
        self.readers
            .run(move |idle| {
                let connect = || connect::client(&url, &tls).map(Conn::new);
                let conn = match idle {
                    Some(mut c) => {
                        if c.is_alive() {
                            Ok(c)
                        } else {
                            connect()
                        }
                    }
                    None => connect(),
                };
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => return (Err(e), None),
                };
                let mut result = f(&mut conn.db());
                if result.is_err() && conn.client.is_closed() {
                    // The connection died under this read (a server restart):
                    // reads change nothing, so one retry on a new one is safe.
                    match connect() {
                        Ok(c) => conn = c,
                        Err(e) => return (Err(e), None),
                    }
                    result = f(&mut conn.db());
                }
                let keep = !conn.client.is_closed();
                (result, keep.then_some(conn))
            })
            .await
    }

    fn shut(&self) {
        self.close()
    }

    fn head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.head()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}
