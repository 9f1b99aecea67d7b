//! Shared test helpers: a real Mandate server on a random loopback port with
//! a temporary data dir, spoken to over HTTP exactly like a client would;
//! a test workload-identity issuer with a JWKS file; agent key helpers.

#![forbid(unsafe_code)]

pub mod http2;
pub mod interop;
pub mod postgres;
pub mod postgres_tls;
pub mod raw;

use mandate_server::{Config, Started};
use mandate_token::{SigningAlg, SigningKey, jwt};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub use reqwest;
pub use serde_json;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Every file below `dir` (to search a data dir for what must not be there).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `hay` holds the bytes of `needle` anywhere.
pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The claims of a compact JWS, unverified (tests look inside their own tokens).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&mandate_token::b64_decode(payload).expect("base64url")).expect("JSON")
}

/// A token's `aud`, or the seeded github tool's when it has none to read.
pub fn audience_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(mandate_token::b64_decode)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["aud"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "https://api.github.com".into())
}

pub fn now() -> i64 {
    mandate_server::now()
}

pub struct TestServer {
    pub base: String,
    pub root: String,
    pub data_dir: PathBuf,
    started: Option<Started>,
    http: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
    configure: Configure,
}

type Configure = std::sync::Arc<dyn Fn(&mut Config) + Send + Sync>;

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start with a config tweak (e.g. trusted issuers, shorter TTLs).
    /// Every test server has its own master key (kept across restarts),
    /// held in memory as `MANDATE_MASTER_KEY` would be, not in the data dir.
    pub async fn start_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        let master = mandate_token::seal::SealKey::generate()
            .to_base64()
            .to_string();
        let configure: Configure = std::sync::Arc::new(move |cfg: &mut Config| {
            cfg.master_key = Some(secrecy::SecretString::from(master.clone()));
            configure(cfg)
        });
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let mut s = Self::boot(&dir, configure, None, "127.0.0.1:0").await;
        s._tmp = Some(tmp);
        s
    }

    async fn boot(dir: &Path, configure: Configure, root: Option<String>, listen: &str) -> Self {
        let mut cfg = Config {
            listen: listen.parse().unwrap(),
            data_dir: dir.to_owned(),
            trust_domain: "test.local".into(),
            ..Config::default()
        };
        configure(&mut cfg);
        let tls_cert = cfg.tls.as_ref().map(|t| t.cert_file.clone());
        let started = mandate_server::start(cfg.validate().expect("valid test config"))
            .await
            .expect("server starts");
        let root = match (&started.root_token, root) {
            (Some(t), _) => t.expose_secret().to_owned(),
            (None, Some(r)) => r,
            (None, None) => panic!("no root token on a reopened data dir"),
        };
        // A TLS server's own (self-signed) certificate is what the client trusts.
        let http = match tls_cert {
            None => reqwest::Client::new(),
            Some(cert_file) => {
                let pem = std::fs::read(cert_file).expect("test certificate");
                reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .build()
                    .unwrap()
            }
        };
        TestServer {
            base: started.app.issuer.clone(),
            root,
            data_dir: dir.to_owned(),
            started: Some(started),
            http,
            _tmp: None,
            configure,
        }
    }

    /// Stop the server (if running) and start a new one on the same data
    /// dir and address (a restart: the issuer URL, and so existing tokens,
    /// stay valid).
    pub async fn restart(mut self) -> Self {
        let addr = match self.started.take() {
            Some(started) => {
                let addr = started.addr.to_string();
                started.stop().await;
                addr
            }
            None => self
                .base
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned(),
        };
        let mut next = Self::boot(
            &self.data_dir.clone(),
            self.configure.clone(),
            Some(self.root.clone()),
            &addr,
        )
        .await;
        next._tmp = self._tmp.take();
        next
    }

    /// Stop without restarting (e.g. before inspecting the file offline).
    pub async fn stop(&mut self) {
        if let Some(s) = self.started.take() {
            s.stop().await;
        }
    }

    pub fn app(&self) -> &mandate_server::App {
        &self.started.as_ref().expect("running").app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn finish(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.http.get(self.url(path));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    pub async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.send_json(reqwest::Method::POST, path, bearer, body)
            .await
    }

    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.http.delete(self.url(path));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    pub async fn put(&self, path: &str, bearer: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send_json(reqwest::Method::PUT, path, bearer, body)
            .await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.url(path)).json(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    /// POST raw bytes as JSON (for malformed-body tests).
    pub async fn post_raw(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    pub async fn form(
        &self,
        path: &str,
        bearer: Option<&str>,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut r = self.http.post(self.url(path)).form(form);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.post(path, Some(&self.root), &body).await;
        assert!(s.is_success(), "POST {path} -> {s}: {v}");
        v
    }

    /// Owner `platform`; tools `github` (staging, internal), `vault-prod`
    /// (production), `payroll` (staging, restricted); agent `bot` (staging).
    pub async fn seed(&self) {
        self.admin_post("/v1/owners", json!({"name": "platform"}))
            .await;
        self.admin_post(
            "/v1/tools",
            json!({"name": "github", "audience": "https://api.github.com", "owner": "platform",
                   "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
                   "actions": ["issues:read", "issues:write"]}),
        )
        .await;
        self.admin_post(
            "/v1/tools",
            json!({"name": "vault-prod", "audience": "https://vault.prod.example", "owner": "platform",
                   "environment": "production", "sensitivity": "confidential", "max_ttl_secs": 300,
                   "actions": ["secrets:read"]}),
        )
        .await;
        self.admin_post(
            "/v1/tools",
            json!({"name": "payroll", "audience": "https://payroll.example", "owner": "platform",
                   "environment": "staging", "sensitivity": "restricted", "max_ttl_secs": 300,
                   "actions": ["salaries:read"]}),
        )
        .await;
        self.admin_post(
            "/v1/agents",
            json!({"name": "bot", "owner": "platform", "environment": "staging",
                   "allowed_tools": ["github", "vault-prod", "payroll"]}),
        )
        .await;
    }

    /// Enrol a fresh Ed25519 key for `agent` through a join token.
    pub async fn enroll(&self, agent: &str) -> AgentKey {
        let jt = self
            .admin_post(&format!("/v1/agents/{agent}/join-tokens"), json!({}))
            .await;
        let (key, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let (s, v) = self
            .post(
                "/v1/enroll",
                None,
                &json!({"join_token": jt["join_token"], "jwk": key.public_jwk()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        AgentKey {
            client_id: v["client_id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// A client assertion for `key` with claims merged over sane defaults.
    pub fn assertion(&self, key: &AgentKey, overrides: Value) -> String {
        let t = now();
        let mut claims = json!({
            "iss": key.client_id, "sub": key.client_id, "aud": self.url("/oauth/token"),
            "iat": t, "exp": t + 60, "jti": hex::encode(mandate_token::random_bytes::<16>()),
        });
        for (k, v) in overrides.as_object().into_iter().flatten() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        jwt::encode(&key.key, "client-authentication+jwt", &claims).unwrap()
    }

    pub async fn login_with_assertion(&self, assertion: &str) -> (StatusCode, Value) {
        self.form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", CLIENT_ASSERTION),
                ("client_assertion", assertion),
            ],
        )
        .await
    }

    /// Enrol `agent` and log it in; returns its session token.
    pub async fn session(&self, agent: &str) -> String {
        let key = self.enroll(agent).await;
        let (s, v) = self
            .login_with_assertion(&self.assertion(&key, json!({})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn create_task(
        &self,
        session: &str,
        scope: Value,
        ttl: Option<u32>,
    ) -> (StatusCode, Value) {
        let mut body = json!({"intent": "test work", "scope": scope});
        if let Some(t) = ttl {
            body["ttl_secs"] = json!(t);
        }
        self.post("/v1/tasks", Some(session), &body).await
    }

    pub async fn exchange(
        &self,
        session: &str,
        task: &str,
        resource: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        self.exchange_with(session, task, resource, extra, None)
            .await
    }

    /// A token exchange carrying a `DPoP` proof header (RFC 9449).
    pub async fn exchange_dpop(
        &self,
        session: &str,
        task: &str,
        resource: &str,
        proof: &str,
    ) -> (StatusCode, Value) {
        self.exchange_with(session, task, resource, &[], Some(proof))
            .await
    }

    async fn exchange_with(
        &self,
        session: &str,
        task: &str,
        resource: &str,
        extra: &[(&str, &str)],
        dpop: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", session),
            ("subject_token_type", TT_JWT),
            ("task_id", task),
            ("resource", resource),
        ];
        form.extend_from_slice(extra);
        let mut r = self.http.post(self.url("/oauth/token")).form(&form);
        if let Some(p) = dpop {
            r = r.header("DPoP", p);
        }
        Self::finish(r.send().await.unwrap()).await
    }

    /// A new admin token holding only `rights`.
    pub async fn admin_token(&self, rights: &[&str]) -> String {
        self.admin_post("/v1/admin/tokens", json!({ "rights": rights }))
            .await["token"]
            .as_str()
            .expect("admin token in response")
            .to_owned()
    }

    /// A task reading GitHub issues (the seeded `github` tool); its id.
    pub async fn read_task(&self, session: &str) -> String {
        let (s, task) = self
            .create_task(
                session,
                json!([{"tool": "github", "actions": ["issues:read"]}]),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{task}");
        task["id"].as_str().unwrap().to_owned()
    }

    /// The common case: a task reading GitHub issues and one grant for it.
    /// Returns the task id and the access token.
    pub async fn read_grant(&self, session: &str) -> (String, String) {
        let id = self.read_task(session).await;
        let (s, v) = self
            .exchange(session, &id, "https://api.github.com", &[])
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (id, v["access_token"].as_str().unwrap().to_owned())
    }

    /// Ask `/v1/authorize` as the resource server the token was minted for
    /// (its own `aud`; the seeded github tool for a token that is no JWT).
    pub async fn authorize(&self, token: &str, action: &str, resource: &str) -> Value {
        let (s, v) = self
            .post(
                "/v1/authorize",
                Some(&self.root),
                &json!({"token": token, "audience": audience_of(token), "action": action,
                        "resource": resource}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Every audit event, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let (s, v) = self
            .get("/v1/audit/events?limit=10000", Some(&self.root))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["events"].as_array().unwrap().clone()
    }
}

pub struct AgentKey {
    pub client_id: String,
    pub key: SigningKey,
}

/// A workload-identity issuer for federation tests: signs JWTs and publishes
/// its keys in a JWKS file the broker is configured to read.
pub struct TestIssuer {
    pub issuer: String,
    pub key: SigningKey,
    pub jwks_file: PathBuf,
}

impl TestIssuer {
    pub fn new(dir: &Path, issuer: &str, alg: SigningAlg) -> Self {
        let (key, _) = SigningKey::generate(alg).unwrap();
        let jwks_file = dir.join(format!(
            "jwks-{}.json",
            hex::encode(mandate_token::random_bytes::<4>())
        ));
        std::fs::write(
            &jwks_file,
            serde_json::to_vec(&json!({"keys": [key.public_jwk()]})).unwrap(),
        )
        .unwrap();
        TestIssuer {
            issuer: issuer.to_owned(),
            key,
            jwks_file,
        }
    }

    pub fn token(&self, claims: Value) -> String {
        jwt::encode(&self.key, "JWT", &claims).unwrap()
    }
}
