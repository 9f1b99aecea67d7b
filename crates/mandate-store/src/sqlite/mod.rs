//! SQLite backend: one file, WAL, `synchronous=FULL` (a commit is on disk
//! before anyone is told it happened), versioned migrations.

mod checkpoint;
mod ops;
mod secrets;
pub use ops::read_events;
mod writer;

use crate::StoreError;
use mandate_audit::{ChainHead, GENESIS_HASH};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use writer::{Job, Tx};

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_secrets.sql"),
    include_str!("../../migrations/sqlite/0003_admin_token_revocation.sql"),
    include_str!("../../migrations/sqlite/0004_ingest_sources.sql"),
];

/// Read connections kept open; reads beyond this many wait for one rather
/// than open (and parse the schema of) a connection of their own.
const READERS: usize = 8;
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    readers: Mutex<Vec<Connection>>,
    read_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each job runs in a savepoint; keep their statement journal in memory
    // rather than in a temporary file that grows for the whole group.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (see `checkpoint`), not in the writer.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![i as i64 + 1, writer::now_ms() / 1000],
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}

fn chain_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match last {
        Some((seq, hash)) => ChainHead {
            next_seq: seq as u64 + 1,
            last_hash: hash,
        },
        None => ChainHead {
            next_seq: 1,
            last_hash: GENESIS_HASH.into(),
        },
    })
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and start the writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let head = chain_head(&conn)?;
        let restart = Arc::new(AtomicBool::new(false));
        let checkpointer = checkpoint::Checkpointer::start(path, restart.clone())?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("mandate-sqlite-writer".into())
            .spawn(move || writer::run(conn, head, rx, &restart))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READERS),
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
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        if let Some(c) = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            c.stop();
        }
    }

    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = writer::job(f);
        {
            let guard = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .ok_or(StoreError::Closed)?
                .send(job)
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                c
            }
        };
        let (result, conn) = tokio::task::spawn_blocking(move || (f(&conn), conn))
            .await
            .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?;
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}
