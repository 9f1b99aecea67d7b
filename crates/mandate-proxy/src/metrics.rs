//! Prometheus metrics (`/metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tool: String,
    /// `2xx`, `4xx`, …
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: String,
    /// The code of the first reason (`invalid_token`, `deny-out-of-scope`…).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabels {
    pub thread: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub upstream_latency: Histogram,
    pub feed_lag: Gauge<f64, AtomicU64>,
    pub spool_backlog: Gauge,
    pub buffered_body_bytes: Gauge,
    connections: Family<ThreadLabels, Gauge>,
    pub connection_limit_reached: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mandate_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by tool and status class",
            requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Allow/deny decisions, by decision and first reason code",
            decisions.clone(),
        );
        let upstream_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a request to the upstream's response headers",
            upstream_latency.clone(),
        );
        let feed_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "revocation_feed_lag_seconds",
            "Seconds since the revocation feed last delivered data (-1: never)",
            feed_lag.clone(),
        );
        let spool_backlog = Gauge::default();
        registry.register(
            "audit_spool_backlog_bytes",
            "Audit records written to the spool but not yet acknowledged by the broker",
            spool_backlog.clone(),
        );
        let buffered_body_bytes = Gauge::default();
        registry.register(
            "buffered_body_bytes",
            "Request bodies held to be screened, in bytes (rounded up per KiB); at most max_buffered_body_bytes",
            buffered_body_bytes.clone(),
        );
        let connections = Family::<ThreadLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Agent connections open, by serving thread",
            connections.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times max_connections was reached and accepting stopped",
            connection_limit_reached.clone(),
        );
        Metrics {
            registry,
            connections,
            connection_limit_reached,
            requests,
            decisions,
            upstream_latency,
            feed_lag,
            spool_backlog,
            buffered_body_bytes,
        }
    }
}

impl Metrics {
    pub fn request(&self, tool: Option<&str>, status: u16) {
        let class = format!("{}xx", status / 100);
        self.requests
            .get_or_create(&RequestLabels {
                tool: tool.unwrap_or("-").to_owned(),
                class,
            })
            .inc();
    }

    pub fn decision(&self, allowed: bool, first_reason: Option<&str>) {
        let reason = first_reason
            .map(|r| r.split(':').next().unwrap_or(r).trim())
            .filter(|r| !r.is_empty())
            .unwrap_or("-")
            .chars()
            .take(64)
            .collect();
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: if allowed { "allow" } else { "deny" }.into(),
                reason,
            })
            .inc();
    }

    /// The open-connections gauge of one serving thread.
    pub fn connections_open(&self, thread: &str) -> Gauge {
        self.connections
            .get_or_create(&ThreadLabels {
                thread: thread.to_owned(),
            })
            .clone()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_reason_codes() {
        let m = Metrics::default();
        m.request(Some("github"), 200);
        m.decision(false, Some("deny-out-of-scope: the action is outside"));
        m.feed_lag.set(1.5);
        let text = m.render();
        assert!(
            text.contains(r#"mandate_proxy_requests_total{tool="github",class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"decision="deny",reason="deny-out-of-scope""#),
            "{text}"
        );
        assert!(
            text.contains("mandate_proxy_revocation_feed_lag_seconds 1.5"),
            "{text}"
        );
    }
}
