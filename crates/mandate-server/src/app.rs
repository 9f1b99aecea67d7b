//! The running broker: shared state, start-up, background work.

use crate::config::Settings;
use crate::directory::Directory;
use crate::federation::Federation;
use crate::keeper::Keeper;
use crate::tokens::TokenCache;
use anyhow::Context;
use mandate_audit::{EventKind, NewEvent};
use mandate_conn::serve::Phase;
use mandate_core::{AdminRight, AdminToken, Revocation};
use mandate_policy::PolicySet;
use mandate_store::{PostgresStore, SqliteStore, Store};
use mandate_token::KeyRing;
use mandate_token::claims::{SessionClaims, VerifiedAccess};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
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
    policy: RwLock<Arc<PolicySet>>,
    pub policy_dir: PathBuf,
    pub directory: Directory,
    pub verified: TokenCache<VerifiedAccess>,
    /// Cedar decisions reused for identical inputs within a second.
    pub recent: mandate_policy::RecentDecisions,
    pub sessions: TokenCache<SessionClaims>,
    pub federation: Federation,
    pub feed: broadcast::Sender<Revocation>,
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
    pub metrics: crate::metrics::Metrics,
    /// Failed token-endpoint requests per client address; `None` = off.
    pub(crate) throttle: Option<crate::throttle::Throttle>,
}

/// What `start` hands back: where it listens and, on the very first start,
/// the root admin token (shown once, stored only as a hash).
pub struct Started {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub root_token: Option<SecretString>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Drains, then closes, the server's connections.
    pub phase: watch::Sender<Phase>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// Stop serving, stop background work, and close the store so the data
    /// dir can be reopened (by a restart in tests, or the next process).
    pub async fn stop(self) {
        self.app.stopping.send_replace(true);
        self.phase.send_replace(Phase::Drain);
        for b in &self.background {
            b.abort();
        }
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            self.phase.send_replace(Phase::Close);
            let _ = server.await;
        }
        for b in self.background {
            let _ = b.await;
        }
        let store = self.app.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

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

    /// Tell in-process subscribers (SSE clients) about new feed entries.
    pub fn publish(&self, revs: impl IntoIterator<Item = Revocation>) {
        for r in revs {
            let _ = self.feed.send(r);
        }
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

fn write_if_missing(path: &Path, contents: &str) -> anyhow::Result<()> {
    if !path.exists() {
        std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Open the data dir (creating keys, database and default policies on first
/// use), bind, and serve until [`Started::stop`].
pub async fn start(settings: Settings) -> anyhow::Result<Started> {
    let raw = &settings.raw;
    // Before anything is written: a first start that fails here must not
    // leave behind a root token nobody was shown.
    let tls = match &raw.tls {
        Some(t) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Some(crate::listen::tls_acceptor(t)?)
        }
        None => None,
    };
    let data = raw.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    let policy_dir = data.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    write_if_missing(
        &policy_dir.join("schema.cedarschema"),
        mandate_policy::DEFAULT_SCHEMA,
    )?;
    if std::fs::read_dir(&policy_dir)?
        .flatten()
        .all(|e| e.path().extension().is_none_or(|x| x != "cedar"))
    {
        write_if_missing(
            &policy_dir.join("default.cedar"),
            mandate_policy::DEFAULT_POLICIES,
        )?;
    }
    let policy = PolicySet::load_dir(&policy_dir).context("loading policies")?;

    let listener = std::net::TcpListener::bind(raw.listen)
        .with_context(|| format!("binding {}", raw.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if raw.tls.is_some() { "https" } else { "http" };
    let issuer = raw
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
        .trim_end_matches('/')
        .to_owned();

    let max_ttl = (raw.task_max_ttl_secs.max(raw.session_ttl_secs)) as i64;
    // The master key also seals the signing keys at rest, when there is one.
    let master = crate::keeper::master_key(raw)?.map(Arc::new);
    let keys = KeyRing::open(
        &data.join("keys"),
        settings.signing_alg,
        max_ttl,
        now(),
        master.clone(),
    )
    .context("opening signing keys")?;
    let store: Arc<dyn Store> = match raw.database_url()? {
        Some(url) => Arc::new(
            PostgresStore::open(url, raw.database_tls()?)
                .await
                .context("opening the PostgreSQL database")?,
        ),
        None => {
            Arc::new(SqliteStore::open(&data.join("mandate.db")).context("opening the database")?)
        }
    };
    let (directory, withdrawn_keys) = Directory::load(store.as_ref(), now()).await?;
    for kid in withdrawn_keys {
        if keys.current().kid == kid {
            // Cannot happen through the API (the current key is refused);
            // if the files say otherwise, never sign with a withdrawn key.
            tracing::error!(%kid, "the current signing key was withdrawn; rotating");
            keys.rotate(settings.signing_alg, max_ttl, now())
                .context("rotating away from a withdrawn key")?;
        }
        if keys.withdraw(&kid).context("withdrawing a revoked key")? {
            tracing::warn!(%kid, "withdrew a signing key the revocation feed lists");
        }
    }
    let keeper = match master {
        Some(master) => Some(Keeper::open(store.as_ref(), &master, now()).await?),
        None => {
            tracing::warn!("no master key configured: secrets and the proxy are unavailable");
            None
        }
    };
    let federation = Federation::new(&raw.issuers, &issuer);
    federation.warm().await;

    let root_token = if store.count_admin_tokens().await? == 0 {
        let (secret, token) = new_admin_token(
            vec![AdminRight::Root],
            "root token created at first start".into(),
            None,
        );
        let ev = NewEvent::new(EventKind::AdminTokenCreated, "system")
            .detail(serde_json::json!({"id": token.id, "rights": ["root"]}));
        store.create_admin_token(token, ev).await?;
        Some(secret)
    } else {
        None
    };

    let throttle =
        crate::throttle::Throttle::new(raw.token_failure_burst, raw.token_failures_per_minute);
    let app = Arc::new(App {
        issuer,
        store,
        keys,
        policy: RwLock::new(Arc::new(policy)),
        policy_dir,
        directory,
        verified: TokenCache::default(),
        recent: Default::default(),
        sessions: TokenCache::default(),
        federation,
        feed: broadcast::channel(4096).0,
        stopping: watch::channel(false).0,
        feed_streams: Arc::new(tokio::sync::Semaphore::new(
            settings.raw.max_feed_streams as usize,
        )),
        keeper,
        settings,
        dpop_replay: Default::default(),
        metrics: Default::default(),
        throttle,
    });
    let background = spawn_background(app.clone());

    let router = crate::routes::router(app.clone());
    let limits = crate::listen::Limits {
        header_timeout: Duration::from_secs(app.settings.raw.header_read_timeout_secs),
        max_connections: app.settings.raw.max_connections as usize,
        open: app.metrics.connections_open.clone(),
        reached: app.metrics.connection_limit_reached.clone(),
    };
    let (phase, serving) = watch::channel(Phase::Serve);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = tokio::spawn(crate::listen::serve(listener, tls, router, limits, serving));
    tracing::info!(%addr, issuer = %app.issuer, "mandate listening");
    Ok(Started {
        app,
        addr,
        root_token,
        server,
        phase,
        background,
    })
}

/// `mandate dev` on an existing data dir: mint a fresh root token in-process
/// (dev only; a real server never prints a root token twice).
pub async fn dev_admin_token(app: &App) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let (secret, token) =
        new_admin_token(vec![AdminRight::Root], "dev mode root token".into(), None);
    let ev = NewEvent::new(EventKind::AdminTokenCreated, "system")
        .detail(serde_json::json!({"id": token.id, "rights": ["root"], "dev": true}));
    app.store.create_admin_token(token, ev).await?;
    Ok(secret.expose_secret().to_owned())
}

/// A fresh admin token: the bearer secret (returned once) and its stored form.
pub fn new_admin_token(
    rights: Vec<AdminRight>,
    description: String,
    expires_at: Option<i64>,
) -> (SecretString, AdminToken) {
    let secret = format!(
        "mdt_{}",
        mandate_token::b64(&mandate_token::random_bytes::<32>())
    );
    let token = AdminToken {
        id: format!("adm_{}", hex::encode(mandate_token::random_bytes::<8>())),
        hash: mandate_token::sha256_hex(secret.as_bytes()),
        rights,
        description,
        created_at: now(),
        expires_at,
        revoked_at: None,
    };
    (SecretString::from(secret), token)
}

/// A checkpoint of the audit head: what it says, the key, the JWS.
pub struct SignedHead {
    pub claims: mandate_token::checkpoint::CheckpointClaims,
    pub kid: String,
    pub jws: String,
}

/// Write a signed checkpoint of the head into the chain, unless the head
/// is the previous checkpoint (nothing new since).
async fn checkpoint_into_chain(app: &App) {
    let signed = match app.signed_head().await {
        Ok(Some((head, _))) if head.kind == EventKind::AuditCheckpoint => return,
        Ok(Some((_, signed))) => signed,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e.message, "could not sign the audit head");
            return;
        }
    };
    let ev = NewEvent::new(EventKind::AuditCheckpoint, "system").detail(serde_json::json!({
        "seq": signed.claims.seq, "hash": signed.claims.hash, "kid": signed.kid,
        "checkpoint": signed.jws,
    }));
    if let Err(e) = app.store.append_events(vec![ev]).await {
        tracing::error!(error = %e, "could not write the audit checkpoint");
    }
}

fn spawn_background(app: Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    // Sweeper: expire overdue tasks every second, prune once a minute.
    let a = app.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let t = now();
            match a.store.expire_due_tasks(t).await {
                Ok(expired) => {
                    for task in expired {
                        tracing::info!(task = %task.id, agent = %task.agent, "task expired");
                        a.directory.put_task(task);
                    }
                }
                Err(e) => tracing::error!(error = %e, "task sweeper failed"),
            }
            if n.is_multiple_of(60) {
                a.directory.forget_expired(t);
                a.verified.forget_expired(t);
                a.sessions.forget_expired(t);
                if let Some(th) = &a.throttle {
                    th.forget_idle(std::time::Instant::now());
                }
                if let Err(e) = a.store.prune(t).await {
                    tracing::error!(error = %e, "prune failed");
                }
            }
        }
    });
    // Policy hot reload: poll the policy files' mtimes.
    let a_jwks = app.clone();
    let a_check = app.clone();
    let reloader = tokio::spawn(async move {
        let mut last = policy_stamp(&app.policy_dir);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let stamp = policy_stamp(&app.policy_dir);
            if stamp != last {
                last = stamp;
                if let Err(e) = app.reload_policy("system").await {
                    tracing::error!(error = %e, "policy change rejected; keeping the previous policy set");
                    // Someone changed the files: the log says so, even
                    // though nothing took effect.
                    if let ReloadError::Invalid(why) = e {
                        let ev = NewEvent::new(EventKind::PolicyRejected, "system")
                            .detail(serde_json::json!({"error": why}));
                        if let Err(e) = app.store.append_events(vec![ev]).await {
                            tracing::error!(error = %e, "could not audit the rejected policy change");
                        }
                    }
                }
            }
        }
    });
    // Issuer keys age out, so a key an issuer withdrew stops being trusted.
    let jwks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            a_jwks.federation.refresh_due().await;
        }
    });
    let mut tasks = vec![sweeper, reloader, jwks];
    let every = a_check.settings.raw.audit_checkpoint_secs;
    if every > 0 {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await; // the first tick is immediate: skip it
            loop {
                tick.tick().await;
                checkpoint_into_chain(&a_check).await;
            }
        }));
    }
    tasks
}

fn policy_stamp(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok()?, m.len()))
        })
        .collect();
    v.sort();
    v
}
