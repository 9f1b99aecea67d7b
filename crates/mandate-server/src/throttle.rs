//! Throttling failed requests to the token endpoint, per client address.
//!
//! Every refused login or exchange is a durable audit row, so a client
//! sending garbage could fill the log (and the disk) as fast as the CPU
//! allows, without ever holding a credential. Each client address (IPv6
//! by its /64) has a bucket of `burst` failures, refilled at `per_minute`;
//! with the bucket empty the client gets 429 `slow_down` before anything
//! is verified or written, and one `client.throttled` event marks when it
//! starts being refused. Successful requests cost nothing. Behind a
//! reverse proxy list it in `trusted_proxies` (see `forwarded`), or every
//! client shares the proxy's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle (full) ones are dropped.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusing since the bucket last ran dry (one event per run).
    refusing: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// `first` is the first refusal since the client was last allowed.
    Refuse {
        first: bool,
        retry_after_secs: u64,
    },
}

#[derive(Debug)]
pub struct Throttle {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The address a client is counted under: IPv4 as is (also when mapped
/// into IPv6), IPv6 by its /64, since one host usually holds a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Throttle {
    /// `None` when `burst` is 0 (throttling off).
    pub fn new(burst: u32, per_minute: u32) -> Option<Self> {
        (burst > 0).then(|| Throttle {
            burst: burst as f64,
            per_sec: per_minute as f64 / 60.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
    }

    /// May `ip` make another attempt now?
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = map.get_mut(&client_key(ip)) else {
            return Verdict::Allow;
        };
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.refusing = false;
            return Verdict::Allow;
        }
        let first = !std::mem::replace(&mut b.refusing, true);
        let retry_after_secs = if self.per_sec > 0.0 {
            ((1.0 - b.tokens) / self.per_sec).ceil().max(1.0) as u64
        } else {
            u64::MAX
        };
        Verdict::Refuse {
            first,
            retry_after_secs,
        }
    }

    /// Count one failed attempt against `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CLIENTS {
            self.forget_full(&mut map, now);
        }
        let b = map.entry(client_key(ip)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            refusing: false,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    fn forget_full(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        map.retain(|_, b| {
            self.refill(b, now);
            b.tokens < self.burst
        });
    }

    /// Drop the buckets of clients that have not failed for a while.
    pub fn forget_idle(&self, now: Instant) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_full(&mut map, now);
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_drain_the_bucket_and_time_refills_it() {
        let t = Throttle::new(3, 60).unwrap(); // one back per second
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check(a, t0), Verdict::Allow);
            t.failed(a, t0);
        }
        assert_eq!(
            t.check(a, t0),
            Verdict::Refuse {
                first: true,
                retry_after_secs: 1
            }
        );
        assert!(matches!(
            t.check(a, t0),
            Verdict::Refuse { first: false, .. }
        ));
        assert_eq!(
            t.check(b, t0),
            Verdict::Allow,
            "another client is not affected"
        );
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(t.check(a, t1), Verdict::Allow);
        t.failed(a, t1);
        assert!(
            matches!(t.check(a, t1), Verdict::Refuse { first: true, .. }),
            "a new run of refusals is reported again"
        );
        // Refilled completely: forgotten.
        t.forget_idle(t1 + Duration::from_secs(10));
        assert_eq!(t.clients(), 0);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert!(Throttle::new(0, 60).is_none(), "0 turns it off");
    }
}
