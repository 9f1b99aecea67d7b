//! Everything a request handler reads, in one place.

use crate::audit::AuditLog;
use crate::broker::Broker;
use crate::catalog::Catalog;
use crate::config::ProxyConfig;
use crate::facts::Facts;
use crate::feed::Revocations;
use crate::metrics::Metrics;
use crate::verify::Verifier;
use std::sync::{Arc, RwLock};

pub struct State {
    pub config: ProxyConfig,
    pub broker: Arc<Broker>,
    pub verifier: Verifier,
    pub revocations: Revocations,
    pub catalog: Catalog,
    pub facts: Facts,
    /// Cedar decisions reused for identical inputs within a second.
    pub recent: mandate_policy::RecentDecisions,
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    /// DPoP proofs already presented here (RFC 9449 §11.1).
    pub dpop_replay: mandate_token::dpop::ReplayGuard,
    /// Request bodies held while screened (`max_buffered_body_bytes`).
    pub bodies: crate::budget::BodyBudget,
    issuer: RwLock<Option<String>>,
}

impl State {
    pub fn new(
        config: ProxyConfig,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
        audit: AuditLog,
    ) -> Self {
        State {
            bodies: crate::budget::BodyBudget::new(
                config.max_buffered_body_bytes,
                metrics.buffered_body_bytes.clone(),
            ),
            config,
            broker,
            verifier: Verifier::default(),
            revocations: Revocations::default(),
            catalog: Catalog::default(),
            facts: Facts::default(),
            recent: Default::default(),
            metrics,
            audit,
            dpop_replay: Default::default(),
            issuer: RwLock::new(None),
        }
    }

    pub fn issuer(&self) -> Option<String> {
        self.issuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_issuer(&self, issuer: String) {
        *self.issuer.write().unwrap_or_else(|p| p.into_inner()) = Some(issuer);
    }

    /// Can the proxy decide right now? If not, why not (for `/readyz` and
    /// for the 503 a request gets).
    pub fn readiness(&self, now_ms: i64) -> Result<(), String> {
        if !self.audit.is_writable() {
            return Err("the audit spool cannot be written".into());
        }
        if self.issuer().is_none() {
            return Err("the broker's metadata (issuer) is not loaded".into());
        }
        if !self.verifier.keys.is_loaded() {
            return Err("the broker's signing keys (JWKS) are not loaded".into());
        }
        if self.catalog.snapshot().is_none() {
            return Err(match self.catalog.refused() {
                Some(e) => format!("the broker's catalog and policy are not loaded: {e}"),
                None => "the broker's catalog and policy are not loaded".into(),
            });
        }
        if !self
            .revocations
            .is_fresh(now_ms, self.config.staleness_secs)
        {
            return Err(match self.revocations.lag_secs(now_ms) {
                None => "the revocation feed has not connected yet".into(),
                Some(lag) => format!(
                    "the revocation feed is stale: no data for {lag:.0}s (limit {}s)",
                    self.config.staleness_secs
                ),
            });
        }
        Ok(())
    }
}
