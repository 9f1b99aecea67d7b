//! An open egress tunnel: bytes copied both ways, counted as they go (so a
//! tunnel cut short still reports what it carried), until both sides are
//! done, one fails, the proxy closes, or the periodic check says the
//! token may no longer be used.

use mandate_conn::serve::Phase;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// How often an open tunnel's token is judged again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why a tunnel ended, as its audit record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides finished.
    Closed,
    /// A side failed (reset, broken pipe).
    Failed(String),
    /// The one decision path no longer accepts the token (expired,
    /// revoked, task ended): `code: message`.
    Refused(String),
    /// The proxy can no longer tell (revocation feed stale, broker away):
    /// it fails closed.
    Unsure(String),
    /// The proxy is stopping.
    Stopping,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("closed: the tunnel ended"),
            End::Failed(e) => write!(f, "tunnel_failed: {e}"),
            End::Refused(why) => write!(f, "token_refused: {why}"),
            End::Unsure(why) => write!(f, "not_ready: {why}"),
            End::Stopping => f.write_str("proxy_stopping: the proxy closed the tunnel"),
        }
    }
}

/// What a tunnel carried and how it ended.
pub struct Outcome {
    /// Bytes from the agent to the upstream.
    pub up: u64,
    /// Bytes from the upstream to the agent.
    pub down: u64,
    pub end: End,
}

/// A stream whose reads are counted.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Until the proxy closes its connections (or is gone).
async fn closing(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Close).await;
}

/// Copy between `agent` and `upstream` (after sending `early`, what the
/// agent sent before the tunnel opened) until the tunnel ends; `check`
/// runs every [`RECHECK`] and ends it when it answers an [`End`].
pub async fn splice<A, U, F, Fut>(
    agent: A,
    upstream: U,
    early: &[u8],
    mut phase: watch::Receiver<Phase>,
    check: F,
) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: Future<Output = Option<End>>,
{
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut agent = Counted {
        inner: agent,
        read: up.clone(),
    };
    let mut upstream = Counted {
        inner: upstream,
        read: down.clone(),
    };
    let end = 'tunnel: {
        if !early.is_empty() {
            if let Err(e) = upstream.write_all(early).await {
                break 'tunnel End::Failed(e.to_string());
            }
            up.fetch_add(early.len() as u64, Ordering::Relaxed);
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let copy = tokio::io::copy_bidirectional(&mut agent, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => break match r {
                    Ok(_) => End::Closed,
                    Err(e) => End::Failed(e.to_string()),
                },
                _ = closing(&mut phase) => break End::Stopping,
                _ = tick.tick() => if let Some(end) = check().await {
                    break end;
                },
            }
        }
    };
    Outcome {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bytes_are_counted_each_way_and_a_refusal_ends_the_tunnel() {
        let (agent, mut agent_far) = tokio::io::duplex(1024);
        let (upstream, mut upstream_far) = tokio::io::duplex(1024);
        let (_phase_tx, phase) = watch::channel(Phase::Serve);
        let calls = Arc::new(AtomicU64::new(0));
        let checks = calls.clone();
        let tunnel = tokio::spawn(async move {
            splice(agent, upstream, b"early", phase, move || {
                let n = checks.fetch_add(1, Ordering::Relaxed);
                async move { (n >= 1).then(|| End::Refused("revoked: the task".into())) }
            })
            .await
        });
        agent_far.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 10];
        upstream_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"earlyhello");
        upstream_far.write_all(b"world!").await.unwrap();
        let mut back = [0u8; 6];
        agent_far.read_exact(&mut back).await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), tunnel)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((out.up, out.down), (10, 6));
        assert_eq!(out.end, End::Refused("revoked: the task".into()));
        assert!(out.end.to_string().starts_with("token_refused: revoked"));
    }

    #[tokio::test]
    async fn the_proxy_closing_ends_an_idle_tunnel() {
        let (agent, _a) = tokio::io::duplex(64);
        let (upstream, _u) = tokio::io::duplex(64);
        let (phase_tx, phase) = watch::channel(Phase::Serve);
        let tunnel = tokio::spawn(splice(agent, upstream, b"", phase, || async { None }));
        phase_tx.send_replace(Phase::Close);
        let out = tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((out.up, out.down, out.end), (0, 0, End::Stopping));
    }
}
