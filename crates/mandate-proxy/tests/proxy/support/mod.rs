//! Shared setup for the proxy's integration tests: a real broker
//! (`mandate-testkit`), a real upstream HTTP server that records what it
//! received and echoes the credential back, and a real proxy in between.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use mandate_proxy::{Proxy, ProxyConfig, RunningProxy};
use mandate_testkit::TestServer;
use mandate_testkit::serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "sk_test_51HqLyjWDarjtT1zdp7dc/UPSTREAM+key";

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

pub struct Upstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes the `Authorization` header and the request URI back (after 3 s
/// for a path ending in `/slow`), in a
/// header and in a body sent in 7-byte chunks (so a secret is split), or
/// in one piece with a `Content-Length` when the query has `sized=1`.
async fn echo(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request<Body>) -> Response {
    let uri = req.uri().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: uri.clone(),
        headers: req.headers().clone(),
    });
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if req.uri().path().ends_with("/slow") {
        // Long enough for a test to kill the proxy while it waits.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if req.uri().path() == "/gzip" {
        return Response::builder()
            .header("content-encoding", "gzip")
            .body(Body::from("not really gzip"))
            .unwrap();
    }
    let query = req.uri().query().map(str::to_owned);
    let got = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = json!({"authorization": auth, "uri": uri,
                      "body": String::from_utf8_lossy(&got)})
    .to_string();
    if query.is_some_and(|q| q.contains("sized=1")) {
        return Response::builder()
            .header("content-type", "application/json")
            .header("x-echo-auth", auth)
            .body(Body::from(body))
            .unwrap();
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.as_bytes().chunks(7).map(|c| Ok(c.to_vec())).collect();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-echo-auth", auth)
        .header("x-echo-uri", uri)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap()
}

/// A self-signed certificate for 127.0.0.1, as PEM files in a temp dir.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn new() -> TestCert {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = (c.cert.pem(), c.signing_key.serialize_pem());
        std::fs::write(dir.path().join("ca.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
        TestCert {
            dir,
            cert_pem,
            key_pem,
        }
    }

    pub fn cert_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn key_file(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

impl Upstream {
    /// The echo upstream over plain HTTP, or over HTTPS with `tls`.
    pub async fn start(tls: Option<&TestCert>) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(echo).with_state(seen.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let Some(cert) = tls else {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            return Upstream {
                url: format!("http://{addr}"),
                seen,
                task,
            };
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.cert_pem.clone().into_bytes(),
            cert.key_pem.clone().into_bytes(),
        )
        .await
        .unwrap();
        let server = axum_server::from_tcp_rustls(listener, config);
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Upstream {
            url: format!("https://{addr}"),
            seen,
            task,
        }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub struct World {
    pub s: TestServer,
    pub up: Upstream,
    pub proxy: Option<RunningProxy>,
    pub proxy_addr: String,
    pub proxy_token: String,
    pub session: String,
    pub spool: tempfile::TempDir,
    pub http: reqwest::Client,
    /// What the proxy is told to trust beyond the web roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The tools every test gets: `echo` (bearer), `echo-basic`, `echo-query`,
/// `echo-header`, `echo-down` (upstream closed), `echo-reveal` (not
/// proxied) and `echo-nosecret` (no secret stored).
pub const TOOLS: &[&str] = &[
    "echo",
    "echo-basic",
    "echo-query",
    "echo-header",
    "echo-down",
    "echo-reveal",
    "echo-nosecret",
];

pub fn tool_json(name: &str, upstream: &str) -> Value {
    let delivery = match name {
        "echo-basic" => json!({"mode": "inject", "inject": {"kind": "basic", "username": "ci"}}),
        "echo-query" => json!({"mode": "inject", "inject": {"kind": "query", "param": "api_key"}}),
        "echo-header" => {
            json!({"mode": "inject", "inject": {"kind": "header", "name": "X-Api-Key", "prefix": "Key "}})
        }
        "echo-reveal" => json!({"mode": "reveal"}),
        _ => json!({"mode": "inject", "inject": {"kind": "bearer"}}),
    };
    let upstream = if name == "echo-down" {
        "http://127.0.0.1:1".to_owned()
    } else {
        upstream.to_owned()
    };
    json!({
        "name": name, "audience": format!("https://{name}.test"), "owner": "platform",
        "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
        "actions": ["items:read", "items:write"],
        "upstream": upstream,
        "routes": [
            {"method": "GET", "path": "/items/{id}", "action": "items:read", "resource": "item:{id}"},
            {"method": "HEAD", "path": "/items/{id}", "action": "items:read", "resource": "item:{id}"},
            {"method": "POST", "path": "/items", "action": "items:write", "resource": "item:new"},
            {"method": "GET", "path": "/gzip", "action": "items:read", "resource": "item:gzip"}
        ],
        "delivery": delivery,
    })
}

/// What the test proxies' scraper presents for `/metrics`.
pub const METRICS_TOKEN: &str = "scrape-token-for-tests";

pub fn config(broker: &str, token: &str, spool: &std::path::Path, flush_ms: u64) -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker: broker.to_owned(),
        token: Some(secrecy::SecretString::from(token.to_owned())),
        spool_dir: spool.to_owned(),
        catalog_refresh_secs: 1,
        audit_flush_ms: flush_ms,
        metrics_token: Some(secrecy::SecretString::from(METRICS_TOKEN.to_owned())),
        ..ProxyConfig::default()
    }
}

impl World {
    pub async fn new() -> World {
        Self::with_flush(50).await
    }

    /// A world whose proxy ships audit records every `flush_ms`.
    pub async fn with_flush(flush_ms: u64) -> World {
        Self::build(flush_ms, None, |_| {}).await
    }

    /// A world whose broker runs with `edit`ed settings.
    pub async fn with_config(
        edit: impl Fn(&mut mandate_server::config::Config) + Send + Sync + 'static,
    ) -> World {
        Self::build(50, None, edit).await
    }

    /// Broker and upstream over HTTPS with a private CA the proxy is told
    /// to trust (`ca_file`).
    pub async fn with_tls(cert: &TestCert) -> World {
        Self::build(50, Some(cert), |_| {}).await
    }

    async fn build(
        flush_ms: u64,
        cert: Option<&TestCert>,
        edit: impl Fn(&mut mandate_server::config::Config) + Send + Sync + 'static,
    ) -> World {
        let tls = cert.map(|c| mandate_server::config::TlsConfig {
            cert_file: c.cert_file(),
            key_file: c.key_file(),
        });
        let s = TestServer::start_with(move |cfg| {
            cfg.tls = tls.clone();
            // Deep enough for the delegation trees the tests generate.
            cfg.max_delegation_depth = 5;
            edit(cfg);
        })
        .await;
        s.seed().await;
        let up = Upstream::start(cert).await;
        for name in TOOLS {
            s.admin_post("/v1/tools", tool_json(name, &up.url)).await;
        }
        for name in TOOLS.iter().filter(|n| !matches!(**n, "echo-nosecret")) {
            s.admin_post(
                "/v1/secrets",
                json!({"name": format!("{name}-key"), "tool": name, "class": "tool",
                       "owner": "platform", "value": SECRET}),
            )
            .await;
        }
        let mut allowed: Vec<&str> = TOOLS.to_vec();
        allowed.push("github");
        s.admin_post(
            "/v1/agents",
            json!({"name": "ci", "owner": "platform", "environment": "staging",
                   "allowed_tools": allowed}),
        )
        .await;
        let session = s.session("ci").await;
        let proxy_token = s.admin_token(&["proxy"]).await;
        let mut w = World {
            s,
            up,
            proxy: None,
            proxy_addr: String::new(),
            proxy_token,
            session,
            spool: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
            ca_file: cert.map(TestCert::cert_file),
        };
        w.start_proxy(flush_ms).await;
        w
    }

    pub async fn start_proxy(&mut self, flush_ms: u64) {
        let mut cfg = config(&self.s.base, &self.proxy_token, self.spool.path(), flush_ms);
        cfg.ca_file = self.ca_file.clone();
        let p = Proxy::start(cfg).await.expect("proxy starts");
        self.proxy_addr = format!("http://{}", p.addr());
        self.proxy = Some(p);
        self.wait_ready().await;
    }

    /// Restart the world's proxy with an egress listener; its address.
    pub async fn start_egress(&mut self) -> std::net::SocketAddr {
        let ca_file = self.ca_file.clone();
        let p = self
            .replace_proxy(|c| {
                c.egress_listen = Some("127.0.0.1:0".parse().unwrap());
                c.ca_file = ca_file;
            })
            .await;
        let egress = p.egress_addr().expect("an egress listener");
        self.proxy_addr = format!("http://{}", p.addr());
        self.proxy = Some(p);
        self.wait_ready().await;
        egress
    }

    /// Stop the world's proxy and start one with `edit`ed settings, not
    /// waiting for it to be ready.
    pub async fn replace_proxy(&mut self, edit: impl FnOnce(&mut ProxyConfig)) -> RunningProxy {
        if let Some(p) = self.proxy.take() {
            p.stop().await;
        }
        let mut cfg = config(&self.s.base, &self.proxy_token, self.spool.path(), 50);
        edit(&mut cfg);
        Proxy::start(cfg).await.expect("proxy starts")
    }

    pub async fn wait_ready(&self) {
        self.wait_ready_at(&self.proxy_addr).await
    }

    /// Wait until the proxy at `base` (`http://host:port`) is ready.
    pub async fn wait_ready_at(&self, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self
                .http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                return;
            }
            let why = r.text().await.unwrap_or_default();
            assert!(Instant::now() < deadline, "proxy never became ready: {why}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.proxy_addr, path)
    }

    /// A new task on `tool` with `actions`: its id and the tool's audience.
    async fn task(&self, tool: &str, actions: &[&str]) -> (String, String) {
        let (st, task) = self
            .s
            .create_task(
                &self.session,
                json!([{"tool": tool, "actions": actions}]),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{task}");
        // `github` is the testkit's seeded tool; ours are `https://<name>.test`.
        let audience = match tool {
            "github" => "https://api.github.com".to_owned(),
            t => format!("https://{t}.test"),
        };
        (task["id"].as_str().unwrap().to_owned(), audience)
    }

    /// A task on `tool` with `actions` and a token for it.
    pub async fn grant(&self, tool: &str, actions: &[&str]) -> (String, String) {
        let (id, audience) = self.task(tool, actions).await;
        let (st, v) = self.s.exchange(&self.session, &id, &audience, &[]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        (id, v["access_token"].as_str().unwrap().to_owned())
    }

    /// Like [`World::grant`], but the token is bound to `key` by a DPoP proof.
    pub async fn grant_dpop(
        &self,
        tool: &str,
        actions: &[&str],
        key: &mandate_token::SigningKey,
    ) -> String {
        let (id, audience) = self.task(tool, actions).await;
        let endpoint = format!("{}/oauth/token", self.s.app().issuer);
        let proof =
            mandate_token::dpop::sign_proof(key, "POST", &endpoint, None, mandate_testkit::now())
                .unwrap();
        let (st, v) = self
            .s
            .exchange_dpop(&self.session, &id, &audience, &proof)
            .await;
        assert_eq!(
            (st, v["token_type"].as_str()),
            (StatusCode::OK, Some("DPoP")),
            "{v}"
        );
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Call the proxy; returns status, headers and body text.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut r = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if method == "POST" {
            r = r.body("{}");
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    /// Every `tool.invoked` event at the broker.
    pub async fn invocations(&self) -> Vec<Value> {
        self.events_of("tool.invoked").await
    }

    /// Every event of `kind` at the broker.
    pub async fn events_of(&self, kind: &str) -> Vec<Value> {
        self.s
            .events()
            .await
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Wait until every id in `ids` has its `tool.invoked` event in the
    /// broker's chain; returns those events.
    pub async fn wait_for_records(&self, ids: &[String]) -> Vec<Value> {
        self.wait_for("tool.invoked", ids).await
    }

    /// Wait until every id in `ids` has an event of `kind`; returns them all.
    pub async fn wait_for(&self, kind: &str, ids: &[String]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let evs = self.events_of(kind).await;
            let all = ids
                .iter()
                .all(|id| evs.iter().any(|e| e["request_id"] == id.as_str()));
            if all {
                return evs;
            }
            assert!(Instant::now() < deadline, "{kind} records never arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl World {
    /// The event holding an allowed call's outcome and its `detail`
    /// (`status`, `bytes`, …), asserting the outcome is chained exactly
    /// once: inside the call's one `tool.invoked` event when the proxy
    /// shipped both its records in one batch, else as a single
    /// `tool.completed` event after it.
    pub async fn outcome(&self, id: &str) -> (Value, Value) {
        let ids = [id.to_owned()];
        let invoked: Vec<Value> = self
            .wait_for_records(&ids)
            .await
            .into_iter()
            .filter(|e| e["request_id"] == id)
            .collect();
        assert_eq!(invoked.len(), 1, "{id} invoked {} times", invoked.len());
        let detail = |e: &Value| -> Value {
            mandate_testkit::serde_json::from_str(e["detail"].as_str().unwrap()).unwrap()
        };
        let opened = detail(&invoked[0]);
        let completed: Vec<Value> = if opened["status"].is_null() {
            self.wait_for("tool.completed", &ids).await
        } else {
            self.events_of("tool.completed").await
        }
        .into_iter()
        .filter(|e| e["request_id"] == id)
        .collect();
        match (opened["status"].is_null(), completed.as_slice()) {
            (false, []) => (invoked[0].clone(), opened),
            (true, [done]) => {
                assert!(done["seq"].as_u64() > invoked[0]["seq"].as_u64());
                (done.clone(), detail(done))
            }
            _ => panic!("{id}: outcome chained twice or never: {invoked:?} {completed:?}"),
        }
    }
}

/// The request id the proxy answered with.
pub fn request_id(h: &HeaderMap) -> String {
    h.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every answer carries x-request-id")
        .to_owned()
}

/// `{"error":{"code"}}` of a refusal.
pub fn code(body: &str) -> String {
    let v: Value = mandate_testkit::serde_json::from_str(body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// An event's `detail`, which the log keeps as JSON text.
pub fn detail(e: &Value) -> Value {
    mandate_testkit::serde_json::from_str(e["detail"].as_str().unwrap()).unwrap()
}

impl World {
    /// A task's state as the broker reports it.
    pub async fn task_state(&self, id: &str) -> String {
        let (_, t) = self
            .s
            .get(&format!("/v1/tasks/{id}"), Some(&self.s.root))
            .await;
        t["state"].as_str().unwrap_or("?").to_owned()
    }

    /// Poll the proxy until every token is refused at `tool`; how long
    /// that took.
    pub async fn until_refused(&self, tool: &str, tokens: &[&str]) -> Duration {
        let start = Instant::now();
        loop {
            let mut all = true;
            for t in tokens {
                let (st, _, _) = self.call("GET", &format!("/{tool}/items/7"), Some(t)).await;
                all &= st == StatusCode::UNAUTHORIZED;
            }
            if all {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the subtree was never refused at the proxy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Hand part of the task of `parent_token` to the agent of
    /// `actor_session` (RFC 8693 at the token endpoint): the child's
    /// first token for `resource`.
    pub async fn delegate(
        &self,
        parent_token: &str,
        actor_session: &str,
        resource: &str,
    ) -> String {
        let (st, v) = self
            .s
            .form(
                "/oauth/token",
                None,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", parent_token),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("actor_token", actor_session),
                    ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                    ("resource", resource),
                ],
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }
}

impl World {
    /// A production tool `ledger` behind the proxy, and production agents
    /// `lead` and `helper` allowed it; their sessions.
    pub async fn production(&self) -> (String, String) {
        let mut tool = tool_json("ledger", &self.up.url);
        tool["environment"] = json!("production");
        self.s.admin_post("/v1/tools", tool).await;
        self.s
            .admin_post(
                "/v1/secrets",
                json!({"name": "ledger-key", "tool": "ledger", "class": "tool",
                   "owner": "platform", "value": SECRET}),
            )
            .await;
        for name in ["lead", "helper"] {
            self.s
                .admin_post(
                    "/v1/agents",
                    json!({"name": name, "owner": "platform", "environment": "production",
                       "allowed_tools": ["ledger"]}),
                )
                .await;
        }
        (self.s.session("lead").await, self.s.session("helper").await)
    }
}
