//! Serving threads: one single-threaded runtime per worker, each with its
//! own upstream connection pool. A request is read, decided, forwarded and
//! answered on the thread that serves its connection, so there is no
//! hand-off (and no cross-core wake-up) between threads on the request
//! path. Measured against one work-stealing runtime on two cores: +5 %
//! req/s at 16 connections, +15 % at 64, and next to no `futex` calls
//! (docs/benchmarks.md).
//!
//! Every thread accepts from the one listening socket, but the thread that
//! wins an accept does not keep the connection unless it serves no more
//! connections than any other: else it hands it to the thread with the
//! fewest ([`Spread`]). Left to the accept race, a burst of connections
//! lands on whichever thread is awake (measured: all 64 of 64 on one of two
//! threads), and an agent's keep-alive connection stays there for good.
//! A hand-off costs one wake-up per connection, never per request.
//!
//! The background work (catalog, revocation feed, audit shipping) stays on
//! the caller's runtime. Connections to the broker are pooled across both,
//! so a serving runtime is only dropped once everything has stopped
//! ([`Workers::release`]): a pooled connection never outlives the runtime
//! that drives it while someone may still use it.

use crate::forward::Upstream;
use crate::handle::{Serving, router};
use crate::state::State;
use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
pub use mandate_conn::serve::{self, Phase};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc as chan, oneshot, watch};
use tokio::task::JoinSet;

/// Open connections per serving thread (also the
/// `mandate_proxy_connections_open` gauges), and where to send a
/// connection that another thread should serve.
struct Spread {
    open: Vec<Gauge>,
    to: Vec<chan::UnboundedSender<Handed>>,
    /// `max_connections`: past it no thread accepts.
    max: usize,
    /// Raised when a connection closes, for threads waiting at the limit.
    freed: Notify,
    /// Whether the limit was reached and said so in the log.
    at_limit: AtomicBool,
    /// `mandate_proxy_connection_limit_reached_total`.
    reached: Counter,
}

/// A connection on its way to another thread; counted there already.
struct Handed {
    stream: std::net::TcpStream,
    open: Open,
}

/// One connection counted against `thread` until dropped.
struct Open {
    thread: usize,
    spread: Arc<Spread>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.spread.open[self.thread].dec();
        self.spread.freed.notify_waiters();
    }
}

impl Spread {
    /// Is `max_connections` reached? Said once in the log each time it is.
    fn is_full(&self) -> bool {
        let open: i64 = self.open.iter().map(Gauge::get).sum();
        let full = open >= self.max as i64;
        if full && !self.at_limit.swap(true, Ordering::Relaxed) {
            self.reached.inc();
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached: new connections wait in the listen queue"
            );
        } else if !full && self.at_limit.load(Ordering::Relaxed) {
            self.at_limit.store(false, Ordering::Relaxed);
        }
        full
    }

    /// Until a connection closes (or a while: a wake-up may be missed
    /// between the count and the wait).
    async fn freed(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(50), self.freed.notified()).await;
    }

    /// The thread to serve a connection accepted by thread `me`: `me`
    /// unless another serves fewer connections. Counted from now on.
    fn take(self: &Arc<Self>, me: usize) -> (usize, Open) {
        let counts = self.open.iter().map(Gauge::get);
        let (least, fewest) = counts
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, 0));
        let to = if self.open[me].get() <= fewest {
            me
        } else {
            least
        };
        self.open[to].inc();
        let spread = self.clone();
        (to, Open { thread: to, spread })
    }
}

pub struct Workers {
    phase: watch::Sender<Phase>,
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
        max_connections: usize,
        stop: watch::Sender<bool>,
    ) -> io::Result<Workers> {
        let n = upstreams.len();
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let (phase, _) = watch::channel(Phase::Serve);
        let mut w = Workers {
            phase,
            served: Vec::with_capacity(n),
            error: None,
            release: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop,
        };
        let (to, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| chan::unbounded_channel()).unzip();
        let open = (0..n)
            .map(|i| st.metrics.connections_open(&i.to_string()))
            .collect();
        let spread = Arc::new(Spread {
            open,
            to,
            max: max_connections,
            freed: Notify::new(),
            at_limit: AtomicBool::new(false),
            reached: st.metrics.connection_limit_reached.clone(),
        });
        let http = Arc::new(serve::http(header_timeout));
        let listeners = (0..n)
            .map(|_| listener.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        let each = upstreams.into_iter().zip(inboxes).zip(listeners);
        for (i, ((upstream, inbox), listener)) in each.enumerate() {
            let thread = Thread {
                listener,
                inbox,
                ctx: Ctx {
                    me: i,
                    spread: spread.clone(),
                    app: router(Serving {
                        st: st.clone(),
                        upstream,
                    }),
                    http: http.clone(),
                    phase: w.phase.subscribe(),
                    idle: header_timeout,
                },
            };
            if let Err(e) = w.spawn(format!("proxy-{port}-{i}"), thread) {
                // Those already started stop serving and end.
                w.shutdown();
                return Err(e);
            }
        }
        Ok(w)
    }

    fn spawn(&mut self, name: String, thread: Thread) -> io::Result<()> {
        let (served_tx, served_rx) = oneshot::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let serve = || rt.block_on(thread.serve());
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
        self.served.push(served_rx);
        self.release.push(release_tx);
        self.threads.push(handle);
        Ok(())
    }

    /// What stops accepting and drains, while `served` is awaited.
    pub fn phase(&self) -> watch::Sender<Phase> {
        self.phase.clone()
    }

    /// Close every connection now.
    pub fn shutdown(&self) {
        self.phase.send_replace(Phase::Close);
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

/// What one serving thread owns.
struct Thread {
    listener: std::net::TcpListener,
    /// Connections other threads handed to this one.
    inbox: chan::UnboundedReceiver<Handed>,
    ctx: Ctx,
}

/// What one serving thread reads while it serves.
struct Ctx {
    me: usize,
    spread: Arc<Spread>,
    app: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    phase: watch::Receiver<Phase>,
    /// How long a connection may sit idle ([`mandate_conn`]).
    idle: Duration,
}

impl Thread {
    async fn serve(self) -> io::Result<()> {
        let Thread {
            listener: std_listener,
            mut inbox,
            ctx,
        } = self;
        let listener = TcpListener::from_std(std_listener)?;
        let mut phase = ctx.phase.clone();
        let mut conns = JoinSet::new();
        loop {
            let full = ctx.spread.is_full();
            tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p != Phase::Serve) => break,
                Some(h) = inbox.recv() => match TcpStream::from_std(h.stream) {
                    Ok(stream) => ctx.connection(&mut conns, stream, h.open),
                    Err(e) => tracing::warn!(error = %e, "a handed-over connection was lost"),
                },
                _ = ctx.spread.freed(), if full => {}
                accepted = listener.accept(), if !full => match accepted {
                    Ok((stream, _)) => ctx.place(&mut conns, stream),
                    Err(e) if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                    // Out of descriptors or memory: wait rather than spin,
                    // and never end the proxy for it.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        // Connections still queued are refused once every thread has let
        // go of the listening socket; those handed over are closed.
        drop(listener);
        inbox.close();
        while inbox.try_recv().is_ok() {}
        tokio::select! {
            _ = async { while conns.join_next().await.is_some() {} } => {}
            _ = phase.wait_for(|p| *p == Phase::Close) => conns.shutdown().await,
        }
        Ok(())
    }
}

impl Ctx {
    /// Serve `stream` here or hand it to a thread with fewer connections.
    fn place(&self, conns: &mut JoinSet<()>, stream: TcpStream) {
        let (to, open) = self.spread.take(self.me);
        if to == self.me {
            return self.connection(conns, stream, open);
        }
        match stream.into_std() {
            // Refused only by a thread that is draining: the proxy is
            // stopping, and the connection closes with `open` dropped.
            Ok(stream) => _ = self.spread.to[to].send(Handed { stream, open }),
            Err(e) => tracing::warn!(error = %e, "could not hand a connection over"),
        }
    }

    fn connection(&self, conns: &mut JoinSet<()>, stream: TcpStream, open: Open) {
        debug_assert_eq!(open.thread, self.me, "served where it is not counted");
        // Our answers go out whole, in one write each.
        let _ = stream.set_nodelay(true);
        let http = self.http.clone();
        let app = self.app.clone();
        let phase = self.phase.clone();
        let idle = self.idle;
        conns.spawn(async move {
            let _open = open;
            serve::connection(&http, stream, app, phase, idle).await;
        });
    }
}

/// The default number of serving threads: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(n: usize, max: usize) -> Arc<Spread> {
        Arc::new(Spread {
            open: (0..n).map(|_| Gauge::default()).collect(),
            to: (0..n).map(|_| chan::unbounded_channel().0).collect(),
            max,
            freed: Notify::new(),
            at_limit: AtomicBool::new(false),
            reached: Counter::default(),
        })
    }

    #[test]
    fn a_connection_goes_to_the_thread_with_the_fewest() {
        let s = spread(3, 100);
        // Thread 0 wins every accept; it keeps a connection only while
        // it serves no more than the others.
        let held: Vec<(usize, Open)> = (0..6).map(|_| s.take(0)).collect();
        let to: Vec<usize> = held.iter().map(|(t, _)| *t).collect();
        assert_eq!(to, [0, 1, 2, 0, 1, 2]);
        assert_eq!(s.open.iter().map(Gauge::get).collect::<Vec<_>>(), [2, 2, 2]);
        // Connections that end are no longer counted.
        drop(held);
        assert_eq!(s.open.iter().map(Gauge::get).collect::<Vec<_>>(), [0, 0, 0]);
        let (a, _a) = s.take(2);
        let (b, _b) = s.take(2);
        assert_eq!((a, b), (2, 0));
    }

    #[tokio::test]
    async fn the_limit_counts_every_thread_and_a_closed_connection_frees_it() {
        let s = spread(2, 3);
        let (_, a) = s.take(0);
        let (_, b) = s.take(1);
        assert!(!s.is_full());
        let (_, c) = s.take(0);
        assert!(s.is_full(), "3 of 3 across two threads");
        assert!(s.is_full());
        assert_eq!(s.reached.get(), 1, "counted once per time it is reached");
        drop((a, b));
        let waiting = tokio::spawn({
            let s = s.clone();
            async move {
                let n = s.freed.notified();
                drop(c);
                n.await;
                s.is_full()
            }
        });
        let still_full = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a closed connection wakes a waiting thread")
            .unwrap();
        assert!(!still_full);
    }
}
