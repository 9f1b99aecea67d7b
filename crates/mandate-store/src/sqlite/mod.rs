//! SQLite backend: one file, WAL, `synchronous=FULL` (a commit is on disk
//! before anyone is told it happened), versioned migrations. One writer
//! thread commits groups of writes; reads use a small connection pool.

mod checkpoint;
mod link;
mod setup;
mod writer;

use crate::backend::{Backend, Job, Writer};
use crate::pool::Pool;
use crate::sql::Sql;
use crate::{StoreError, events};
use link::Link;
use mandate_audit::Event;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Read connections kept open; reads beyond this many wait for one rather
/// than open (and parse the schema of) a connection of their own.
const READERS: usize = 8;

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    readers: Pool<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

/// Read audit events straight from a connection (also used offline by `audit verify`).
pub fn read_events(conn: &Connection, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
    events::since(&mut Link(conn), after, limit)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and start the writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (conn, head) = setup::open_writer(path)?;
        let restart = Arc::new(AtomicBool::new(false));
        let checkpointer = checkpoint::Checkpointer::start(path, restart.clone())?;
        let first = head.clone();
        let writer = Writer::start(
            "mandate-sqlite-writer",
            Some(&first),
            move |jobs, published| writer::run(conn, head, jobs, &restart, &published),
        )?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer,
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Pool::new(READERS),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the file read-only for offline inspection (`audit verify`).
    pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound {
                what: "database",
                id: path.display().to_string(),
            });
        }
        Ok(Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }

    /// Stop accepting writes, let queued ones commit, join the writer.
    pub fn close(&self) {
        self.writer.stop();
        if let Some(c) = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            c.stop();
        }
    }
}

impl Backend for SqliteStore {
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        self.writer.send(job)
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&mut dyn Sql) -> Result<R, StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        self.readers
            .run(move |idle| {
                let conn = match idle.map_or_else(|| setup::open_reader(&path), Ok) {
                    Ok(c) => c,
                    Err(e) => return (Err(e), None),
                };
                (f(&mut Link(&conn)), Some(conn))
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

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}
