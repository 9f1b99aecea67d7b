//! A request body must arrive whole within `body_read_timeout_secs` of its
//! headers (as Vault's `http_read_timeout`). hyper times only the headers:
//! without this, a client that sends `Content-Length: 65536` and then a
//! byte every few seconds holds its connection, and a request task, for as
//! long as it likes (slowloris through the body).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The error a late body fails with; [`timed_out`] finds it again.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0} s (body_read_timeout_secs)")]
pub struct BodyTimedOut(pub u64);

/// The body's deadline, in seconds, if `err` (or what it wraps) is a
/// [`BodyTimedOut`].
pub fn timed_out(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut e = Some(err);
    while let Some(cur) = e {
        if let Some(t) = cur.downcast_ref::<BodyTimedOut>() {
            return Some(t.0);
        }
        e = cur.source();
    }
    None
}

/// Middleware: give a request's body (if it has one) its deadline.
pub async fn layer(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        })
    });
    next.run(req).await
}

struct Deadline {
    inner: Body,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            let secs = self.limit.as_secs();
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(secs)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that sends `first`, then nothing more for good.
    fn stalled(first: &'static [u8]) -> Body {
        let chunks =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) })
                .chain(futures::stream::pending());
        Body::from_stream(chunks)
    }

    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_the_deadline_and_says_why() {
        let limit = Duration::from_secs(30);
        let body = Deadline {
            inner: stalled(b"{\"a\""),
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        };
        let start = tokio::time::Instant::now();
        let err = body.collect().await.expect_err("a stalled body must fail");
        assert_eq!(start.elapsed(), limit);
        assert_eq!(timed_out(&err), Some(30));
        assert!(err.to_string().contains("body_read_timeout_secs"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_in_time_is_untouched() {
        let limit = Duration::from_secs(30);
        let body = Deadline {
            inner: Body::from("{\"a\": 1}"),
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        };
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"a\": 1}");
        let other = std::io::Error::other("reset");
        assert_eq!(timed_out(&other), None);
    }
}
