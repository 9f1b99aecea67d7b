//! A connection must send its first bytes within the header timeout.
//! hyper's header timer starts only once a connection has chosen HTTP/1
//! (hyper-util reads the first bytes to choose between HTTP/1 and HTTP/2
//! with no timer of its own), so a connection that connects, or finishes
//! its TLS handshake, and then says nothing would otherwise stay open for
//! good (slowloris).

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps an acceptor: what it accepts must start talking within `within`.
#[derive(Clone)]
pub struct FirstBytes<A> {
    inner: A,
    within: Duration,
}

impl<A> FirstBytes<A> {
    pub fn new(inner: A, within: Duration) -> Self {
        FirstBytes { inner, within }
    }
}

impl<A, I, S> Accept<I, S> for FirstBytes<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Deadline<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let within = self.within;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Deadline::new(stream, within), service))
        })
    }
}

/// A stream whose reads fail with `TimedOut` if nothing arrives in time;
/// after the first bytes it is the plain stream.
pub struct Deadline<S> {
    inner: S,
    first: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadline<S> {
    fn new(inner: S, within: Duration) -> Self {
        Deadline {
            inner,
            first: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.first.is_none() {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.first = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.first.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request began within the header timeout",
                ))),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_and_talk_disarms_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut quiet = Deadline::new(server, Duration::from_secs(5));
        let mut buf = [0u8; 8];
        let e = quiet.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = Deadline::new(server, Duration::from_secs(5));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 3);
        // Past the deadline, a quiet spell is hyper's business, not ours.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let next = tokio::time::timeout(Duration::from_secs(60), talking.read(&mut buf)).await;
        assert!(
            next.is_err(),
            "the deadline still applied after the first bytes"
        );
    }
}
