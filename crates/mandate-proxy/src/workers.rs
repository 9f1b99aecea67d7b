//! Serving threads: one single-threaded runtime per worker, all accepting
//! from the one listening socket, each with its own upstream connection
//! pool. A request is read, decided, forwarded and answered on the thread
//! that accepted its connection, so there is no hand-off (and no
//! cross-core wake-up) between threads on the request path; an idle
//! thread wins the race for the next connection, which spreads the load.
//! Measured against one work-stealing runtime on two cores: +5 % req/s at
//! 16 connections, +15 % at 64, and next to no `futex` calls
//! (docs/benchmarks.md).
//!
//! The background work (catalog, revocation feed, audit shipping) stays on
//! the caller's runtime. Connections to the broker are pooled across both,
//! so a serving runtime is only dropped once everything has stopped
//! ([`Workers::release`]): a pooled connection never outlives the runtime
//! that drives it while someone may still use it.

use crate::forward::Upstream;
use crate::handle::{Serving, router};
use crate::state::State;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub struct Workers {
    handles: Vec<axum_server::Handle>,
    served: Vec<oneshot::Receiver<io::Result<()>>>,
    /// The first serving error seen by [`Workers::served`].
    error: Option<io::Error>,
    /// Dropping a sender lets its thread drop its runtime and end.
    release: Vec<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    /// The proxy's stop signal, raised by a thread that stops on its own.
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Start a serving thread on `listener` per upstream client given,
    /// named `proxy-{port}-{i}` (what `top -H` shows).
    pub fn start(
        listener: std::net::TcpListener,
        upstreams: Vec<Upstream>,
        st: Arc<State>,
        header_timeout: Duration,
        stop: watch::Sender<bool>,
    ) -> io::Result<Workers> {
        let n = upstreams.len();
        let port = listener.local_addr()?.port();
        let mut w = Workers {
            handles: Vec::with_capacity(n),
            served: Vec::with_capacity(n),
            error: None,
            release: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop,
        };
        for (i, upstream) in upstreams.into_iter().enumerate() {
            if let Err(e) = w.spawn(
                format!("proxy-{port}-{i}"),
                &listener,
                st.clone(),
                upstream,
                header_timeout,
            ) {
                // Those already started stop serving and end.
                w.shutdown();
                return Err(e);
            }
        }
        Ok(w)
    }

    fn spawn(
        &mut self,
        name: String,
        listener: &std::net::TcpListener,
        st: Arc<State>,
        upstream: Upstream,
        header_timeout: Duration,
    ) -> io::Result<()> {
        let listener = listener.try_clone()?;
        let app = router(Serving { st, upstream });
        let handle = axum_server::Handle::new();
        let (served_tx, served_rx) = oneshot::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let h = handle.clone();
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let serve = || {
                rt.block_on(async move {
                    let mut server = axum_server::from_tcp(listener).handle(h);
                    // Slow or idle agent connections are closed (slowloris).
                    server
                        .http_builder()
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    server.serve(app.into_make_service()).await
                })
            };
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(serve))
                .unwrap_or_else(|_| Err(io::Error::other("a serving thread panicked")));
            if let Err(e) = &served {
                // A proxy short of a thread would serve on, slower and
                // unnoticed: stop it all, so that it is seen and restarted.
                tracing::error!(error = %e, "a serving thread stopped; stopping the proxy");
                stop.send_replace(true);
            }
            let _ = served_tx.send(served);
            // Keep the runtime (and what it drives) until released.
            let _ = release_rx.recv();
            drop(rt);
        })?;
        self.handles.push(handle);
        self.served.push(served_rx);
        self.release.push(release_tx);
        self.threads.push(thread);
        Ok(())
    }

    /// Handles to stop accepting with, while `served` is awaited.
    pub fn handles(&self) -> Vec<axum_server::Handle> {
        self.handles.clone()
    }

    /// Close every connection now.
    pub fn shutdown(&self) {
        for h in &self.handles {
            h.shutdown();
        }
    }

    /// Wait until every thread has stopped serving; the first error, if
    /// any. Safe to call again after being cancelled.
    pub async fn served(&mut self) -> io::Result<()> {
        while let Some(rx) = self.served.last_mut() {
            let r = rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a serving thread panicked")));
            self.served.pop();
            if let Err(e) = r {
                self.error.get_or_insert(e);
            }
        }
        self.error.take().map_or(Ok(()), Err)
    }

    /// Drop the serving runtimes and wait for their threads.
    pub async fn release(self) {
        drop(self.release);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// The default number of serving threads: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
