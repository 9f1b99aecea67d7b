//! What a backend provides to the one `Store` implementation (`store.rs`):
//! a writer thread that takes queued write jobs and commits them in groups,
//! and pooled reads. The job protocol is the same for both writers.

use crate::StoreError;
use crate::sql::{Sql, Write};
use mandate_audit::ChainHead;
use std::future::Future;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

/// At most this many writes share one commit.
const MAX_GROUP: usize = 512;

/// Answers a job's caller once the group's fate is known: `Err` if the
/// group did not commit (or the job was refused after it ran).
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued write. Run against its savepoint of the group's transaction, or
/// told why there is none; says whether it succeeded (a failed one is
/// rolled back alone) and how to answer its caller.
pub(crate) type Job = Box<dyn FnOnce(Result<&mut dyn Write, StoreError>) -> (bool, Done) + Send>;

/// Wrap a typed write as a job whose answer is sent after commit.
pub(crate) fn job<R, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<Result<R, StoreError>>)
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> Result<R, StoreError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |w| {
        let result = w.and_then(f);
        let ok = result.is_ok();
        let done: Done = Box::new(move |commit| {
            let _ = tx.send(commit.and(result));
        });
        (ok, done)
    });
    (job, rx)
}

/// The next group: the first queued job (waiting for it) and whatever else
/// is queued, up to [`MAX_GROUP`]. `None` once the queue is closed.
pub(crate) fn next_group(jobs: &mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let first = jobs.recv().ok()?;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(j) => group.push(j),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Tell jobs that never ran why; nothing of theirs was applied.
pub(crate) fn refuse(jobs: impl IntoIterator<Item = Job>, why: &StoreError) -> Vec<Done> {
    jobs.into_iter()
        .map(|j| j(Err(why.group_failed())).1)
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The writer's side of [`Store::appended`](crate::Store::appended):
/// the chain's last `seq`, published after each commit that moved it.
#[derive(Clone)]
pub(crate) struct Head(tokio::sync::watch::Sender<u64>);

impl Head {
    pub fn committed(&self, chain: &ChainHead) {
        let seq = chain.next_seq.saturating_sub(1);
        self.0.send_if_modified(|h| {
            let moved = *h != seq;
            *h = seq;
            moved
        });
    }
}

/// The writer thread and its queue.
pub(crate) struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    head: tokio::sync::watch::Receiver<u64>,
}

impl Writer {
    /// Start `run` on a thread of its own with the queue's receiving end
    /// and the handle it publishes the chain's head with (`head` until then).
    pub fn start(
        name: &str,
        head: Option<&ChainHead>,
        run: impl FnOnce(mpsc::Receiver<Job>, Head) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let first = head.map_or(0, |h| h.next_seq.saturating_sub(1));
        let (head_tx, head) = tokio::sync::watch::channel(first);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx, Head(head_tx)))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            head,
        })
    }

    /// The chain's head as of the last commit.
    pub fn head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.clone()
    }

    /// Queue a job; `Closed` once stopped.
    pub fn send(&self, job: Job) -> Result<(), StoreError> {
        let guard = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    /// Stop taking jobs, let the queued ones commit, join the thread.
    pub fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// A store backend: SQLite or PostgreSQL.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Hand a job to the writer thread; `Closed` once the store is closed.
    fn queue(&self, job: Job) -> Result<(), StoreError>;

    /// Run `f` on a pooled read connection. `Fn`, not `FnOnce`: a read
    /// that lost its connection may be retried on a new one.
    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn Sql) -> Result<R, StoreError> + Send + 'static;

    /// Finish queued writes and release the database.
    fn shut(&self);

    /// The chain's head `seq` as of the last commit.
    fn head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Run `f` as one write with its audit events, answered after commit.
    fn write<R, F>(&self, f: F) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Write) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = job(f);
        let queued = self.queue(job);
        async move {
            queued?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }
}
