//! The running broker's shared state (`App`): settings, store, keys, policy,
//! views and caches every handler and background task reads, with the few
//! operations on it (policy reload, signed audit head, key withdrawal).

use crate::config::Settings;
use crate::directory::Directory;
use crate::federation::Federation;
use crate::keeper::Keeper;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Revocation, RevocationKind, Task};
use mandate_policy::PolicySet;
use mandate_store::{Store, TaskMoved};
use mandate_token::KeyRing;
use mandate_token::cache::TokenCache;
use mandate_token::claims::{SessionClaims, VerifiedAccess};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::{broadcast, watch};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct App {
    pub settings: Settings,
    /// The OAuth issuer and base URL (RFC 8414).
    pub issuer: String,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    pub(crate) policy: RwLock<Arc<PolicySet>>,
    pub policy_dir: PathBuf,
    pub directory: Directory,
    pub verified: TokenCache<VerifiedAccess>,
    /// Cedar decisions reused for identical inputs within a second.
    pub recent: mandate_policy::RecentDecisions,
    pub sessions: TokenCache<SessionClaims>,
    pub federation: Federation,
    pub feed: broadcast::Sender<Revocation>,
    /// Each approval a person decided, for requests waiting on it.
    pub decided: broadcast::Sender<mandate_core::ApprovalId>,
    /// Permits for open revocation streams (`max_feed_streams`).
    pub feed_streams: Arc<tokio::sync::Semaphore>,
    /// Raised when the server stops: open revocation streams end at once
    /// (their clients reconnect elsewhere or to the restarted broker)
    /// instead of holding the graceful stop for its whole grace period.
    pub stopping: watch::Sender<bool>,
    /// Seals and opens stored secrets; `None` when no master key is configured.
    pub keeper: Option<Keeper>,
    /// DPoP proofs already presented at the token endpoint (RFC 9449 §11.1).
    pub dpop_replay: mandate_token::dpop::ReplayGuard,
    /// Client assertion `jti`s used at the exchange, introspection and
    /// revocation (login records its own durably).
    pub assertion_replay: mandate_token::dpop::ReplayGuard,
    pub metrics: crate::metrics::Metrics,
    /// Failed token-endpoint requests per client address; `None` = off.
    pub(crate) throttle: Option<crate::throttle::Throttle>,
    /// The webhook sender's HTTP client (no redirects, a timeout).
    pub(crate) webhook_http: reqwest::Client,
    /// Raised when a webhook endpoint is added or deleted.
    pub(crate) webhooks_changed: tokio::sync::Notify,
    /// Each tool's dynamic-credential engine.
    pub(crate) engines: crate::engines::Engines,
    /// Raised by task transitions: leases may have fallen due.
    pub(crate) leases_due: tokio::sync::Notify,
    /// One lease revocation pass at a time.
    pub(crate) lease_pass: tokio::sync::Mutex<()>,
    /// Leases whose engine has not answered yet.
    pub(crate) issuing: crate::issuing::Issuing,
}

/// The state every handler receives (axum `State`).
pub type AppState = Arc<App>;

/// Why a policy reload left the old set in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] mandate_store::StoreError),
}

impl App {
    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log's head signed by the current key, with that key's id; `None`
    /// while the log is empty.
    pub async fn signed_head(
        &self,
    ) -> Result<Option<(mandate_audit::Event, SignedHead)>, crate::error::ApiError> {
        let Some(head) = self.store.last_event().await? else {
            return Ok(None);
        };
        let key = self.keys.current();
        let claims = mandate_token::checkpoint::CheckpointClaims {
            iss: self.issuer.clone(),
            iat: now(),
            seq: head.seq,
            hash: head.hash.clone(),
        };
        let jws = mandate_token::checkpoint::sign(&key, &claims)
            .map_err(crate::error::ApiError::internal)?;
        Ok(Some((
            head,
            SignedHead {
                claims,
                kid: key.kid.clone(),
                jws,
            },
        )))
    }

    /// Re-read `policies/` and, if it validates, audit and swap it in (in
    /// that order: no decision is made under a policy the log lacks).
    pub async fn reload_policy(&self, actor: &str) -> Result<usize, ReloadError> {
        let set = PolicySet::load_dir(&self.policy_dir)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let count = set.policy_count();
        let ev = NewEvent::new(EventKind::PolicyReloaded, actor)
            .detail(serde_json::json!({"policies": count}));
        self.store.append_events(vec![ev]).await?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        tracing::info!(policies = count, "policy reloaded");
        Ok(count)
    }

    /// Tell in-process subscribers (SSE clients) about new feed entries;
    /// a revoked token is refused here from now on too.
    pub fn publish(&self, revs: impl IntoIterator<Item = Revocation>) {
        for r in revs {
            if r.kind == RevocationKind::Token {
                self.directory.revoke_token(r.id.clone(), r.expires_at);
            }
            let _ = self.feed.send(r);
        }
    }

    /// A task's state change (and the subtree it took with it) as the
    /// store wrote it: into the broker's own view, and onto the feed.
    /// The keeper, or 503 when no master key is configured.
    pub fn require_keeper(&self) -> Result<&crate::keeper::Keeper, crate::error::ApiError> {
        self.keeper.as_ref().ok_or_else(|| {
            crate::error::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "secrets_unavailable",
                "no master key is configured (master_key_file or MANDATE_MASTER_KEY), so secrets are off",
            )
        })
    }

    pub fn moved(&self, moved: TaskMoved) -> Task {
        let task = moved.task.clone();
        self.directory.put_task(moved.task);
        for id in &moved.subtree {
            self.directory.forget_task(id);
        }
        self.publish(moved.revocations);
        self.leases_due.notify_one();
        task
    }

    /// Stop trusting a withdrawn signing key: out of the ring (and off
    /// disk), and every cached verification forgotten.
    pub fn withdraw_key(&self, kid: &str) -> Result<(), mandate_token::TokenError> {
        self.keys.withdraw(kid)?;
        self.verified.clear();
        self.sessions.clear();
        Ok(())
    }

    /// The longest any token can live: bounds how long a retired key stays published.
    pub fn max_token_ttl(&self) -> i64 {
        (self
            .settings
            .raw
            .task_max_ttl_secs
            .max(self.settings.raw.session_ttl_secs)) as i64
    }
}

/// A checkpoint of the audit head: what it says, the key, the JWS.
pub struct SignedHead {
    pub claims: mandate_token::checkpoint::CheckpointClaims,
    pub kid: String,
    pub jws: String,
}
