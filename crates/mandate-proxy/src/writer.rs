//! The audit spool's writer thread. It takes records off a queue, appends
//! each batch with one `write`, tells write-ahead callers their record is
//! in the file (so it survives the proxy process being killed), and syncs
//! at most once per [`SYNC_WINDOW`] (group commit: a power loss costs at
//! most the last window). Only synced positions go to the shipper: a
//! record the broker chained must never vanish from the spool, or its
//! position would be handed out again and the broker would skip the new
//! record as a resend.

use crate::audit::ToolCall;
use crate::spool::{Position, SEGMENT_MAX, SpoolWriter, seq_of};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Records queued before senders wait.
pub const QUEUE: usize = 65_536;
/// Most records written at once.
const MAX_WRITE: usize = 4096;
/// Shortest time between two spool syncs.
const SYNC_WINDOW: Duration = Duration::from_millis(5);

pub enum Msg {
    /// A record; for one written ahead of its call, who waits to hear
    /// whether it reached the file.
    Record(Box<ToolCall>, Option<oneshot::Sender<bool>>),
    Rotate,
    Close,
}

/// Shared with the rest of the pipeline.
pub struct Flags {
    /// Set to stop as a crash would: nothing more is written.
    pub killed: Arc<AtomicBool>,
    /// Set while the spool refuses writes (disk full, I/O error).
    pub broken: Arc<AtomicBool>,
}

/// What one pass took off the queue.
#[derive(Default)]
struct Batch {
    lines: Vec<Vec<u8>>,
    waiters: Vec<oneshot::Sender<bool>>,
    rotate: bool,
    close: bool,
}

/// Everything queued (up to [`MAX_WRITE`] records), each numbered with the
/// position its line will start at.
fn take(first: Msg, rx: &Receiver<Msg>, mut at: Position) -> Batch {
    let mut b = Batch::default();
    let mut msg = Some(first);
    while let Some(m) = msg.take() {
        match m {
            Msg::Record(mut c, wait) => {
                c.seq = seq_of(at);
                match serde_json::to_vec(&c) {
                    Ok(line) => {
                        at.offset += line.len() as u64 + 1;
                        b.lines.push(line);
                        b.waiters.extend(wait);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "tool-call record does not serialise");
                        if let Some(w) = wait {
                            let _ = w.send(false);
                        }
                    }
                }
            }
            Msg::Rotate => b.rotate = true,
            Msg::Close => {
                b.close = true;
                break;
            }
        }
        if b.lines.len() < MAX_WRITE {
            msg = rx.try_recv().ok();
        }
    }
    b
}

pub fn run(mut w: SpoolWriter, rx: Receiver<Msg>, synced: watch::Sender<Position>, f: Flags) {
    let mut last_sync = Instant::now() - SYNC_WINDOW;
    let mut dirty = false;
    loop {
        // Wait for records; while written data awaits its sync, only until
        // the sync window ends.
        let first = if dirty {
            match rx.recv_timeout(SYNC_WINDOW.saturating_sub(last_sync.elapsed())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Msg::Close),
            }
        } else {
            Some(rx.recv().unwrap_or(Msg::Close))
        };
        let b = match first {
            Some(m) => take(m, &rx, w.position()),
            None => Batch::default(),
        };
        if f.killed.load(Ordering::SeqCst) {
            return;
        }
        if !b.lines.is_empty() {
            let ok = match w.write(&b.lines) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, records = b.lines.len(), "audit spool write failed; records lost; refusing calls until a write succeeds");
                    false
                }
            };
            f.broken.store(!ok, Ordering::Release);
            dirty |= ok;
            for waiter in b.waiters {
                let _ = waiter.send(ok);
            }
        }
        let rotate = b.rotate || w.position().offset >= SEGMENT_MAX;
        if dirty && (b.close || rotate || last_sync.elapsed() >= SYNC_WINDOW) {
            last_sync = Instant::now();
            match w.sync() {
                Ok(pos) => {
                    dirty = false;
                    let _ = synced.send(pos);
                }
                Err(e) => {
                    f.broken.store(true, Ordering::Release);
                    tracing::error!(error = %e, "audit spool sync failed; will retry");
                }
            }
        }
        if rotate && !dirty {
            match w.rotate() {
                Ok(pos) => {
                    let _ = synced.send(pos);
                }
                Err(e) => tracing::warn!(error = %e, "audit spool rotation failed"),
            }
        }
        if b.close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::call;
    use std::sync::mpsc::sync_channel;

    fn start(
        w: SpoolWriter,
    ) -> (
        std::sync::mpsc::SyncSender<Msg>,
        watch::Receiver<Position>,
        Arc<AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = sync_channel(8);
        let (synced, seen) = watch::channel(w.position());
        let broken = Arc::new(AtomicBool::new(false));
        let flags = Flags {
            killed: Arc::new(AtomicBool::new(false)),
            broken: broken.clone(),
        };
        let thread = std::thread::spawn(move || run(w, rx, synced, flags));
        (tx, seen, broken, thread)
    }

    /// A write-ahead caller hears back once its record is in the file, and
    /// the shipper only sees the position after the sync.
    #[test]
    fn write_ahead_is_acknowledged_after_the_write_and_shipped_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, w, committed) = crate::spool::Spool::open(dir.path()).unwrap();
        let (tx, seen, broken, thread) = start(w);
        let (ack, acked) = oneshot::channel();
        tx.send(Msg::Record(Box::new(call("a")), Some(ack)))
            .unwrap();
        assert!(acked.blocking_recv().unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while *seen.borrow() == committed {
            assert!(Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        let b = spool.read(committed, *seen.borrow(), 10).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&b.lines[0]).unwrap();
        assert_eq!(
            (line["id"].as_str(), line["seq"].as_u64()),
            (Some("a"), Some(seq_of(committed)))
        );
        assert!(!broken.load(Ordering::Acquire));
        tx.send(Msg::Close).unwrap();
        thread.join().unwrap();
    }

    /// A spool that cannot be written marks the log unwritable (the proxy
    /// then refuses calls and reports not ready) and tells a write-ahead
    /// caller its record did not make it.
    #[test]
    fn a_failing_spool_is_noticed_and_refuses_write_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, mut w, _) = crate::spool::Spool::open(dir.path()).unwrap();
        w.onto_full_device();
        let (tx, _seen, broken, thread) = start(w);
        let (ack, acked) = oneshot::channel();
        tx.send(Msg::Record(Box::new(call("a")), Some(ack)))
            .unwrap();
        assert!(!acked.blocking_recv().unwrap());
        assert!(broken.load(Ordering::Acquire));
        tx.send(Msg::Close).unwrap();
        thread.join().unwrap();
    }
}
