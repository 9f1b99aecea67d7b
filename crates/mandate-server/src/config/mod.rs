//! Server configuration: one TOML file, every key overridable by a
//! `MANDATE_*` environment variable, validated at start with errors that
//! name the key.

use mandate_core::{Environment, OnMisuse, TrustDomain};
use mandate_token::SigningAlg;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod anomaly;
mod database;
pub use crate::forwarded::ForwardingHeader;
use database::check_database_url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// `production=suspend,staging=alert`.
fn parse_on_misuse(v: &str) -> Result<BTreeMap<Environment, OnMisuse>, ConfigError> {
    env_pairs("MANDATE_ON_MISUSE", v)
}

/// `environment=value` pairs, comma-separated, from the variable `key`.
fn env_pairs<V>(key: &str, v: &str) -> Result<BTreeMap<Environment, V>, ConfigError>
where
    V: std::str::FromStr<Err = mandate_core::Invalid>,
{
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (env, value) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    key,
                    "expected environment=action pairs, e.g. production=suspend",
                )
            })?;
            let named =
                |e: mandate_core::Invalid| invalid(key, format!("{}: {}", e.field, e.message));
            Ok((
                env.trim().parse().map_err(named)?,
                value.trim().parse().map_err(named)?,
            ))
        })
        .collect()
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("`{v}` is not a valid number")))
}

fn invalid(key: &str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// A trusted workload-identity issuer (Kubernetes, CI OIDC, SPIRE JWT-SVID).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value.
    pub issuer: String,
    /// JWKS on disk (re-read on an unknown `kid`)…
    pub jwks_file: Option<PathBuf>,
    /// …or fetched over HTTPS (plain HTTP on loopback only), cached and
    /// refetched on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Accepted `aud` values; defaults to the broker's public URL.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Re-read the JWKS at least this often, so a key the issuer withdrew
    /// stops being trusted (default 300 s).
    #[serde(default = "default_jwks_refresh_secs")]
    pub refresh_secs: u64,
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

/// Keys fetched in clear could be swapped in transit: only a local issuer
/// (a SPIRE agent, a test) may serve them over plain HTTP.
fn is_https_or_loopback(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => true,
        "http" => match u.host_str() {
            Some("localhost") => true,
            Some(h) => h
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        _ => false,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8200`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Base URL clients use; the OAuth issuer. Defaults to `http(s)://<listen>`.
    pub public_url: Option<String>,
    /// Holds `mandate.db`, `keys/` and `policies/`.
    pub data_dir: PathBuf,
    pub trust_domain: String,
    /// `EdDSA` (default), `ES256` or `RS256`.
    pub signing_alg: String,
    /// Lifetime of identity sessions, seconds (≤ 3600).
    pub session_ttl_secs: u32,
    /// Longest client assertion (`private_key_jwt`) accepted, `iat` to
    /// `exp`, seconds (60–3600). An hour is what Okta and Google accept
    /// and what client libraries sign by default (Authlib: 3600); each
    /// `jti` is refused a second time for as long as the assertion lives.
    pub client_assertion_max_lifetime_secs: u32,
    /// Task lifetime when the request names none, seconds.
    pub task_default_ttl_secs: u32,
    /// Longest task lifetime allowed, seconds.
    pub task_max_ttl_secs: u32,
    /// How many hops a task may be handed down (1–16): a root task's
    /// children are at depth 1.
    pub max_delegation_depth: u32,
    /// How long a person has to decide an approval request (seconds,
    /// never past the task's deadline).
    pub approval_request_ttl_secs: u32,
    /// The longest time-box an approver may grant (seconds).
    pub approval_max_secs: u32,
    /// The hard cap on a break-glass task's life (seconds); longer is
    /// refused, never shortened.
    pub breakglass_max_secs: u32,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// `text` or `json`.
    pub log_format: String,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// File holding the base64 master key that wraps the secrets' data key.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, from `MANDATE_MASTER_KEY` only (never a file key).
    #[serde(skip)]
    pub master_key: Option<SecretString>,
    /// `mandate dev` only: generate a master key in the data dir if none is set.
    #[serde(skip)]
    pub generate_master_key: bool,
    /// File holding a PostgreSQL URL (`postgres://user:pass@host/db`); when
    /// set (or `MANDATE_DATABASE_URL` is), state lives there instead of in
    /// `data_dir/mandate.db`. Keys and policies stay in `data_dir`.
    pub database_url_file: Option<PathBuf>,
    /// The URL itself, from `MANDATE_DATABASE_URL` only: it may carry a
    /// password, which does not belong in a config file.
    #[serde(skip)]
    pub database_url: Option<SecretString>,
    /// PEM CAs trusted for the PostgreSQL server's certificate, beside the
    /// public web roots (a private PKI). TLS is used whenever the server
    /// offers it; `sslmode=require` in the URL insists on it.
    pub database_ca_file: Option<PathBuf>,
    /// PEM certificate chain and private key (0600) offered to a PostgreSQL
    /// server that authenticates clients by certificate; both or neither.
    pub database_client_cert_file: Option<PathBuf>,
    pub database_client_key_file: Option<PathBuf>,
    /// Seconds between keep-alives on the revocation stream; verifiers treat
    /// silence longer than their staleness bound as "broker unreachable".
    pub feed_keepalive_secs: u64,
    /// Revocation streams open at once (proxies, verifiers); more get 503
    /// and can poll instead. Each holds a connection and a subscription.
    pub max_feed_streams: u32,
    /// Seconds a client has to send a request's headers; an idle keep-alive
    /// connection is closed after as long (like Vault's
    /// `http_read_header_timeout`): slow connections cannot pile up.
    pub header_read_timeout_secs: u64,
    /// Seconds a request's body has to arrive whole after its headers (as
    /// Vault's `http_read_timeout`); later, 408 and the connection closes.
    pub body_read_timeout_secs: u64,
    /// Client connections open at once; past it the broker accepts nothing
    /// and new connections wait in the listen queue (as HAProxy's
    /// `maxconn`), so a flood cannot exhaust descriptors or memory. Keep it
    /// under the process's open-file limit, less the database's.
    pub max_connections: u32,
    /// Failed token-endpoint requests a client address may make in a burst
    /// before it gets 429 `slow_down`; 0 turns throttling off.
    pub token_failure_burst: u32,
    /// How fast that allowance refills, per minute.
    pub token_failures_per_minute: u32,
    /// Reverse proxies (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`) whose
    /// forwarding header names the client the failure throttle counts;
    /// from anyone else the header is ignored. Empty: the peer address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header those proxies write: `x-forwarded-for` (default) or
    /// `forwarded` (RFC 7239). Only that one is read.
    #[serde(default)]
    pub forwarding_header: ForwardingHeader,
    /// Serve `/metrics` without a token (as Vault's
    /// `unauthenticated_metrics_access`); by default a scraper needs an
    /// admin token with the `metrics` right.
    pub unauthenticated_metrics_access: bool,
    /// Seconds between signed checkpoints of the audit head written into
    /// the chain (`audit.checkpoint`), when anything new was logged; 0 = off.
    pub audit_checkpoint_secs: u64,
    /// What a token's misuse (relayed, replayed, at another tool) does to
    /// its live task, per environment: `suspend` or `alert` (recorded
    /// only). Unlisted environments: `suspend` in production, else `alert`.
    #[serde(default)]
    pub on_misuse: BTreeMap<Environment, OnMisuse>,
    /// Seconds one webhook attempt may take (connect and answer) before
    /// it counts as failed and is retried later.
    pub webhook_timeout_secs: u64,
    /// The anomaly detector: thresholds and, per rule and environment,
    /// `alert`, `suspend` or `require_approval` (`[anomaly.rules.<rule>]`).
    pub anomaly: mandate_anomaly::Config,
    /// Per secret class, `max_age_secs`, `unused_after_secs` and
    /// `max_task_ttl_secs` (`[rotation.model]`, …); a class not listed
    /// keeps its defaults (see the README).
    pub rotation: BTreeMap<mandate_core::SecretClass, mandate_core::ClassPolicy>,
    /// The posture report's period and limits (`[posture]`).
    pub posture: PostureConfig,
}

/// `[posture]`: what the report and the rotation notices count against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostureConfig {
    /// Days of audit log the inventory and the report count use over.
    pub period_days: u32,
    /// Deepest delegation considered reviewable; a larger
    /// `max_delegation_depth` is a finding.
    pub delegation_depth_limit: u32,
    /// Seconds between checks that raise `secret.rotation_due` and
    /// `secret.unused` (once each); 0 = off.
    pub notice_interval_secs: u64,
}

impl Default for PostureConfig {
    fn default() -> Self {
        PostureConfig {
            period_days: 30,
            delegation_depth_limit: 2,
            notice_interval_secs: 3600,
        }
    }
}

impl Config {
    /// What misuse of a token of a task in `env` does.
    pub fn on_misuse(&self, env: Environment) -> OnMisuse {
        self.on_misuse.get(&env).copied().unwrap_or(match env {
            Environment::Production => OnMisuse::Suspend,
            _ => OnMisuse::Alert,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8200".parse().expect("static address"),
            public_url: None,
            data_dir: PathBuf::from("mandate-data"),
            trust_domain: "mandate.local".into(),
            signing_alg: "EdDSA".into(),
            session_ttl_secs: 900,
            client_assertion_max_lifetime_secs: 3600,
            task_default_ttl_secs: 900,
            task_max_ttl_secs: 8 * 3600,
            max_delegation_depth: 3,
            approval_request_ttl_secs: 900,
            approval_max_secs: 3600,
            breakglass_max_secs: 3600,
            max_body_bytes: 64 * 1024,
            log_format: "text".into(),
            tls: None,
            issuers: Vec::new(),
            master_key_file: None,
            master_key: None,
            generate_master_key: false,
            database_url_file: None,
            database_url: None,
            database_ca_file: None,
            database_client_cert_file: None,
            database_client_key_file: None,
            feed_keepalive_secs: 10,
            max_feed_streams: 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 30,
            max_connections: 10_000,
            token_failure_burst: 100,
            token_failures_per_minute: 600,
            trusted_proxies: Vec::new(),
            forwarding_header: Default::default(),
            unauthenticated_metrics_access: false,
            audit_checkpoint_secs: 3600,
            on_misuse: BTreeMap::new(),
            webhook_timeout_secs: 5,
            anomaly: mandate_anomaly::Config::default(),
            rotation: BTreeMap::new(),
            posture: PostureConfig::default(),
        }
    }
}

/// Validated, typed view of [`Config`] that the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: Config,
    pub trust_domain: TrustDomain,
    pub signing_alg: SigningAlg,
    pub(crate) trusted_proxies: crate::forwarded::TrustedProxies,
    /// Each secret class's limits: `rotation` over the defaults.
    pub rotation: mandate_core::RotationPolicy,
}

impl Config {
    /// Read `path` (if given), apply `MANDATE_*` overrides from `env`, validate.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        anomaly::apply_env(&mut self.anomaly, &env)?;
        if let Some(v) = env("MANDATE_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|_| invalid("MANDATE_LISTEN", format!("`{v}` is not host:port")))?;
        }
        if let Some(v) = env("MANDATE_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = env("MANDATE_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("MANDATE_TRUST_DOMAIN") {
            self.trust_domain = v;
        }
        if let Some(v) = env("MANDATE_SIGNING_ALG") {
            self.signing_alg = v;
        }
        if let Some(v) = env("MANDATE_SESSION_TTL_SECS") {
            self.session_ttl_secs = num("MANDATE_SESSION_TTL_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_CLIENT_ASSERTION_MAX_LIFETIME_SECS") {
            self.client_assertion_max_lifetime_secs =
                num("MANDATE_CLIENT_ASSERTION_MAX_LIFETIME_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_ON_MISUSE") {
            self.on_misuse = parse_on_misuse(&v)?;
        }
        if let Some(v) = env("MANDATE_APPROVAL_REQUEST_TTL_SECS") {
            self.approval_request_ttl_secs = num("MANDATE_APPROVAL_REQUEST_TTL_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_BREAKGLASS_MAX_SECS") {
            self.breakglass_max_secs = num("MANDATE_BREAKGLASS_MAX_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_APPROVAL_MAX_SECS") {
            self.approval_max_secs = num("MANDATE_APPROVAL_MAX_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_MAX_DELEGATION_DEPTH") {
            self.max_delegation_depth = num("MANDATE_MAX_DELEGATION_DEPTH", &v)?;
        }
        if let Some(v) = env("MANDATE_TASK_DEFAULT_TTL_SECS") {
            self.task_default_ttl_secs = num("MANDATE_TASK_DEFAULT_TTL_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_TASK_MAX_TTL_SECS") {
            self.task_max_ttl_secs = num("MANDATE_TASK_MAX_TTL_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_MAX_BODY_BYTES") {
            self.max_body_bytes = num("MANDATE_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = env("MANDATE_LOG_FORMAT") {
            self.log_format = v;
        }
        if let Some(v) = env("MANDATE_MASTER_KEY_FILE") {
            self.master_key_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_MASTER_KEY") {
            self.master_key = Some(SecretString::from(v));
        }
        if let Some(v) = env("MANDATE_DATABASE_URL_FILE") {
            self.database_url_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_DATABASE_URL") {
            self.database_url = Some(SecretString::from(v));
        }
        if let Some(v) = env("MANDATE_DATABASE_CA_FILE") {
            self.database_ca_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_DATABASE_CLIENT_CERT_FILE") {
            self.database_client_cert_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_DATABASE_CLIENT_KEY_FILE") {
            self.database_client_key_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_FORWARDING_HEADER") {
            self.forwarding_header =
                ForwardingHeader::parse(&v).map_err(|e| invalid("MANDATE_FORWARDING_HEADER", e))?;
        }
        if let Some(v) = env("MANDATE_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = env("MANDATE_FEED_KEEPALIVE_SECS") {
            self.feed_keepalive_secs = num("MANDATE_FEED_KEEPALIVE_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_MAX_FEED_STREAMS") {
            self.max_feed_streams = num("MANDATE_MAX_FEED_STREAMS", &v)?;
        }
        if let Some(v) = env("MANDATE_HEADER_READ_TIMEOUT_SECS") {
            self.header_read_timeout_secs = num("MANDATE_HEADER_READ_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_BODY_READ_TIMEOUT_SECS") {
            self.body_read_timeout_secs = num("MANDATE_BODY_READ_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_MAX_CONNECTIONS") {
            self.max_connections = num("MANDATE_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = env("MANDATE_UNAUTHENTICATED_METRICS_ACCESS") {
            self.unauthenticated_metrics_access = v.trim().parse().map_err(|_| {
                invalid(
                    "MANDATE_UNAUTHENTICATED_METRICS_ACCESS",
                    format!("`{v}` is not true or false"),
                )
            })?;
        }
        if let Some(v) = env("MANDATE_AUDIT_CHECKPOINT_SECS") {
            self.audit_checkpoint_secs = num("MANDATE_AUDIT_CHECKPOINT_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_WEBHOOK_TIMEOUT_SECS") {
            self.webhook_timeout_secs = num("MANDATE_WEBHOOK_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("MANDATE_TOKEN_FAILURE_BURST") {
            self.token_failure_burst = num("MANDATE_TOKEN_FAILURE_BURST", &v)?;
        }
        if let Some(v) = env("MANDATE_TOKEN_FAILURES_PER_MINUTE") {
            self.token_failures_per_minute = num("MANDATE_TOKEN_FAILURES_PER_MINUTE", &v)?;
        }
        match (env("MANDATE_TLS_CERT_FILE"), env("MANDATE_TLS_KEY_FILE")) {
            (Some(cert_file), Some(key_file)) => {
                self.tls = Some(TlsConfig {
                    cert_file: cert_file.into(),
                    key_file: key_file.into(),
                })
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "MANDATE_TLS_CERT_FILE",
                    "set both MANDATE_TLS_CERT_FILE and MANDATE_TLS_KEY_FILE, or neither",
                ));
            }
        }
        Ok(())
    }

    pub fn validate(self) -> Result<Settings, ConfigError> {
        anomaly::validate(&self.anomaly)?;
        let rotation = mandate_core::RotationPolicy::new(self.rotation.clone())
            .map_err(|e| invalid(&e.field, e.message))?;
        if !(1..=365).contains(&self.posture.period_days) {
            return Err(invalid("posture.period_days", "must be between 1 and 365"));
        }
        if !(1..=mandate_core::MAX_DELEGATION_DEPTH).contains(&self.posture.delegation_depth_limit)
        {
            return Err(invalid(
                "posture.delegation_depth_limit",
                "must be between 1 and 16",
            ));
        }
        let trust_domain = TrustDomain::parse(&self.trust_domain)
            .map_err(|e| invalid("trust_domain", e.message))?;
        let signing_alg: SigningAlg = self.signing_alg.parse().map_err(|_| {
            invalid(
                "signing_alg",
                format!("`{}` is not one of EdDSA, ES256, RS256", self.signing_alg),
            )
        })?;
        if self.token_failure_burst > 0 && self.token_failures_per_minute == 0 {
            return Err(invalid(
                "token_failures_per_minute",
                "must be at least 1 while token_failure_burst is set (0 turns throttling off)",
            ));
        }
        for (name, v) in [
            ("approval_request_ttl_secs", self.approval_request_ttl_secs),
            ("approval_max_secs", self.approval_max_secs),
            ("breakglass_max_secs", self.breakglass_max_secs),
        ] {
            if !(1..=86_400).contains(&v) {
                return Err(invalid(name, "must be between 1 and 86400 seconds"));
            }
        }
        if !(1..=mandate_core::MAX_DELEGATION_DEPTH).contains(&self.max_delegation_depth) {
            return Err(invalid(
                "max_delegation_depth",
                format!(
                    "must be between 1 and {}",
                    mandate_core::MAX_DELEGATION_DEPTH
                ),
            ));
        }
        if !(60..=3600).contains(&self.client_assertion_max_lifetime_secs) {
            return Err(invalid(
                "client_assertion_max_lifetime_secs",
                "must be between 60 and 3600",
            ));
        }
        if !(60..=3600).contains(&self.session_ttl_secs) {
            return Err(invalid("session_ttl_secs", "must be between 60 and 3600"));
        }
        if self.task_max_ttl_secs == 0 || self.task_max_ttl_secs > 7 * 86_400 {
            return Err(invalid(
                "task_max_ttl_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        if self.task_default_ttl_secs == 0 || self.task_default_ttl_secs > self.task_max_ttl_secs {
            return Err(invalid(
                "task_default_ttl_secs",
                "must be between 1 and task_max_ttl_secs",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid("log_format", "must be `text` or `json`"));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("public_url", "must start with http:// or https://"));
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(invalid(
                "master_key_file",
                "set either master_key_file or MANDATE_MASTER_KEY, not both",
            ));
        }
        if self.database_url.is_some() && self.database_url_file.is_some() {
            return Err(invalid(
                "database_url_file",
                "set either database_url_file or MANDATE_DATABASE_URL, not both",
            ));
        }
        if let Some(url) = &self.database_url {
            check_database_url("MANDATE_DATABASE_URL", url.expose_secret())?;
        }
        match (
            &self.database_client_cert_file,
            &self.database_client_key_file,
        ) {
            (Some(_), None) => {
                return Err(invalid(
                    "database_client_key_file",
                    "database_client_cert_file is set: give its private key too",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "database_client_cert_file",
                    "database_client_key_file is set: give its certificate too",
                ));
            }
            _ => {}
        }
        if !(1..=300).contains(&self.feed_keepalive_secs) {
            return Err(invalid("feed_keepalive_secs", "must be between 1 and 300"));
        }
        if self.audit_checkpoint_secs > 7 * 86_400 {
            return Err(invalid(
                "audit_checkpoint_secs",
                "must be between 0 (off) and 604800 (a week)",
            ));
        }
        if !(1..=60).contains(&self.webhook_timeout_secs) {
            return Err(invalid("webhook_timeout_secs", "must be between 1 and 60"));
        }
        if !(1..=100_000).contains(&self.max_feed_streams) {
            return Err(invalid("max_feed_streams", "must be between 1 and 100000"));
        }
        if !(1..=3600).contains(&self.header_read_timeout_secs) {
            return Err(invalid(
                "header_read_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&self.body_read_timeout_secs) {
            return Err(invalid(
                "body_read_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(invalid("max_connections", "must be between 1 and 1000000"));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            if iss.issuer.is_empty() {
                return Err(invalid(
                    &format!("issuers[{i}].issuer"),
                    "must not be empty",
                ));
            }
            if iss.jwks_file.is_some() == iss.jwks_url.is_some() {
                return Err(invalid(
                    &format!("issuers[{i}]"),
                    "set exactly one of jwks_file and jwks_url",
                ));
            }
            if let Some(url) = &iss.jwks_url
                && !is_https_or_loopback(url)
            {
                return Err(invalid(
                    &format!("issuers[{i}].jwks_url"),
                    "must be https:// (plain http only to a loopback address)",
                ));
            }
            if !(1..=86_400).contains(&iss.refresh_secs) {
                return Err(invalid(
                    &format!("issuers[{i}].refresh_secs"),
                    "must be between 1 and 86400",
                ));
            }
        }
        let trusted_proxies =
            crate::forwarded::TrustedProxies::parse(&self.trusted_proxies, self.forwarding_header)
                .map_err(|(i, e)| invalid(&format!("trusted_proxies[{i}]"), e))?;
        Ok(Settings {
            raw: self,
            trust_domain,
            signing_alg,
            trusted_proxies,
            rotation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_come_from_env_and_are_bounded() {
        let load = |v: &'static str| {
            Config::load(None, move |k| {
                (k == "MANDATE_MAX_CONNECTIONS").then(|| v.into())
            })
        };
        assert_eq!(Config::default().max_connections, 10_000);
        assert_eq!(load("64").unwrap().max_connections, 64);
        let err = load("lots").unwrap_err().to_string();
        assert!(err.starts_with("MANDATE_MAX_CONNECTIONS"), "{err}");
        for bad in [0, 1_000_001] {
            let err = Config {
                max_connections: bad,
                ..Config::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.contains("max_connections"), "{bad}: {err}");
        }
        let body = Config::load(None, |k| {
            (k == "MANDATE_BODY_READ_TIMEOUT_SECS").then(|| "5".into())
        })
        .unwrap();
        assert_eq!(body.body_read_timeout_secs, 5);
        let err = Config {
            body_read_timeout_secs: 0,
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("body_read_timeout_secs"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_errors_name_the_key() {
        let cfg = Config::load(None, |k| {
            (k == "MANDATE_SESSION_TTL_SECS").then(|| "300".into())
        })
        .unwrap();
        assert_eq!(cfg.session_ttl_secs, 300);
        let err =
            Config::load(None, |k| (k == "MANDATE_LISTEN").then(|| "nope".into())).unwrap_err();
        assert!(err.to_string().starts_with("MANDATE_LISTEN"), "{err}");
        let open = |v: &'static str| {
            Config::load(None, move |k| {
                (k == "MANDATE_UNAUTHENTICATED_METRICS_ACCESS").then(|| v.into())
            })
        };
        assert!(!Config::default().unauthenticated_metrics_access);
        let week = Config {
            audit_checkpoint_secs: 7 * 86_400 + 1,
            ..Config::default()
        };
        assert!(
            week.validate()
                .unwrap_err()
                .to_string()
                .starts_with("audit_checkpoint_secs")
        );
        assert!(open("true").unwrap().unauthenticated_metrics_access);
        let err = open("yes").unwrap_err().to_string();
        assert!(
            err.starts_with("MANDATE_UNAUTHENTICATED_METRICS_ACCESS")
                && err.contains("true or false"),
            "{err}"
        );
        let cfg = Config {
            signing_alg: "HS256".into(),
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("signing_alg")
        );
    }

    #[test]
    fn delegation_depth_and_approval_limits_come_from_env_and_are_bounded() {
        assert_eq!(Config::default().max_delegation_depth, 3);
        let c = Config::load(None, |k| {
            (k == "MANDATE_APPROVAL_MAX_SECS").then(|| "600".to_owned())
        })
        .unwrap();
        assert_eq!(
            (c.approval_max_secs, c.approval_request_ttl_secs),
            (600, 900)
        );
        for bad in [0, 86_401] {
            let err = Config {
                approval_max_secs: bad,
                ..Config::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("approval_max_secs"), "{bad}: {err}");
        }
        let c = Config::load(None, |k| {
            (k == "MANDATE_MAX_DELEGATION_DEPTH").then(|| "5".into())
        })
        .unwrap();
        assert_eq!(c.max_delegation_depth, 5);
        for bad in [0, 17] {
            let err = Config {
                max_delegation_depth: bad,
                ..Config::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("max_delegation_depth"), "{bad}: {err}");
        }
    }

    #[test]
    fn misuse_suspends_in_production_unless_configured_otherwise() {
        use mandate_core::{Environment as E, OnMisuse as M};
        let c = Config::default();
        assert_eq!(
            [E::Production, E::Staging, E::Sandbox].map(|e| c.on_misuse(e)),
            [M::Suspend, M::Alert, M::Alert]
        );
        let env = |v: &'static str| {
            Config::load(None, move |k| (k == "MANDATE_ON_MISUSE").then(|| v.into()))
        };
        let c = env("staging=suspend, production=alert").unwrap();
        assert_eq!(
            [E::Production, E::Staging, E::Sandbox].map(|e| c.on_misuse(e)),
            [M::Alert, M::Suspend, M::Alert]
        );
        for (bad, names) in [
            ("prod=suspend", "environment"),
            ("production=revoke", "on_misuse"),
            ("production", "environment=action"),
        ] {
            let err = env(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("MANDATE_ON_MISUSE") && err.contains(names),
                "{bad}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "[on_misuse]\nsandbox = \"suspend\"\n").unwrap();
        let c = Config::load(Some(&path), |_| None).unwrap();
        assert_eq!(c.on_misuse(E::Sandbox), M::Suspend);
        assert_eq!(c.on_misuse(E::Production), M::Suspend);
        std::fs::write(&path, "[on_misuse]\nproduction = \"ignore\"\n").unwrap();
        let err = Config::load(Some(&path), |_| None).unwrap_err().to_string();
        assert!(
            err.contains("on_misuse") && err.contains("suspend, alert"),
            "{err}"
        );
    }

    #[test]
    fn client_assertion_lifetime_comes_from_env_and_is_bounded() {
        assert_eq!(Config::default().client_assertion_max_lifetime_secs, 3600);
        let c = Config::load(None, |k| {
            (k == "MANDATE_CLIENT_ASSERTION_MAX_LIFETIME_SECS").then(|| "300".into())
        })
        .unwrap();
        assert_eq!(c.client_assertion_max_lifetime_secs, 300);
        for bad in [59, 3601] {
            let err = Config {
                client_assertion_max_lifetime_secs: bad,
                ..Config::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("client_assertion_max_lifetime_secs"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn issuer_jwks_url_must_be_https_unless_loopback() {
        let with_url = |url: &str| Config {
            issuers: vec![IssuerConfig {
                issuer: "https://issuer.example".into(),
                jwks_file: None,
                jwks_url: Some(url.into()),
                audiences: vec![],
                refresh_secs: 300,
            }],
            ..Config::default()
        };
        for good in [
            "https://issuer.example/keys",
            "http://127.0.0.1:8081/keys",
            "http://[::1]:8081/keys",
            "http://localhost/keys",
        ] {
            assert!(with_url(good).validate().is_ok(), "{good}");
        }
        for bad in ["http://issuer.example/keys", "ftp://x/keys", "not a url"] {
            let err = with_url(bad).validate().unwrap_err().to_string();
            assert!(err.starts_with("issuers[0].jwks_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "listn = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&p), |_| None).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
