//! Prometheus metrics for the broker (`GET /metrics`, OpenMetrics text):
//! requests by route template, latency, decisions, grants and logins,
//! webhook deliveries. Labels are route templates, outcomes and webhook
//! endpoint ids (few, made by operators), never other ids or tokens.

use mandate_core::WebhookId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template (`/v1/tasks/{id}`), never the raw path.
    pub route: String,
    pub method: String,
    /// `2xx`, `4xx`, …
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    pub rule: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: String,
}

type Latency = Family<RouteOnly, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Latency,
    decisions: Family<Outcome, Counter>,
    grants: Family<Outcome, Counter>,
    logins: Family<Outcome, Counter>,
    approvals: Family<Outcome, Counter>,
    anomalies: Family<AnomalyLabels, Counter>,
    anomaly_lag: Gauge,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Times `max_connections` was reached.
    pub connection_limit_reached: Counter,
    webhook_delivered: Family<WebhookLabel, Counter>,
    webhook_failed: Family<WebhookLabel, Counter>,
    webhook_lag: Family<WebhookLabel, Gauge>,
    leases: Family<Outcome, Counter>,
    /// Leases whose revocation failed and is being retried: an alarm.
    pub leases_failing: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mandate");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route template, method and status class",
            requests.clone(),
        );
        let latency: Latency =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0002, 2.0, 16)));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer, by route template (durable writes included)",
            latency.clone(),
        );
        let decisions = Family::<Outcome, Counter>::default();
        registry.register(
            "decisions",
            "Request-time decisions (/v1/authorize), allow or deny",
            decisions.clone(),
        );
        let grants = Family::<Outcome, Counter>::default();
        registry.register(
            "grants",
            "Token exchanges, minted or refused",
            grants.clone(),
        );
        let logins = Family::<Outcome, Counter>::default();
        registry.register(
            "logins",
            "Agent logins, succeeded or failed",
            logins.clone(),
        );
        let approvals = Family::<Outcome, Counter>::default();
        registry.register(
            "approvals",
            "Approval requests opened (requested) and decided (granted, denied)",
            approvals.clone(),
        );
        let anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register(
            "anomalies",
            "Anomaly findings, by rule and the action configured for the task's environment",
            anomalies.clone(),
        );
        let anomaly_lag = Gauge::default();
        registry.register(
            "anomaly_detector_lag_events",
            "Audit events the anomaly detector had yet to read when it last looked",
            anomaly_lag.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times max_connections was reached and new connections had to wait",
            connection_limit_reached.clone(),
        );
        let webhook_delivered = Family::<WebhookLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Events a webhook endpoint accepted (2xx), by endpoint",
            webhook_delivered.clone(),
        );
        let webhook_failed = Family::<WebhookLabel, Counter>::default();
        registry.register(
            "webhook_failed_attempts",
            "Webhook attempts that failed (not 2xx, timeout, no connection), by endpoint; each is retried",
            webhook_failed.clone(),
        );
        let webhook_lag = Family::<WebhookLabel, Gauge>::default();
        registry.register(
            "webhook_lag_events",
            "Audit events chained after an endpoint's cursor (not all of them match its kinds), by endpoint",
            webhook_lag.clone(),
        );
        let leases = Family::<Outcome, Counter>::default();
        registry.register(
            "leases",
            "Dynamic credentials issued, revoked, and revocation attempts that failed (retried)",
            leases.clone(),
        );
        let leases_failing = Gauge::default();
        registry.register(
            "leases_failing",
            "Leases whose revocation failed and is being retried (alarm when above 0)",
            leases_failing.clone(),
        );
        Metrics {
            leases,
            leases_failing,
            registry,
            webhook_delivered,
            webhook_failed,
            webhook_lag,
            connections_open,
            connection_limit_reached,
            requests,
            latency,
            decisions,
            grants,
            logins,
            approvals,
            anomalies,
            anomaly_lag,
        }
    }
}

fn webhook(id: &WebhookId) -> WebhookLabel {
    WebhookLabel {
        webhook: id.to_string(),
    }
}

fn outcome(family: &Family<Outcome, Counter>, outcome: &str) {
    family
        .get_or_create(&Outcome {
            outcome: outcome.to_owned(),
        })
        .inc();
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                class: format!("{}xx", status / 100),
            })
            .inc();
        self.latency
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn decision(&self, decision: &str) {
        outcome(&self.decisions, decision);
    }

    pub fn grant(&self, minted: bool) {
        outcome(&self.grants, if minted { "minted" } else { "refused" });
    }

    pub fn login(&self, succeeded: bool) {
        outcome(&self.logins, if succeeded { "succeeded" } else { "failed" });
    }

    /// `requested`, `granted` or `denied`.
    pub fn approval(&self, what: &str) {
        outcome(&self.approvals, what);
    }

    pub fn webhook_delivered(&self, id: &WebhookId) {
        self.webhook_delivered.get_or_create(&webhook(id)).inc();
    }

    pub fn webhook_failed(&self, id: &WebhookId) {
        self.webhook_failed.get_or_create(&webhook(id)).inc();
    }

    pub fn webhook_lag(&self, id: &WebhookId, events: u64) {
        self.webhook_lag
            .get_or_create(&webhook(id))
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// A deleted endpoint's series go.
    pub fn webhook_gone(&self, id: &WebhookId) {
        let l = webhook(id);
        self.webhook_delivered.remove(&l);
        self.webhook_failed.remove(&l);
        self.webhook_lag.remove(&l);
    }

    pub fn anomaly(&self, rule: &str, action: &str) {
        self.anomalies
            .get_or_create(&AnomalyLabels {
                rule: rule.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    /// `issued`, `revoked`, `revoke_failed`, `issue_failed`.
    pub fn lease(&self, what: &str) {
        outcome(&self.leases, what);
    }

    pub fn anomaly_lag(&self, events: i64) {
        self.anomaly_lag.set(events.max(0));
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
    fn renders_route_templates_and_outcomes() {
        let m = Metrics::default();
        m.request("/v1/tasks/{id}", "GET", 404, 0.001);
        m.decision("deny");
        m.grant(true);
        m.login(false);
        let hook = WebhookId::parse("whk_0123456789abcdef0123456789abcdef").unwrap();
        m.webhook_delivered(&hook);
        m.webhook_failed(&hook);
        m.webhook_failed(&hook);
        m.webhook_lag(&hook, 3);
        let text = m.render();
        for want in [
            r#"mandate_http_requests_total{route="/v1/tasks/{id}",method="GET",class="4xx"} 1"#,
            r#"mandate_decisions_total{outcome="deny"} 1"#,
            r#"mandate_grants_total{outcome="minted"} 1"#,
            r#"mandate_logins_total{outcome="failed"} 1"#,
            "mandate_http_request_duration_seconds_count{route=\"/v1/tasks/{id}\"} 1",
            r#"mandate_webhook_deliveries_total{webhook="whk_0123456789abcdef0123456789abcdef"} 1"#,
            r#"mandate_webhook_failed_attempts_total{webhook="whk_0123456789abcdef0123456789abcdef"} 2"#,
            r#"mandate_webhook_lag_events{webhook="whk_0123456789abcdef0123456789abcdef"} 3"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        m.webhook_gone(&hook);
        assert!(!m.render().contains("whk_"));
    }
}
