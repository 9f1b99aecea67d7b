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
use crate::router::{Serving, router};
use crate::state::State;
use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use mandate_conn::serve;
pub use mandate_conn::serve::Phase;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc as chan, oneshot, watch};
use tokio::task::JoinSet;

/// Open connections per serving thread (also the
/// `mandate_proxy_connections_open` gauges), and where to send a
/// connection that another thread should serve.
struct Spread {
    open: Vec<Gauge>,
    to: Vec<chan::UnboundedSender<Handed>>,
    /// `max_connections` places: a thread takes one before it accepts, and
    /// the connection keeps it until it closes, so the limit holds exactly
    /// however many threads accept at once.
    slots: Arc<Semaphore>,
    max: usize,
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

/// One connection counted against `thread`, holding its place, until
/// dropped.
struct Open {
    thread: usize,
    spread: Arc<Spread>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.spread.open[self.thread].dec();
    }
}

impl Spread {
    /// A place for the next connection; waits while every place is taken
    /// (said once in the log each time the limit is reached).
    async fn slot(&self) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            self.at_limit.store(false, Ordering::Relaxed);
            return slot;
        }
        // Other threads' places held for their next accept are not
        // connections: only a limit reached by connections is reported.
        let open: i64 = self.open.iter().map(Gauge::get).sum();
        if open >= self.max as i64 && !self.at_limit.swap(true, Ordering::Relaxed) {
            self.reached.inc();
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached: new connections wait in the listen queue"
            );
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// The thread to serve a connection accepted by thread `me`: `me`
    /// unless another serves fewer connections. Counted from now on.
    fn take(self: &Arc<Self>, me: usize, slot: OwnedSemaphorePermit) -> (usize, Open) {
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
        let open = Open {
            thread: to,
            spread: self.clone(),
            _slot: slot,
        };
        (to, open)
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
    /// named `proxy-{port}-{i}` (what `top -H` shows). A connection holds
    /// one of `places` (`max_connections`, shared with the egress listener).
    pub fn start(
        listener: std::net::TcpListener,
        upstreams: Vec<Upstream>,
        st: Arc<State>,
        header_timeout: Duration,
        places: Arc<Semaphore>,
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
            slots: places,
            max: max_connections,
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
        // This thread's place for the connection it accepts next.
        let mut slot = None;
        loop {
            tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p != Phase::Serve) => break,
                Some(h) = inbox.recv() => match TcpStream::from_std(h.stream) {
                    Ok(stream) => ctx.connection(&mut conns, stream, h.open),
                    Err(e) => tracing::warn!(error = %e, "a handed-over connection was lost"),
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                got = ctx.spread.slot(), if slot.is_none() => slot = Some(got),
                accepted = listener.accept(), if slot.is_some() => match accepted {
                    Ok((stream, _)) => {
                        let slot = slot.take().expect("accepting only with a place");
                        ctx.place(&mut conns, stream, slot);
                    }
                    Err(e) => serve::accept_failed(&e).await,
                },
            }
        }
        drop(slot);
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
    fn place(&self, conns: &mut JoinSet<()>, stream: TcpStream, slot: OwnedSemaphorePermit) {
        let (to, open) = self.spread.take(self.me, slot);
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
        // Each request learns the agent's address, for its audit record.
        let peer = stream.peer_addr().ok().map(crate::router::Peer);
        let app = tower::Layer::layer(&axum::Extension(peer), app);
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
            slots: Arc::new(Semaphore::new(max)),
            max,
            at_limit: AtomicBool::new(false),
            reached: Counter::default(),
        })
    }

    /// A connection accepted by thread `me`, with its place.
    async fn accept(s: &Arc<Spread>, me: usize) -> (usize, Open) {
        let slot = s.slot().await;
        s.take(me, slot)
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_thread_with_the_fewest() {
        let s = spread(3, 100);
        // Thread 0 wins every accept; it keeps a connection only while
        // it serves no more than the others.
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(accept(&s, 0).await);
        }
        let to: Vec<usize> = held.iter().map(|(t, _)| *t).collect();
        assert_eq!(to, [0, 1, 2, 0, 1, 2]);
        assert_eq!(s.open.iter().map(Gauge::get).collect::<Vec<_>>(), [2, 2, 2]);
        // Connections that end are no longer counted.
        drop(held);
        assert_eq!(s.open.iter().map(Gauge::get).collect::<Vec<_>>(), [0, 0, 0]);
        assert_eq!(s.slots.available_permits(), 100, "every place given back");
        let (a, _a) = accept(&s, 2).await;
        let (b, _b) = accept(&s, 2).await;
        assert_eq!((a, b), (2, 0));
    }

    #[tokio::test]
    async fn the_limit_holds_across_threads_and_a_closed_connection_frees_a_place() {
        let s = spread(2, 3);
        // Thread 1 holds a place while it waits to accept: thread 0 can
        // take only the two left, however the accepts interleave.
        let waiting_place = s.slot().await;
        let a = accept(&s, 0).await;
        let b = accept(&s, 0).await;
        let blocked = tokio::time::timeout(Duration::from_millis(100), s.slot()).await;
        assert!(blocked.is_err(), "a fourth place past max_connections = 3");
        assert_eq!(s.reached.get(), 0, "a held place is not a connection");
        let c = s.take(1, waiting_place);
        let blocked = tokio::time::timeout(Duration::from_millis(100), s.slot()).await;
        assert!(blocked.is_err());
        assert_eq!(s.reached.get(), 1, "3 connections of 3: reached, said once");
        let _ = tokio::time::timeout(Duration::from_millis(10), s.slot()).await;
        assert_eq!(s.reached.get(), 1);
        // A connection that closes hands its place on at once.
        let next = tokio::spawn({
            let s = s.clone();
            async move { s.slot().await }
        });
        tokio::task::yield_now().await;
        drop(c);
        let slot = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("a closed connection frees a place for a waiting thread")
            .unwrap();
        drop((a, b, slot));
        assert_eq!(s.slots.available_permits(), 3);
    }
}
