//! Serving one accepted connection, the same way in the broker and the
//! proxy: HTTP/1 or HTTP/2 by what the peer sends, hyper's header timer,
//! closed once idle ([`Seen`]), drained or cut when the server stops.

use crate::{Seen, Tracked};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// What a server asks of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serve,
    /// Accept nothing new; finish the requests in flight, then close.
    Drain,
    /// Close every connection now.
    Close,
}

/// The HTTP settings both servers use: a peer that takes longer than
/// `header_timeout` to send a request's headers, or waits that long
/// between HTTP/1 requests, is cut off by hyper (slowloris).
pub fn http(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    http
}

/// After a failed accept: a connection its peer gave up on is nothing to
/// act on; out of descriptors or memory, wait a little rather than spin,
/// and never end the server for it.
pub async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serve `io` with `service` until the peer goes, the connection has been
/// idle for `idle`, or `phase` leaves [`Phase::Serve`].
///
/// An idle connection is closed gracefully (HTTP/2 GOAWAY), then cut after
/// as long again: HTTP/2's graceful close waits for a ping answer the peer
/// may never send. On [`Phase::Drain`] the requests in flight finish first;
/// on [`Phase::Close`] the connection is dropped at once.
pub async fn connection<I, S, B>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut phase: watch::Receiver<Phase>,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let seen = Seen::new();
    let app = TowerToHyperService::new(service);
    let on_request = seen.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = on_request.request(req.version());
        let answer = app.call(req);
        async move { Ok::<_, Infallible>(answer.await?.map(|body| Tracked { body, _busy: busy })) }
    });
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let grace = tokio::select! {
        _ = conn.as_mut() => return,
        _ = phase.wait_for(|p| *p != Phase::Serve) => None,
        _ = seen.idle(idle) => Some(idle),
    };
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = phase.wait_for(|p| *p == Phase::Close) => {}
        _ = async {
            match grace {
                Some(g) => tokio::time::sleep(g).await,
                None => std::future::pending().await,
            }
        } => {}
    }
}
