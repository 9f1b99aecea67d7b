//! The broker's side of [`mandate_conn`]: connections that say nothing
//! (before their first request, counted after the TLS handshake if any)
//! or sit idle between HTTP/2 requests are closed after the header
//! timeout. axum-server owns each connection's future, so the close comes
//! from below: the connection's next read fails, and hyper drops it (an
//! idle HTTP/2 peer gets no GOAWAY; it has nothing in flight to lose).

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use mandate_conn::{Seen, Tracked};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps an acceptor: what it accepts is closed once idle for `after`.
#[derive(Clone)]
pub struct IdleClose<A> {
    inner: A,
    after: Duration,
}

impl<A> IdleClose<A> {
    pub fn new(inner: A, after: Duration) -> Self {
        IdleClose { inner, after }
    }
}

impl<A, I, S> Accept<I, S> for IdleClose<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Watched<A::Stream>;
    type Service = Counted<A::Service>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let after = self.after;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let seen = Seen::new();
            let stream = Watched {
                inner: stream,
                seen: seen.clone(),
                after,
                timer: Some(Box::pin(tokio::time::sleep(after))),
            };
            Ok((
                stream,
                Counted {
                    inner: service,
                    seen,
                },
            ))
        })
    }
}

/// A connection's stream: a read waiting past the idle deadline fails.
pub struct Watched<S> {
    inner: S,
    seen: Arc<Seen>,
    after: Duration,
    /// None once the connection is HTTP/1 with a request seen (hyper's).
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let Some(timer) = self.timer.as_mut() else {
                return Ok(());
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            match self.seen.due(self.after) {
                None => {
                    self.timer = None;
                    return Ok(());
                }
                Some(t) if t <= Instant::now() => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past the header timeout",
                    ));
                }
                Some(t) => timer.as_mut().reset(t),
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_pending()
            && let Err(e) = self.check(cx)
        {
            return Poll::Ready(Err(e));
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's service: tells its [`Seen`] of each request, and keeps
/// an HTTP/2 request counted as busy until its answer is sent.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    seen: Arc<Seen>,
}

impl<S, R, B> tower::Service<http::Request<R>> for Counted<S>
where
    S: tower::Service<http::Request<R>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<R>) -> Self::Future {
        let busy = self.seen.request(req.version());
        let answer = self.inner.call(req);
        Box::pin(async move { Ok(answer.await?.map(|body| Tracked { body, _busy: busy })) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn watched<S>(inner: S, seen: &Arc<Seen>) -> Watched<S> {
        let after = Duration::from_secs(5);
        Watched {
            inner,
            seen: seen.clone(),
            after,
            timer: Some(Box::pin(tokio::time::sleep(after))),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_fails_the_read_and_http1_after_a_request_is_left_alone() {
        let (client, server) = tokio::io::duplex(64);
        let seen = Seen::new();
        let mut quiet = watched(server, &seen);
        let mut buf = [0u8; 8];
        let e = quiet.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let seen = Seen::new();
        let mut talking = watched(server, &seen);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 3);
        assert!(seen.request(http::Version::HTTP_11).is_none());
        // After a request, HTTP/1's quiet spells are hyper's business.
        let next = tokio::time::timeout(Duration::from_secs(3600), talking.read(&mut buf)).await;
        assert!(next.is_err(), "an HTTP/1 connection was cut by this timer");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_fails_the_read_once_idle_after_its_last_answer() {
        let (_client, server) = tokio::io::duplex(64);
        let seen = Seen::new();
        let mut conn = watched(server, &seen);
        let busy = seen.request(http::Version::HTTP_2);
        let mut buf = [0u8; 8];
        // Answering for 20 s is not idleness.
        let long = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf)).await;
        assert!(long.is_err(), "cut while an answer was being sent");
        drop(busy);
        let start = Instant::now();
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() <= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}
