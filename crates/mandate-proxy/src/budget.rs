//! How much request body the proxy may hold at once. A POST form or JSON
//! body is read whole to be screened (`overrides`) before it goes
//! upstream; without a bound over all requests, agents uploading at once
//! (each within `max_body_bytes`) could make the proxy hold
//! `max_connections` × `max_body_bytes` of memory. Past the budget a
//! request is refused with 503 `proxy_busy` instead (as nginx writes
//! bodies past its buffer to disk or refuses them, we refuse).

use crate::error::{Code, Deny};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const KIB: usize = 1024;

/// `max_buffered_body_bytes`, counted in KiB.
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    bytes: usize,
    /// `mandate_proxy_buffered_body_bytes`.
    held: Gauge,
}

/// The share of the budget one body holds, until dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.permit {
            self.gauge.dec_by((p.num_permits() * KIB) as i64);
        }
    }
}

impl BodyBudget {
    pub fn new(bytes: usize, held: Gauge) -> Self {
        BodyBudget {
            kib: Arc::new(Semaphore::new(bytes.div_ceil(KIB))),
            bytes,
            held,
        }
    }

    /// A body's share, empty so far.
    pub fn share(&self) -> Held {
        Held {
            permit: None,
            gauge: self.held.clone(),
        }
    }

    /// Grow `held` to cover `len` bytes, or refuse: the budget is spent.
    pub fn cover(&self, held: &mut Held, len: usize) -> Result<(), Deny> {
        let have = held.permit.as_ref().map_or(0, |p| p.num_permits());
        let need = len.div_ceil(KIB).saturating_sub(have);
        if need == 0 {
            return Ok(());
        }
        let more = u32::try_from(need)
            .ok()
            .and_then(|n| self.kib.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                Deny::unavailable(
                    Code::ProxyBusy,
                    format!(
                        "the proxy already holds {} bytes of request bodies to screen (max_buffered_body_bytes); retry shortly",
                        self.bytes
                    ),
                )
            })?;
        self.held.inc_by((need * KIB) as i64);
        match &mut held.permit {
            Some(p) => p.merge(more),
            None => held.permit = Some(more),
        }
        Ok(())
    }

    /// KiB of the budget free now.
    #[cfg(test)]
    pub fn free_kib(&self) -> usize {
        self.kib.available_permits()
    }
}

/// A screened body on its way upstream, holding its share of the budget
/// until the upstream client is done with it.
pub struct Screened {
    bytes: Option<Bytes>,
    _held: Held,
}

impl Screened {
    pub fn new(bytes: Bytes, held: Held) -> Self {
        Screened {
            bytes: Some(bytes).filter(|b| !b.is_empty()),
            _held: held,
        }
    }
}

impl http_body::Body for Screened {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.bytes.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn bodies_share_the_budget_and_give_it_back_when_sent() {
        let budget = BodyBudget::new(8 * KIB, Gauge::default());
        let mut a = budget.share();
        budget.cover(&mut a, 5 * KIB).unwrap();
        budget.cover(&mut a, 5 * KIB + 1).unwrap();
        assert_eq!(budget.free_kib(), 2, "6 KiB held for 5 KiB and a byte");
        assert_eq!(budget.held.get(), 6 * KIB as i64);
        let mut b = budget.share();
        budget.cover(&mut b, 2 * KIB).unwrap();
        let mut c = budget.share();
        let busy = budget.cover(&mut c, 1).unwrap_err();
        assert_eq!(busy.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.code, "proxy_busy");
        assert!(
            busy.message.contains("max_buffered_body_bytes"),
            "{}",
            busy.message
        );
        // A body keeps its share until the upstream client drops it.
        let body = Screened::new(Bytes::from(vec![b'x'; 5 * KIB + 1]), a);
        assert_eq!(body.size_hint().exact(), Some(5 * KIB as u64 + 1));
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 5 * KIB + 1);
        assert_eq!(budget.free_kib(), 6, "given back once the body was dropped");
        budget.cover(&mut c, 1).unwrap();
        drop((b, c));
        assert_eq!(budget.free_kib(), 8);
        assert_eq!(budget.held.get(), 0);
    }
}
