//! Appending to the audit spool. The request's own task writes its record
//! (under a lock, numbered with the position it lands at): no queue, no
//! thread hand-off on the request path.
//!
//! A record that opens a call is handed to the OS (`write(2)`) before the
//! call goes on, so it survives the proxy process being killed. A call's
//! outcome record is only buffered: it rides along with the next opening
//! record's write, or with the sync thread's flush within [`SYNC_WINDOW`].
//! That halves the writes per call; a `kill -9` can lose the outcomes of
//! the calls that ended in the last few milliseconds (never the record that
//! they were made), which is what a power loss already costs.
//!
//! The sync thread makes the file durable at most once per window (group
//! commit) and only then hands the position to the shipper: a record the
//! broker chained must never vanish from the spool, or its position would
//! be handed out again and the broker would skip the new record as a
//! resend.
//!
//! Records are `mandate_wire::ToolCall`s, one JSON line each; what a
//! record holds and when it is shipped is `audit`'s business.

use crate::spool::{Position, SEGMENT_MAX, SpoolWriter, seq_of};
use mandate_wire::ToolCall;
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
    /// Records sit in the write buffer, not yet in the file.
    buffered: bool,
}

/// When an appended record must be in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Before `append` returns.
    Now,
    /// With the next `Now` record or the next sync round.
    Soon,
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
            tail: Mutex::new(Tail {
                w,
                dirty: false,
                buffered: false,
            }),
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

    /// Write one record at the end of the spool. With [`Landing::Now`] it
    /// is in the file (not yet synced) when this returns true; with
    /// [`Landing::Soon`], in the write buffer.
    pub fn append(&self, call: &mut ToolCall, landing: Landing) -> bool {
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
        let written = match landing {
            Landing::Now => t.w.write(std::slice::from_ref(&line)),
            Landing::Soon => t.w.buffer(&line),
        };
        let ok = match written {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit spool write failed; record lost; refusing calls until a write succeeds");
                false
            }
        };
        t.dirty |= ok;
        // A failed write empties the buffer (see `SpoolWriter::flush`).
        t.buffered = ok && landing == Landing::Soon;
        self.broken.store(!ok, Ordering::Release);
        ok
    }

    pub fn request_rotate(&self) {
        self.rotate.store(true, Ordering::Release);
    }

    /// Stop as a crash would: buffered records are lost, nothing more is
    /// written.
    pub fn kill(&self) {
        let mut t = self.lock();
        self.killed.store(true, Ordering::Release);
        t.w.discard_buffered();
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
                if std::mem::take(&mut t.buffered)
                    && let Err(e) = t.w.flush()
                {
                    self.broken.store(true, Ordering::Release);
                    tracing::error!(error = %e, "audit spool write failed; the outcome records waiting for it are lost");
                    return;
                }
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
                    t.buffered = false;
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

    /// Start the sync thread and wait for its first sync past `committed`.
    fn sync_thread(
        log: &Arc<SpoolLog>,
        synced: watch::Sender<Position>,
        seen: &watch::Receiver<Position>,
        committed: Position,
    ) -> std::thread::JoinHandle<()> {
        let thread = {
            let log = log.clone();
            std::thread::spawn(move || run(log, synced))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while *seen.borrow() == committed {
            assert!(Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        thread
    }

    /// A record is in the file when `append` returns; the shipper sees its
    /// position only after the sync.
    #[test]
    fn appended_records_are_numbered_and_shipped_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = Arc::new(SpoolLog::new(w));
        let (synced, seen) = watch::channel(committed);
        let (mut a, mut b) = (call("a"), call("b"));
        assert!(log.append(&mut a, Landing::Now));
        assert!(log.append(&mut b, Landing::Now));
        assert_eq!(a.seq, seq_of(committed));
        assert!(b.seq > a.seq);
        assert_eq!(*seen.borrow(), committed, "nothing shipped before the sync");
        let thread = sync_thread(&log, synced, &seen, committed);
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
        w.limit_room(Some(0));
        let log = SpoolLog::new(w);
        assert!(!log.append(&mut call("a"), Landing::Now));
        assert!(log.is_broken());
        let dir = tempfile::tempdir().unwrap();
        let (_spool, w, _) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = SpoolLog::new(w);
        log.kill();
        assert!(!log.append(&mut call("b"), Landing::Now));
    }

    /// A disk that fills up part-way through a write: the call's record is
    /// refused, and neither it nor a half of anything is left in the file
    /// for later writes to follow; once there is room again, records go
    /// on from where the file ended, numbered from there.
    #[test]
    fn a_write_that_fails_part_way_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = SpoolLog::new(w);
        let mut a = call("a");
        assert!(log.append(&mut a, Landing::Now));
        let mut done = call("a-done");
        done.stage = mandate_wire::Stage::Completed;
        assert!(log.append(&mut done, Landing::Soon));
        log.lock().w.limit_room(Some(20));
        let mut b = call("b");
        assert!(!log.append(&mut b, Landing::Now), "the disk is full");
        assert!(log.is_broken());
        assert_eq!(in_file(&spool, committed), ["a"], "a half record was left");
        log.lock().w.limit_room(None);
        let mut c = call("c");
        assert!(log.append(&mut c, Landing::Now));
        assert!(!log.is_broken());
        assert_eq!(in_file(&spool, committed), ["a", "c"]);
        assert_eq!(c.seq, done.seq, "numbered from where the file ended");
    }

    /// The ids of the records in the spool's files (not its buffers).
    fn in_file(spool: &crate::spool::Spool, from: Position) -> Vec<String> {
        let end = Position {
            segment: from.segment,
            offset: u64::MAX,
        };
        spool
            .read(from, end, 100)
            .unwrap()
            .lines
            .iter()
            .map(|l| serde_json::from_slice::<ToolCall>(l).unwrap().id)
            .collect()
    }

    /// An outcome waits in the buffer for the next opening record's write;
    /// a crash loses what waits there and nothing else, and positions stay
    /// those of the file.
    #[test]
    fn outcomes_ride_with_the_next_write_and_a_crash_loses_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = SpoolLog::new(w);
        let mut done = call("a-done");
        done.stage = mandate_wire::Stage::Completed;
        assert!(log.append(&mut call("a"), Landing::Now));
        assert!(log.append(&mut done, Landing::Soon));
        assert_eq!(in_file(&spool, committed), ["a"]);
        let mut b = call("b");
        assert!(log.append(&mut b, Landing::Now));
        assert_eq!(in_file(&spool, committed), ["a", "a-done", "b"]);
        assert!(done.seq < b.seq);
        assert!(log.append(&mut call("b-done"), Landing::Soon));
        log.kill();
        drop(log);
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        assert_eq!(in_file(&spool, committed), ["a", "a-done", "b"]);
        assert!(
            seq_of(w.position()) > b.seq,
            "the next record is numbered after the last one in the file"
        );
    }

    /// With no call after it, an outcome reaches the file, and the
    /// shipper, with the next sync round.
    #[test]
    fn the_sync_round_flushes_a_waiting_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let log = Arc::new(SpoolLog::new(w));
        let (synced, seen) = watch::channel(committed);
        assert!(log.append(&mut call("done"), Landing::Soon));
        assert!(in_file(&spool, committed).is_empty());
        let thread = sync_thread(&log, synced, &seen, committed);
        let batch = spool.read(committed, *seen.borrow(), 10).unwrap();
        assert_eq!(batch.lines.len(), 1);
        assert_eq!(in_file(&spool, committed), ["done"]);
        log.stop();
        thread.join().unwrap();
    }
}
