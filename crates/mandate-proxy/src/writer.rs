//! Appending to the audit spool. The request's own task writes its record
//! (one `write(2)` under a lock, numbered with the position it lands at),
//! so the record is in the file, and survives the proxy process being
//! killed, before the call goes on: no queue, no thread hand-off on the
//! request path. A sync thread makes the file durable at most once per
//! [`SYNC_WINDOW`] (group commit: a power loss costs at most the last
//! window) and only then hands the position to the shipper: a record the
//! broker chained must never vanish from the spool, or its position would
//! be handed out again and the broker would skip the new record as a
//! resend.

use crate::audit::ToolCall;
use crate::spool::{Position, SEGMENT_MAX, SpoolWriter, seq_of};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Longest a written record waits for its sync.
const SYNC_WINDOW: Duration = Duration::from_millis(5);

struct Tail {
    w: SpoolWriter,
    /// Written since the last sync.
    dirty: bool,
}

/// The spool's appending end, shared by every request.
pub struct SpoolLog {
    tail: Mutex<Tail>,
    /// Set to stop as a crash would: nothing more is written or synced.
    killed: AtomicBool,
    /// Set while the spool refuses writes (disk full, I/O error).
    broken: AtomicBool,
    /// The shipper caught up: start a new segment so the old one can go.
    rotate: AtomicBool,
    stop: AtomicBool,
}

impl SpoolLog {
    pub fn new(w: SpoolWriter) -> Self {
        SpoolLog {
            tail: Mutex::new(Tail { w, dirty: false }),
            killed: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            rotate: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Write one record at the end of the spool; it is in the file (not
    /// yet synced) when this returns true.
    pub fn append(&self, call: &mut ToolCall) -> bool {
        let mut t = self.lock();
        if self.killed.load(Ordering::Acquire) {
            return false;
        }
        call.seq = seq_of(t.w.position());
        let line = match serde_json::to_vec(call) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "tool-call record does not serialise");
                return false;
            }
        };
        let ok = match t.w.write(std::slice::from_ref(&line)) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit spool write failed; record lost; refusing calls until a write succeeds");
                false
            }
        };
        t.dirty |= ok;
        self.broken.store(!ok, Ordering::Release);
        ok
    }

    pub fn request_rotate(&self) {
        self.rotate.store(true, Ordering::Release);
    }

    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Sync what was written (if anything) and start a new segment when
    /// asked or when this one is full; tells the shipper the durable end.
    /// The sync itself runs outside the lock, so appends never wait for
    /// the disk.
    fn sync_round(&self, synced: &watch::Sender<Position>) {
        let (pos, file) = {
            let mut t = self.lock();
            if self.killed.load(Ordering::Acquire) || !t.dirty {
                (None, None)
            } else {
                t.dirty = false;
                (Some(t.w.position()), Some(t.w.sync_handle()))
            }
        };
        if let (Some(pos), Some(file)) = (pos, file) {
            match file.and_then(|f| f.sync_data()) {
                Ok(()) => {
                    let _ = synced.send(pos);
                }
                Err(e) => {
                    self.lock().dirty = true;
                    self.broken.store(true, Ordering::Release);
                    tracing::error!(error = %e, "audit spool sync failed; will retry");
                    return;
                }
            }
        }
        let mut t = self.lock();
        if self.killed.load(Ordering::Acquire) {
            return;
        }
        if self.rotate.swap(false, Ordering::AcqRel) || t.w.position().offset >= SEGMENT_MAX {
            // Whatever came in since the sync above goes down with the old segment.
            let done = if t.dirty {
                t.w.sync().map(|_| ())
            } else {
                Ok(())
            };
            match done.and_then(|()| t.w.rotate()) {
                Ok(pos) => {
                    t.dirty = false;
                    let _ = synced.send(pos);
                }
                Err(e) => tracing::warn!(error = %e, "audit spool rotation failed"),
            }
        }
    }
}

/// The sync thread: a round per window until stopped or dropped by
/// everyone else (one last round) or killed (none).
pub fn run(log: Arc<SpoolLog>, synced: watch::Sender<Position>) {
    loop {
        std::thread::sleep(SYNC_WINDOW);
        if log.killed.load(Ordering::Acquire) {
            return;
        }
        let stopping = log.stop.load(Ordering::Acquire) || Arc::strong_count(&log) == 1;
        log.sync_round(&synced);
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::call;
    use std::time::Instant;

    /// A record is in the file when `append` returns; the shipper sees its
    /// position only after the sync.
    #[test]
    fn appended_records_are_numbered_and_shipped_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = Arc::new(SpoolLog::new(w));
        let (synced, seen) = watch::channel(committed);
        let (mut a, mut b) = (call("a"), call("b"));
        assert!(log.append(&mut a));
        assert!(log.append(&mut b));
        assert_eq!(a.seq, seq_of(committed));
        assert!(b.seq > a.seq);
        assert_eq!(*seen.borrow(), committed, "nothing shipped before the sync");
        let thread = {
            let log = log.clone();
            std::thread::spawn(move || run(log, synced))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while *seen.borrow() == committed {
            assert!(Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        let batch = spool.read(committed, *seen.borrow(), 10).unwrap();
        let ids: Vec<serde_json::Value> = batch
            .lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(
            (ids[0]["id"].as_str(), ids[1]["id"].as_str()),
            (Some("a"), Some("b"))
        );
        assert_eq!(ids[1]["seq"].as_u64(), Some(b.seq));
        log.stop();
        thread.join().unwrap();
        assert!(!log.is_broken());
    }

    /// A spool that cannot be written refuses the record (the call is then
    /// refused) and marks the log broken until a write succeeds; a killed
    /// log writes nothing more.
    #[test]
    fn a_failing_or_killed_spool_refuses_records() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, mut w, _) = crate::spool::Spool::open(dir.path()).unwrap();
        w.onto_full_device();
        let log = SpoolLog::new(w);
        assert!(!log.append(&mut call("a")));
        assert!(log.is_broken());
        let dir = tempfile::tempdir().unwrap();
        let (_spool, w, _) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = SpoolLog::new(w);
        log.kill();
        assert!(!log.append(&mut call("b")));
    }
}
