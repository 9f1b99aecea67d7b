//! Mandate's credential-injection proxy (the data plane). An agent calls
//! `/{tool}/{path}` with its task's access token; the proxy verifies the
//! token offline against the broker's keys, gathers the facts (revocation
//! feed, the token's agent and task from the broker) and asks the one
//! decision path the broker's `/v1/authorize` also uses
//! (`mandate_policy::authorize_request`: the tool's routes map method + path
//! to an action, then the broker's own Cedar policy), then forwards to the
//! tool's upstream with the upstream secret injected — a secret the agent never sees, redacted from
//! anything that comes back. Every call is audited through a local
//! write-ahead spool to the broker's chain.
//!
//! Boundaries: the proxy holds no state of record. Tools, policy, secret
//! values, agent and task facts all come from the broker; when it cannot
//! get them fresh enough it refuses (fail closed). Several proxies can run
//! beside one broker.
//!
//! ```no_run
//! # async fn run() -> Result<(), mandate_proxy::ProxyError> {
//! let config = mandate_proxy::ProxyConfig::load(None)?;
//! let proxy = mandate_proxy::Proxy::start(config).await?;
//! println!("listening on {}", proxy.addr());
//! proxy.wait().await
//! # }
//! ```

#![forbid(unsafe_code)]

mod audit;
mod broker;
mod budget;
mod catalog;
mod config;
mod decide;
mod egress;
mod error;
mod facts;
mod feed;
mod forward;
mod metrics;
mod record;
mod redact;
mod router;
mod screen;
mod spool;
mod state;
mod tunnel;
mod verify;
mod workers;
mod writer;

pub use config::ProxyConfig;
pub use error::{Code, Deny, ProxyError};
pub use redact::{Patterns, Redactor, forms};

use mandate_core::RevocationKind;
use state::State;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Refresh the broker's keys this often even without an unknown `kid`,
/// so retired keys stop verifying.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// How long `stop` waits for open connections before closing them.
const DRAIN: Duration = Duration::from_secs(10);
/// How long `stop` tries to ship the remaining audit records.
const SHIP_GRACE: Duration = Duration::from_secs(5);

pub struct Proxy;

impl Proxy {
    /// Bind, start the background work (catalog, keys, revocation feed,
    /// audit shipping) and serve. Returns once listening; requests are
    /// refused with 503 until the broker's data is loaded (see `/readyz`).
    pub async fn start(config: ProxyConfig) -> Result<RunningProxy, ProxyError> {
        config.validate()?;
        let token = config
            .token
            .clone()
            .ok_or_else(|| ProxyError::config("token_file", "no proxy token"))?;
        let roots = config.extra_roots()?;
        let broker = Arc::new(
            broker::Broker::new(config.broker_base(), token, &roots)
                .map_err(|e| ProxyError::Client(e.to_string()))?,
        );
        let metrics = Arc::new(metrics::Metrics::default());
        let threads = config.worker_threads.unwrap_or_else(workers::default_count);
        // A connection pool per serving thread.
        let upstreams = (0..threads)
            .map(|_| forward::client(&roots))
            .collect::<Result<Vec<_>, _>>()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let egress_listener = match config.egress_listen {
            None => None,
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })?,
            ),
        };
        let egress_addr = match &egress_listener {
            Some(l) => Some(l.local_addr().map_err(|source| ProxyError::Bind {
                addr: config.egress_listen.unwrap_or(addr),
                source,
            })?),
            None => None,
        };
        let pipeline = audit::start(
            &config.spool_dir,
            broker.clone(),
            metrics.clone(),
            audit::ShipSettings {
                batch_max: config.audit_batch_max,
                flush_every: Duration::from_millis(config.audit_flush_ms),
            },
        )
        .map_err(|source| ProxyError::Spool {
            path: config.spool_dir.clone(),
            source,
        })?;
        let header_timeout = Duration::from_secs(config.header_read_timeout_secs);
        let max_connections = config.max_connections;
        // One limit over both listeners: a tunnel holds a place as a
        // connection to the injection listener does.
        let places = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let st = Arc::new(State::new(config, broker, metrics, pipeline.log.clone()));
        let background = vec![
            tokio::spawn(catalog_loop(st.clone())),
            tokio::spawn(feed_loop(st.clone())),
            tokio::spawn(sweep_loop(st.clone())),
        ];
        let (stop, _) = watch::channel(false);
        let listener = listener
            .into_std()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let workers = match workers::Workers::start(
            listener,
            upstreams,
            st.clone(),
            header_timeout,
            places.clone(),
            max_connections,
            stop.clone(),
        ) {
            Ok(w) => w,
            Err(source) => {
                for b in &background {
                    b.abort();
                }
                pipeline.stop(Duration::ZERO).await;
                return Err(ProxyError::Bind { addr, source });
            }
        };
        tracing::info!(%addr, threads, "mandate proxy listening");
        let egress = egress_listener.map(|l| {
            let phase = workers.phase().subscribe();
            tracing::info!(addr = ?egress_addr, "egress listener (CONNECT) listening");
            tokio::spawn(egress::serve(l, st.clone(), places, phase))
        });
        Ok(RunningProxy {
            addr,
            egress_addr,
            stop,
            workers,
            background,
            egress,
            pipeline,
        })
    }
}

/// A started proxy.
pub struct RunningProxy {
    addr: SocketAddr,
    egress_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    workers: workers::Workers,
    background: Vec<JoinHandle<()>>,
    /// The egress listener and its tunnels, when `egress_listen` is set.
    egress: Option<JoinHandle<()>>,
    pipeline: audit::Pipeline,
}

/// Asks a running proxy to stop (e.g. from a signal handler).
#[derive(Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl RunningProxy {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The egress listener's address (`egress_listen`), if it has one.
    pub fn egress_addr(&self) -> Option<SocketAddr> {
        self.egress_addr
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Graceful stop: no new connections, open ones drained (for a while),
    /// audit records written and, if the broker answers, shipped.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.wait().await;
    }

    /// Run until stopped (see [`RunningProxy::stopper`]) or the server fails.
    pub async fn wait(mut self) -> Result<(), ProxyError> {
        let mut stop_rx = self.stop.subscribe();
        let phase = self.workers.phase();
        let result = tokio::select! {
            r = self.workers.served() => r,
            _ = async {
                let _ = stop_rx.wait_for(|s| *s).await;
                phase.send_replace(workers::Phase::Drain);
                tokio::time::sleep(DRAIN).await;
            } => {
                self.workers.shutdown();
                self.workers.served().await
            }
        };
        // Tunnels close with the injection listener's last connection (or
        // its drain period); their records are written before shipping stops.
        phase.send_replace(workers::Phase::Close);
        if let Some(e) = self.egress.take() {
            let _ = e.await;
        }
        for b in &self.background {
            b.abort();
        }
        self.pipeline.stop(SHIP_GRACE).await;
        self.workers.release().await;
        result.map_err(ProxyError::Serve)
    }

    /// Stop as a crash (`kill -9`) would: no draining, no final write or
    /// shipping. Records already in the spool are sent by the next start.
    pub async fn kill(mut self) {
        self.workers.shutdown();
        for b in self.background.iter().chain(&self.egress) {
            b.abort();
        }
        self.pipeline.kill().await;
        let _ = self.workers.served().await;
        self.workers.release().await;
    }
}

/// Issuer and keys first, then the catalog, again and again.
async fn catalog_loop(st: Arc<State>) {
    let every = Duration::from_secs(st.config.catalog_refresh_secs);
    let mut keys_at: Option<tokio::time::Instant> = None;
    loop {
        if st.issuer().is_none() {
            match st.broker.issuer().await {
                Ok(i) => st.set_issuer(i),
                Err(e) => tracing::warn!(error = %e, "broker metadata unavailable"),
            }
        }
        if keys_at.is_none_or(|t| t.elapsed() >= JWKS_REFRESH) {
            match st.verifier.keys.refresh(&st.broker, true).await {
                Ok(()) => keys_at = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "broker JWKS unavailable"),
            }
        }
        if let Some(issuer) = st.issuer()
            && let Err(e) = st.catalog.refresh(&st.broker, &issuer).await
        {
            tracing::warn!(error = %e, "catalog refresh failed; keeping the previous one");
        }
        // Until everything is loaded, retry sooner than the refresh period.
        let loaded = st.catalog.snapshot().is_some() && keys_at.is_some();
        tokio::time::sleep(if loaded {
            every
        } else {
            every.min(Duration::from_secs(1))
        })
        .await;
    }
}

async fn feed_loop(st: Arc<State>) {
    let on_entry = |r: &mandate_core::Revocation| match r.kind {
        RevocationKind::Task => st.facts.forget_task(&r.id),
        RevocationKind::Agent => st.facts.forget_agent(&r.id),
        RevocationKind::Key => st.verifier.withdraw_key(&r.id),
        RevocationKind::Token => {}
    };
    feed::run(
        &st.broker,
        &st.revocations,
        st.config.staleness_secs,
        on_entry,
    )
    .await;
}

async fn sweep_loop(st: Arc<State>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = now_secs();
        st.revocations.sweep(now);
        st.verifier.forget_expired(now);
    }
}
