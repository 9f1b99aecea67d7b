//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the committing connection, so
//! the writer thread would stop taking jobs while it copies megabytes back
//! into the database file and syncs it, and every request queued behind it
//! would wait. Instead a thread of its own copies committed frames back a
//! few times a second in PASSIVE mode, which never blocks the writer.
//!
//! Under steady load the log never drains completely, and SQLite only
//! starts it over from the top when it has. So once it passes
//! [`RESTART_FRAMES`] this thread asks the writer to restart it between two
//! groups: by then nearly every frame is already copied, so that is short.

use super::setup::BUSY_TIMEOUT;
use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How often committed frames are copied back.
const EVERY: Duration = Duration::from_millis(100);
/// Log length (pages; 64 MiB at 4 KiB) past which the writer restarts it.
pub(crate) const RESTART_FRAMES: i64 = 16_384;
/// How long the writer waits for readers of old frames before trying later.
const RESTART_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What a `PRAGMA wal_checkpoint` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub busy: bool,
    /// Frames in the log.
    pub log: i64,
}

pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> Result<Progress, StoreError> {
    Ok(
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok(Progress {
                busy: r.get::<_, i64>(0)? != 0,
                log: r.get(1)?,
            })
        })?,
    )
}

impl Checkpointer {
    /// Start copying back for the database at `path`; `restart` is raised
    /// when the writer should restart the log.
    pub fn start(path: &Path, restart: Arc<AtomicBool>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // Sync the log before copying and the database after.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mandate-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(p) if p.log >= RESTART_FRAMES => restart.store(true, Ordering::Release),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Run by the writer between groups when asked: restart the log from the
/// top. Gives up quickly if a reader still uses old frames; the checkpoint
/// thread asks again on its next round while the log is still long, so the
/// writer waits at most `RESTART_WAIT` per round, not per group.
pub(crate) fn restart_log(conn: &Connection, restart: &AtomicBool) {
    if !restart.swap(false, Ordering::AcqRel) {
        return;
    }
    let _ = conn.busy_timeout(RESTART_WAIT);
    match checkpoint(conn, "RESTART") {
        Ok(p) if p.busy => tracing::debug!(log = p.log, "WAL restart deferred: readers busy"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "WAL restart failed; will retry"),
    }
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_back_without_the_writer_and_restarts_the_log_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t (x BLOB);",
            )
            .unwrap();
        let restart = Arc::new(AtomicBool::new(false));
        let cp = Checkpointer::start(&path, restart.clone()).unwrap();
        for _ in 0..20 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(8192))", [])
                .unwrap();
        }
        // The background thread copies the rows into the database file
        // on its own (the writer never checkpoints).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < 20 * 8192 {
            assert!(std::time::Instant::now() < deadline, "never copied back");
            std::thread::sleep(Duration::from_millis(20));
        }
        cp.stop();
        // Asked to restart: afterwards the log starts over from the top.
        restart.store(true, Ordering::Release);
        restart_log(&writer, &restart);
        assert!(!restart.load(Ordering::Acquire));
        writer
            .execute("INSERT INTO t VALUES (zeroblob(10))", [])
            .unwrap();
        let p = checkpoint(&writer, "PASSIVE").unwrap();
        assert!(p.log <= 4, "log did not restart: {p:?}");
    }
}
