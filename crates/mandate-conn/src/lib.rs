//! Closing connections that sit idle, for the broker and the proxy.
//! hyper times HTTP/1 itself (its header-read timer also runs between
//! requests), but not a connection that has sent nothing yet (hyper-util
//! reads the first bytes to choose HTTP/1 or HTTP/2, with no timer) nor an
//! HTTP/2 connection between requests. Left alone, silent connections
//! would hold their place (a descriptor, a `max_connections` slot) for
//! good (slowloris). [`Seen`] is told of each request and says when its
//! connection has been idle long enough, and [`serve::connection`] closes it.

#![forbid(unsafe_code)]

pub mod serve;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::time::{Duration, Instant};

/// What a connection's requests tell its idle timer.
pub struct Seen {
    opened: Instant,
    /// When the last HTTP/2 request ended or any request began, in ms
    /// after `opened`, plus one (0: no request yet).
    last: AtomicU64,
    h2: AtomicBool,
    /// HTTP/2 requests whose answer is still being sent.
    busy: AtomicU64,
}

impl Seen {
    pub fn new() -> Arc<Seen> {
        Arc::new(Seen {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            busy: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last.store(ms + 1, Relaxed);
    }

    /// A request arrived; for HTTP/2 the returned guard goes with its
    /// answer, so a long download does not count as idle.
    pub fn request(self: &Arc<Self>, version: http::Version) -> Option<Busy> {
        if version != http::Version::HTTP_2 {
            // hyper times HTTP/1 from here on: only the first request counts.
            if self.last.load(Relaxed) == 0 {
                self.touch();
            }
            return None;
        }
        self.touch();
        self.h2.store(true, Relaxed);
        self.busy.fetch_add(1, Relaxed);
        Some(Busy(self.clone()))
    }

    /// When the connection may count as idle; `None`: never by this timer.
    pub fn due(&self, after: Duration) -> Option<Instant> {
        let last = self.last.load(Relaxed);
        if last == 0 {
            return Some(self.opened + after);
        }
        if !self.h2.load(Relaxed) {
            return None;
        }
        if self.busy.load(Relaxed) > 0 {
            return Some(Instant::now() + after);
        }
        Some(self.opened + Duration::from_millis(last - 1) + after)
    }

    /// Resolves once the connection has been idle for `after`.
    pub async fn idle(&self, after: Duration) {
        loop {
            match self.due(after) {
                None => std::future::pending().await,
                Some(t) if t <= Instant::now() => return,
                Some(t) => tokio::time::sleep_until(t).await,
            }
        }
    }
}

/// An HTTP/2 request in progress, until its answer is sent or dropped.
pub struct Busy(Arc<Seen>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
        self.0.touch();
    }
}

/// An answer's body, carrying its request's [`Busy`] guard.
pub struct Tracked<B> {
    pub body: B,
    /// Held, not read: dropped with the body.
    pub _busy: Option<Busy>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn idle_after(seen: &Seen, secs: u64) -> Duration {
        let start = Instant::now();
        seen.idle(Duration::from_secs(secs)).await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_idle() {
        let seen = Seen::new();
        assert_eq!(idle_after(&seen, 5).await, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn http1_after_its_first_request_is_left_to_hyper() {
        let seen = Seen::new();
        assert!(seen.request(http::Version::HTTP_11).is_none());
        let timed = tokio::time::timeout(Duration::from_secs(3600), idle_after(&seen, 5));
        assert!(timed.await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_is_idle_from_the_end_of_its_last_answer() {
        let seen = Seen::new();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = seen.request(http::Version::HTTP_2).expect("a guard");
        let waiting = tokio::spawn({
            let seen = seen.clone();
            async move { idle_after(&seen, 5).await }
        });
        // A 20 s download is not idleness.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!waiting.is_finished());
        drop(busy);
        let waited = waiting.await.unwrap();
        assert!(
            waited >= Duration::from_secs(25) && waited <= Duration::from_secs(30),
            "{waited:?}"
        );
    }
}
