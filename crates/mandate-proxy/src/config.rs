//! Proxy configuration: one TOML file (`deny_unknown_fields`), every key
//! overridable by a `MANDATE_PROXY_*` variable, validated at load with
//! errors that name the key.

use crate::error::ProxyError;
use mandate_core::Environment;
use mandate_wire::MAX_BATCH;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// A second listener, for `HTTPS_PROXY`: HTTP `CONNECT host:port`
    /// tunnels, each admitted only with a live task token (as
    /// `Proxy-Authorization`) and only to a host declared by a `reveal`
    /// tool in the task's scope. Off when unset.
    pub egress_listen: Option<SocketAddr>,
    /// The broker's base URL (`https://mandate.example`).
    pub broker: String,
    /// File holding the proxy's admin token (right `proxy`).
    pub token_file: Option<PathBuf>,
    /// The token itself: read from `token_file` or `MANDATE_PROXY_TOKEN`,
    /// never from the TOML file.
    #[serde(skip)]
    pub token: Option<SecretString>,
    /// The URL agents use to reach this proxy (`https://proxy.example`),
    /// checked against DPoP proofs' `htu`; by default `http://<Host>`.
    pub public_url: Option<String>,
    /// Host-based routes beside `/{tool}/…`: a request whose Host is
    /// `{tool}{suffix}` (`github.tools.internal` with `.tools.internal`)
    /// goes to that tool with its whole path, for agents whose SDK takes a
    /// host but no base path. Such a request never reaches the proxy's
    /// own `/healthz`, `/readyz` or `/metrics`.
    pub tool_host_suffix: Option<String>,
    /// PEM file of extra CA certificates trusted for the broker and the
    /// upstreams (a private PKI), on top of the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Serve only tools of this environment (and tokens minted for it).
    pub environment: Option<Environment>,
    /// Where audit records wait until the broker has them.
    pub spool_dir: PathBuf,
    /// Refuse requests when the revocation feed has been silent this long.
    pub staleness_secs: u64,
    pub catalog_refresh_secs: u64,
    /// Most records per audit batch.
    pub audit_batch_max: usize,
    /// How often queued audit records are shipped, milliseconds.
    pub audit_flush_ms: u64,
    /// Longest wait for an upstream's response headers, and between body chunks.
    pub upstream_timeout_secs: u64,
    /// Largest request body forwarded, bytes.
    pub max_body_bytes: usize,
    /// Request bodies held at once, over all requests, while they are read
    /// whole to be screened (POST forms and JSON); past it, 503
    /// `proxy_busy`. At least `max_body_bytes`.
    pub max_buffered_body_bytes: usize,
    /// Seconds an agent has to send a request's headers; a connection idle
    /// that long is closed (slowloris): HTTP/1 between requests, HTTP/2
    /// after its last answer, and one that has sent nothing at all.
    pub header_read_timeout_secs: u64,
    /// File holding the bearer token a Prometheus scraper presents for
    /// `/metrics` (or `MANDATE_PROXY_METRICS_TOKEN`).
    pub metrics_token_file: Option<PathBuf>,
    /// The scraper's token, read from `metrics_token_file` or the env.
    #[serde(skip)]
    pub metrics_token: Option<SecretString>,
    /// Serve `/metrics` without a token (as Vault's
    /// `unauthenticated_metrics_access`). With neither this nor a metrics
    /// token, `/metrics` answers 401.
    pub unauthenticated_metrics_access: bool,
    /// Threads serving requests, each a single-threaded runtime with its
    /// own upstream connection pool; by default one per core. Fewer than
    /// the cores when the proxy shares its host.
    pub worker_threads: Option<usize>,
    /// Agent connections served at once, over all threads; past it the
    /// proxy stops accepting and new connections wait in the listen queue
    /// (as HAProxy's `maxconn`), so a flood cannot exhaust descriptors or
    /// memory. Keep it under the process's open-file limit.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8400)),
            egress_listen: None,
            broker: "http://127.0.0.1:8200".into(),
            token_file: None,
            token: None,
            public_url: None,
            tool_host_suffix: None,
            ca_file: None,
            environment: None,
            spool_dir: PathBuf::from("mandate-proxy-spool"),
            staleness_secs: 30,
            catalog_refresh_secs: 5,
            audit_batch_max: 500,
            audit_flush_ms: 200,
            upstream_timeout_secs: 30,
            max_body_bytes: 10 * 1024 * 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            header_read_timeout_secs: 30,
            worker_threads: None,
            max_connections: 10_000,
            metrics_token_file: None,
            metrics_token: None,
            unauthenticated_metrics_access: false,
        }
    }
}

impl ProxyConfig {
    /// Read `path` (if any), apply `MANDATE_PROXY_*` overrides, read the
    /// token, validate.
    pub fn load(path: Option<&Path>) -> Result<ProxyConfig, ProxyError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// [`ProxyConfig::load`] with the environment passed in (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ProxyConfig, ProxyError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ProxyError::ReadConfig {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ProxyError::ParseConfig {
                    path: p.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => ProxyConfig::default(),
        };
        cfg.apply_env(&env)?;
        if cfg.token.is_none() {
            cfg.token = match (&cfg.token_file, env("MANDATE_PROXY_TOKEN")) {
                (_, Some(t)) => Some(SecretString::from(t.trim().to_owned())),
                (Some(f), None) => Some(read_token("token_file", f)?),
                (None, None) => None,
            };
        }
        if cfg.metrics_token.is_none() {
            cfg.metrics_token = match (&cfg.metrics_token_file, env("MANDATE_PROXY_METRICS_TOKEN"))
            {
                (_, Some(t)) => Some(SecretString::from(t.trim().to_owned())),
                (Some(f), None) => Some(read_token("metrics_token_file", f)?),
                (None, None) => None,
            };
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ProxyError> {
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ProxyError> {
            v.trim()
                .parse()
                .map_err(|_| ProxyError::config(key, format!("`{v}` is not a valid number")))
        }
        if let Some(v) = env("MANDATE_PROXY_LISTEN") {
            self.listen = v.parse().map_err(|_| {
                ProxyError::config("MANDATE_PROXY_LISTEN", format!("`{v}` is not host:port"))
            })?;
        }
        if let Some(v) = env("MANDATE_PROXY_EGRESS_LISTEN") {
            self.egress_listen = Some(v.parse().map_err(|_| {
                ProxyError::config(
                    "MANDATE_PROXY_EGRESS_LISTEN",
                    format!("`{v}` is not host:port"),
                )
            })?);
        }
        if let Some(v) = env("MANDATE_PROXY_BROKER") {
            self.broker = v;
        }
        if let Some(v) = env("MANDATE_PROXY_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = env("MANDATE_PROXY_TOOL_HOST_SUFFIX") {
            self.tool_host_suffix = Some(v);
        }
        if let Some(v) = env("MANDATE_PROXY_CA_FILE") {
            self.ca_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_PROXY_TOKEN_FILE") {
            self.token_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_PROXY_ENVIRONMENT") {
            self.environment = Some(v.parse().map_err(|e: mandate_core::Invalid| {
                ProxyError::config("MANDATE_PROXY_ENVIRONMENT", e.message)
            })?);
        }
        if let Some(v) = env("MANDATE_PROXY_SPOOL_DIR") {
            self.spool_dir = v.into();
        }
        let nums: [(&str, &mut u64); 5] = [
            ("MANDATE_PROXY_STALENESS_SECS", &mut self.staleness_secs),
            (
                "MANDATE_PROXY_HEADER_READ_TIMEOUT_SECS",
                &mut self.header_read_timeout_secs,
            ),
            (
                "MANDATE_PROXY_CATALOG_REFRESH_SECS",
                &mut self.catalog_refresh_secs,
            ),
            ("MANDATE_PROXY_AUDIT_FLUSH_MS", &mut self.audit_flush_ms),
            (
                "MANDATE_PROXY_UPSTREAM_TIMEOUT_SECS",
                &mut self.upstream_timeout_secs,
            ),
        ];
        for (key, slot) in nums {
            if let Some(v) = env(key) {
                *slot = num(key, &v)?;
            }
        }
        if let Some(v) = env("MANDATE_PROXY_AUDIT_BATCH_MAX") {
            self.audit_batch_max = num("MANDATE_PROXY_AUDIT_BATCH_MAX", &v)?;
        }
        if let Some(v) = env("MANDATE_PROXY_METRICS_TOKEN_FILE") {
            self.metrics_token_file = Some(v.into());
        }
        if let Some(v) = env("MANDATE_PROXY_UNAUTHENTICATED_METRICS_ACCESS") {
            self.unauthenticated_metrics_access = v.trim().parse().map_err(|_| {
                ProxyError::config(
                    "MANDATE_PROXY_UNAUTHENTICATED_METRICS_ACCESS",
                    format!("`{v}` is not true or false"),
                )
            })?;
        }
        if let Some(v) = env("MANDATE_PROXY_WORKER_THREADS") {
            self.worker_threads = Some(num("MANDATE_PROXY_WORKER_THREADS", &v)?);
        }
        if let Some(v) = env("MANDATE_PROXY_MAX_CONNECTIONS") {
            self.max_connections = num("MANDATE_PROXY_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = env("MANDATE_PROXY_MAX_BUFFERED_BODY_BYTES") {
            self.max_buffered_body_bytes = num("MANDATE_PROXY_MAX_BUFFERED_BODY_BYTES", &v)?;
        }
        if let Some(v) = env("MANDATE_PROXY_MAX_BODY_BYTES") {
            self.max_body_bytes = num("MANDATE_PROXY_MAX_BODY_BYTES", &v)?;
        }
        Ok(())
    }

    /// Check every key; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if let Some(u) = &self.public_url {
            let ok = ["https://", "http://"].iter().any(|p| {
                u.strip_prefix(p)
                    .is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
            });
            if !ok || u.contains(['?', '#']) || u.chars().any(|c| c.is_whitespace()) {
                return Err(ProxyError::config(
                    "public_url",
                    "must be an http:// or https:// URL with a host and no query",
                ));
            }
        }
        if self
            .egress_listen
            .is_some_and(|e| e == self.listen && e.port() != 0)
        {
            return Err(ProxyError::config(
                "egress_listen",
                "must be another address than `listen`: the egress listener takes only CONNECT",
            ));
        }
        if let Some(suffix) = &self.tool_host_suffix {
            let name = suffix.strip_prefix('.').unwrap_or_default();
            let labels_ok = mandate_core::host_name_problem(name).is_none();
            if name.is_empty() || name.len() > 200 || !labels_ok {
                return Err(ProxyError::config(
                    "tool_host_suffix",
                    "must be a dot and a lowercase host name, like `.tools.internal`",
                ));
            }
        }
        let b = self.broker.trim_end_matches('/');
        let host = b
            .strip_prefix("https://")
            .or_else(|| b.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
            || b.contains(['?', '#'])
            || b.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ProxyError::config(
                "broker",
                "must be an http:// or https:// base URL with a host and no query",
            ));
        }
        let ranges: [(&str, u64, u64, u64); 5] = [
            ("staleness_secs", self.staleness_secs, 1, 3600),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                1,
                3600,
            ),
            ("catalog_refresh_secs", self.catalog_refresh_secs, 1, 3600),
            ("audit_flush_ms", self.audit_flush_ms, 10, 3_600_000),
            ("upstream_timeout_secs", self.upstream_timeout_secs, 1, 3600),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(ProxyError::config(
                    key,
                    format!("must be between {lo} and {hi}"),
                ));
            }
        }
        if !(1..=MAX_BATCH).contains(&self.audit_batch_max) {
            return Err(ProxyError::config(
                "audit_batch_max",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        if !(1..=1 << 30).contains(&self.max_body_bytes) {
            return Err(ProxyError::config(
                "max_body_bytes",
                "must be between 1 and 1073741824",
            ));
        }
        if !(self.max_body_bytes..=1 << 40).contains(&self.max_buffered_body_bytes) {
            return Err(ProxyError::config(
                "max_buffered_body_bytes",
                "must be at least max_body_bytes (or no body that size could be screened) and at most 1099511627776",
            ));
        }
        if self.unauthenticated_metrics_access && self.metrics_token.is_some() {
            return Err(ProxyError::config(
                "unauthenticated_metrics_access",
                "set it or a metrics token (metrics_token_file), not both",
            ));
        }
        if self
            .worker_threads
            .is_some_and(|n| !(1..=1024).contains(&n))
        {
            return Err(ProxyError::config(
                "worker_threads",
                "must be between 1 and 1024",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ProxyError::config(
                "max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.spool_dir.as_os_str().is_empty() {
            return Err(ProxyError::config("spool_dir", "must not be empty"));
        }
        if self.token.is_none() {
            return Err(ProxyError::config(
                "token_file",
                "no proxy token: set token_file or MANDATE_PROXY_TOKEN (an admin token with the `proxy` right)",
            ));
        }
        Ok(())
    }

    /// The broker base URL without a trailing slash.
    pub(crate) fn broker_base(&self) -> &str {
        self.broker.trim_end_matches('/')
    }
}

impl ProxyConfig {
    /// The certificates of `ca_file` (none when unset); an unreadable file
    /// or one without a certificate is a config error naming `ca_file`.
    pub fn extra_roots(&self) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                ProxyError::config("ca_file", format!("cannot read {}: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(ProxyError::config(
                "ca_file",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(certs)
    }
}

fn read_token(key: &str, path: &Path) -> Result<SecretString, ProxyError> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            ProxyError::config(key, format!("cannot read {}: {e}", path.display()))
        })?);
    let t = text.trim();
    if t.is_empty() {
        return Err(ProxyError::config(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(t.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<ProxyConfig, ProxyError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proxy.toml");
        std::fs::write(&p, toml).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::load_with_env(Some(&p), |k| env.get(k).cloned())
    }

    fn key_of(e: ProxyError) -> String {
        match e {
            ProxyError::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn defaults_with_a_token_from_the_environment() {
        let c = load("", &[("MANDATE_PROXY_TOKEN", "mdt_x\n")]).unwrap();
        assert_eq!(c.listen.port(), 8400);
        assert_eq!(c.staleness_secs, 30);
        assert_eq!(c.audit_batch_max, 500);
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.token.unwrap().expose_secret(), "mdt_x");
    }

    #[test]
    fn token_comes_from_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "mdt_file\n").unwrap();
        let c = load(&format!("token_file = {:?}", f.display().to_string()), &[]).unwrap();
        assert_eq!(c.token.unwrap().expose_secret(), "mdt_file");
        let e = load(r#"token_file = "/nonexistent/tok""#, &[]).unwrap_err();
        assert_eq!(key_of(e), "token_file");
    }

    #[test]
    fn the_metrics_token_comes_from_its_file_or_the_env_and_excludes_open_access() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("scrape");
        std::fs::write(&f, "scrape-me\n").unwrap();
        let file_key = format!("metrics_token_file = {:?}", f.display().to_string());
        let tok = ("MANDATE_PROXY_TOKEN", "t");
        let c = load(&file_key, &[tok]).unwrap();
        assert_eq!(c.metrics_token.unwrap().expose_secret(), "scrape-me");
        assert!(!c.unauthenticated_metrics_access);
        let c = load("", &[tok, ("MANDATE_PROXY_METRICS_TOKEN", "from-env")]).unwrap();
        assert_eq!(c.metrics_token.unwrap().expose_secret(), "from-env");
        let e = load(r#"metrics_token_file = "/nonexistent/scrape""#, &[tok]).unwrap_err();
        assert_eq!(key_of(e), "metrics_token_file");
        let both = format!("{file_key}\nunauthenticated_metrics_access = true");
        assert_eq!(
            key_of(load(&both, &[tok]).unwrap_err()),
            "unauthenticated_metrics_access"
        );
        let open = load(
            "",
            &[
                tok,
                ("MANDATE_PROXY_UNAUTHENTICATED_METRICS_ACCESS", "true"),
            ],
        );
        assert!(open.unwrap().unauthenticated_metrics_access);
        let bad = load(
            "",
            &[tok, ("MANDATE_PROXY_UNAUTHENTICATED_METRICS_ACCESS", "1")],
        );
        assert_eq!(
            key_of(bad.unwrap_err()),
            "MANDATE_PROXY_UNAUTHENTICATED_METRICS_ACCESS"
        );
    }

    #[test]
    fn missing_token_names_token_file() {
        assert_eq!(key_of(load("", &[]).unwrap_err()), "token_file");
    }

    #[test]
    fn unknown_key_and_bad_type_are_named() {
        let tok = [("MANDATE_PROXY_TOKEN", "t")];
        let e = load("colour = \"red\"", &tok).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = load("staleness_secs = \"soon\"", &tok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("staleness_secs"), "{e}");
        let e = load("environment = \"prod\"", &tok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sandbox, staging, production"), "{e}");
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let tok = [("MANDATE_PROXY_TOKEN", "t")];
        let mut c = load("", &tok).unwrap();
        assert!(c.extra_roots().unwrap().is_empty());
        c.ca_file = Some(dir.path().join("missing.pem"));
        let e = c.extra_roots().unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("cannot read"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        c.ca_file = Some(empty);
        let e = c.extra_roots().unwrap_err().to_string();
        assert!(
            e.contains("ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let tok = ("MANDATE_PROXY_TOKEN", "t");
        for (toml, key) in [
            ("staleness_secs = 0", "staleness_secs"),
            ("catalog_refresh_secs = 0", "catalog_refresh_secs"),
            ("audit_batch_max = 5000", "audit_batch_max"),
            ("audit_flush_ms = 1", "audit_flush_ms"),
            ("upstream_timeout_secs = 0", "upstream_timeout_secs"),
            ("max_body_bytes = 0", "max_body_bytes"),
            (
                "max_body_bytes = 2048\nmax_buffered_body_bytes = 1024",
                "max_buffered_body_bytes",
            ),
            ("worker_threads = 0", "worker_threads"),
            ("max_connections = 0", "max_connections"),
            ("public_url = \"ftp://proxy\"", "public_url"),
            ("tool_host_suffix = \"tools.internal\"", "tool_host_suffix"),
            ("tool_host_suffix = \".Tools.internal\"", "tool_host_suffix"),
            (
                "tool_host_suffix = \".tools..internal\"",
                "tool_host_suffix",
            ),
            ("tool_host_suffix = \".\"", "tool_host_suffix"),
            ("broker = \"ftp://x\"", "broker"),
            (
                "listen = \"127.0.0.1:8400\"\negress_listen = \"127.0.0.1:8400\"",
                "egress_listen",
            ),
            ("broker = \"https://\"", "broker"),
        ] {
            assert_eq!(key_of(load(toml, &[tok]).unwrap_err()), key, "{toml}");
        }
    }

    #[test]
    fn environment_overrides_the_file_and_names_the_variable() {
        let c = load(
            "staleness_secs = 10\nenvironment = \"staging\"",
            &[
                ("MANDATE_PROXY_TOKEN", "t"),
                ("MANDATE_PROXY_STALENESS_SECS", "20"),
                ("MANDATE_PROXY_LISTEN", "127.0.0.1:0"),
                ("MANDATE_PROXY_BROKER", "https://broker.example/"),
                ("MANDATE_PROXY_WORKER_THREADS", "1"),
                ("MANDATE_PROXY_MAX_CONNECTIONS", "64"),
                ("MANDATE_PROXY_MAX_BUFFERED_BODY_BYTES", "20971520"),
                ("MANDATE_PROXY_TOOL_HOST_SUFFIX", ".tools.internal"),
                ("MANDATE_PROXY_EGRESS_LISTEN", "127.0.0.1:8401"),
            ],
        )
        .unwrap();
        assert_eq!(c.egress_listen, Some("127.0.0.1:8401".parse().unwrap()));
        assert_eq!(c.tool_host_suffix.as_deref(), Some(".tools.internal"));
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.max_buffered_body_bytes, 20 * 1024 * 1024);
        assert_eq!(c.staleness_secs, 20);
        assert_eq!(c.environment, Some(Environment::Staging));
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.broker_base(), "https://broker.example");
        assert_eq!(c.worker_threads, Some(1));
        for (var, val) in [
            ("MANDATE_PROXY_STALENESS_SECS", "soon"),
            ("MANDATE_PROXY_LISTEN", "nowhere"),
            ("MANDATE_PROXY_ENVIRONMENT", "prod"),
            ("MANDATE_PROXY_AUDIT_BATCH_MAX", "-1"),
            ("MANDATE_PROXY_WORKER_THREADS", "many"),
            ("MANDATE_PROXY_MAX_CONNECTIONS", "lots"),
            ("MANDATE_PROXY_MAX_BUFFERED_BODY_BYTES", "1GB"),
            ("MANDATE_PROXY_EGRESS_LISTEN", "8401"),
        ] {
            let e = load("", &[("MANDATE_PROXY_TOKEN", "t"), (var, val)]).unwrap_err();
            assert_eq!(key_of(e), var);
        }
    }
}
