//! Start-up and shutdown: open the data dir (keys, database, default
//! policies), build the shared state, bind, serve the router, and stop it
//! all again.

use crate::admin_token::new_admin_token;
use crate::app::{App, now};
use crate::config::Settings;
use crate::directory::Directory;
use crate::federation::Federation;
use crate::keeper::Keeper;
use anyhow::Context;
use mandate_audit::{EventKind, NewEvent};
use mandate_conn::serve::Phase;
use mandate_core::AdminRight;
use mandate_policy::PolicySet;
use mandate_store::{PostgresStore, SqliteStore, Store};
use mandate_token::KeyRing;
use mandate_token::cache::TokenCache;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
    let webhook_http = crate::webhooks::client(Duration::from_secs(raw.webhook_timeout_secs))
        .context("building the webhook client")?;
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
        decided: broadcast::channel(1024).0,
        stopping: watch::channel(false).0,
        feed_streams: Arc::new(tokio::sync::Semaphore::new(
            settings.raw.max_feed_streams as usize,
        )),
        keeper,
        settings,
        dpop_replay: Default::default(),
        assertion_replay: Default::default(),
        metrics: Default::default(),
        throttle,
        webhook_http,
        webhooks_changed: Default::default(),
        engines: Default::default(),
        leases_due: Default::default(),
        lease_pass: Default::default(),
        issuing: Default::default(),
    });
    // Before serving: destroy what a crash left behind (leases of tasks
    // that ended or expired while the broker was down).
    match crate::leases::revoke_due(&app).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            leases = n,
            "revoked dynamic credentials left by a previous run"
        ),
        Err(e) => tracing::error!(error = %e, "could not sweep leases at start"),
    }
    match crate::orphans::sweep(&app).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            logins = n,
            "destroyed logins a previous run made but never recorded"
        ),
        Err(e) => tracing::error!(error = %e, "could not look for unrecorded logins at start"),
    }
    if let Err(e) = crate::leases::count_failing(&app).await {
        tracing::error!(error = %e, "could not count failing leases");
    }
    let background = crate::background::spawn_background(app.clone());

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
