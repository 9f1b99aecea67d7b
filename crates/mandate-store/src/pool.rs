//! Read connections, kept open between reads: at most a fixed number in
//! use at once (more reads wait for one rather than open their own), each
//! used on a blocking thread.

use crate::StoreError;
use std::sync::{Arc, Mutex};

pub(crate) struct Pool<C> {
    idle: Arc<Mutex<Vec<C>>>,
    slots: tokio::sync::Semaphore,
}

impl<C: Send + 'static> Pool<C> {
    pub fn new(size: usize) -> Self {
        Pool {
            idle: Arc::new(Mutex::new(Vec::new())),
            slots: tokio::sync::Semaphore::new(size),
        }
    }

    /// Run `f` on a blocking thread with an idle connection, if there is
    /// one; the connection `f` hands back is kept for the next read. It
    /// goes back from that thread, never through the join handle (which
    /// an async caller may drop).
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(Option<C>) -> (Result<R, StoreError>, Option<C>) + Send + 'static,
    {
        let _slot = self.slots.acquire().await.map_err(|_| StoreError::Closed)?;
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            let conn = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let (result, back) = f(conn);
            if let Some(c) = back {
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }

    /// Take every idle connection (to close them where that is safe).
    pub fn drain(&self) -> Vec<C> {
        std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
