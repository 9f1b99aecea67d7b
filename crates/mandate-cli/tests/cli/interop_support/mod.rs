//! The world the interop clients meet: a broker over HTTPS with a private
//! CA, agents enrolled by the `mandate` CLI (key files on disk), one task
//! each, a real upstream behind the proxy, and a config file naming all of
//! it.

mod clients;

pub use clients::Clients;
use mandate_testkit::TestServer;
use mandate_testkit::serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the proxy injects upstream; the upstream echoes it back.
const INJECTED: &str = "upstream-key-for-interop";
/// The CLI's `--alg` for each enrolled agent (and the key file's `alg`).
const AGENTS: [(&str, &str); 2] = [("interop-ed", "EdDSA"), ("interop-es", "ES256")];

pub struct World {
    s: TestServer,
    dir: tempfile::TempDir,
    ca: PathBuf,
    _upstream: tokio::task::JoinHandle<()>,
    proxy: mandate_proxy::RunningProxy,
}

/// Say whether the proxy injected the credential (the value itself would
/// be redacted on the way back) and what `Authorization` reached it.
async fn echo(headers: axum::http::HeaderMap) -> axum::Json<Value> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    axum::Json(json!({"injected": h("x-api-key") == Some(INJECTED),
                      "authorization": h("authorization")}))
}

async fn upstream() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().fallback(echo);
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, task)
}

impl World {
    /// A world whose broker signs its tokens with `signing_alg`.
    pub async fn new(signing_alg: &'static str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("tls.key"));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let tls = mandate_server::config::TlsConfig {
            cert_file: ca.clone(),
            key_file: key,
        };
        let s = TestServer::start_with(move |c| {
            c.tls = Some(tls.clone());
            c.signing_alg = signing_alg.into();
        })
        .await;
        let (up, upstream_task) = upstream().await;
        s.admin_post("/v1/owners", json!({"name": "platform"}))
            .await;
        for (tool, proxied) in [("echo", true), ("other", false)] {
            let mut t = json!({
                "name": tool, "audience": format!("https://{tool}.test"), "owner": "platform",
                "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
                "actions": ["items:read"],
            });
            if proxied {
                t["upstream"] = json!(up);
                t["routes"] = json!([{"method": "GET", "path": "/items/{id}",
                                      "action": "items:read", "resource": "item:{id}"}]);
                t["delivery"] =
                    json!({"mode": "inject", "inject": {"kind": "header", "name": "X-Api-Key"}});
            }
            s.admin_post("/v1/tools", t).await;
        }
        s.admin_post(
            "/v1/secrets",
            json!({"name": "echo-key", "tool": "echo", "class": "tool",
                   "owner": "platform", "value": INJECTED}),
        )
        .await;
        for agent in AGENTS.iter().map(|a| a.0).chain(["bystander"]) {
            s.admin_post(
                "/v1/agents",
                json!({"name": agent, "owner": "platform", "environment": "staging",
                       "allowed_tools": ["echo", "other"]}),
            )
            .await;
        }
        let proxy_token = s.admin_token(&["proxy"]).await;
        let proxy = mandate_proxy::Proxy::start(mandate_proxy::ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            broker: s.base.clone(),
            token: Some(secrecy::SecretString::from(proxy_token)),
            spool_dir: dir.path().join("spool"),
            ca_file: Some(ca.clone()),
            catalog_refresh_secs: 1,
            ..mandate_proxy::ProxyConfig::default()
        })
        .await
        .expect("proxy starts");
        let w = World {
            s,
            dir,
            ca,
            _upstream: upstream_task,
            proxy,
        };
        w.wait_for_proxy().await;
        w
    }

    fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }

    async fn wait_for_proxy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/readyz", self.proxy_url());
        while !reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "the proxy never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `mandate` CLI against this broker, trusting its CA.
    async fn mandate(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(args)
            .env("MANDATE_ADDR", &self.s.base)
            .env("MANDATE_TOKEN", &self.s.root)
            .env("MANDATE_CA_FILE", &self.ca)
            .env_remove("MANDATE_SESSION")
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "mandate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Enrol each agent with the CLI (its key file on disk), open a task for
    /// it, and write the clients' config file.
    async fn config(&self) -> PathBuf {
        let mut agents = Vec::new();
        for (name, alg) in AGENTS {
            let jt = self
                .s
                .admin_post(&format!("/v1/agents/{name}/join-tokens"), json!({}))
                .await;
            let key_file = self.dir.path().join(format!("{name}.key"));
            let key = key_file.to_str().unwrap();
            let jt = jt["join_token"].as_str().unwrap();
            self.mandate(
                &[
                    "agent",
                    "enroll",
                    "--join-token",
                    jt,
                    "--key-file",
                    key,
                    "--alg",
                    alg,
                ],
                &[],
            )
            .await;
            let session = self.mandate(&["login", "--key-file", key], &[]).await;
            let task = self
                .mandate(
                    &[
                        "task",
                        "create",
                        "--intent",
                        "interop",
                        "--scope",
                        "echo=items:read",
                    ],
                    &[("MANDATE_SESSION", &session)],
                )
                .await;
            agents.push(json!({"key_file": key, "task": task}));
        }
        let config = json!({
            "issuer": self.s.base,
            "agents": agents,
            "resource": "https://echo.test",
            "other_resource": "https://other.test",
            "proxy_url": format!("{}/echo/items/7", self.proxy_url()),
            "other_client_id": "spiffe://test.local/agent/bystander",
        });
        let path = self.dir.path().join("interop.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// Run one client against this world: the checks it reported, by name.
    pub async fn run(&self, clients: &Clients) -> BTreeMap<String, (bool, String)> {
        let config = self.config().await;
        let (stdout, stderr, success) = clients
            .run(&config, &self.ca, Duration::from_secs(180))
            .await;
        let checks: BTreeMap<String, (bool, String)> = stdout
            .lines()
            .filter_map(|l| mandate_testkit::serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                let name = v["check"].as_str().unwrap_or_default().to_owned();
                let detail = v["detail"].as_str().unwrap_or_default().to_owned();
                (name, (v["ok"] == true, detail))
            })
            .collect();
        eprintln!("{}:\n{stdout}", clients.name());
        let failed: Vec<_> = checks.iter().filter(|(_, (ok, _))| !ok).collect();
        assert!(
            success && failed.is_empty(),
            "{} failed: {failed:#?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            clients.name()
        );
        checks
    }

    /// Every expected check ran and passed for both key files, and the
    /// broker's own record agrees: both agents logged in by
    /// `private_key_jwt`, and the unenrolled key's attempts were refused.
    pub async fn assert_checks(
        &self,
        checks: &BTreeMap<String, (bool, String)>,
        expected: &[&str],
        extra: &[&str],
    ) {
        assert_eq!(checks.get("discovery").map(|c| c.0), Some(true));
        for (_, alg) in AGENTS {
            for name in expected.iter().chain(extra) {
                let key = format!("{name} {alg}");
                assert!(
                    checks.get(&key).is_some_and(|c| c.0),
                    "check `{key}` missing or failed: {checks:#?}"
                );
            }
        }
        let events = self.s.events().await;
        for (agent, _) in AGENTS {
            let of = |kind: &str| {
                events
                    .iter()
                    .filter(|e| e["kind"] == kind && e["agent"] == agent)
                    .map(|e| {
                        // An event's `detail` is JSON in a string (hashed as written).
                        let d: Value = e["detail"]
                            .as_str()
                            .and_then(|d| mandate_testkit::serde_json::from_str(d).ok())
                            .unwrap_or_default();
                        d["method"].as_str().unwrap_or("").to_owned()
                    })
                    .collect::<Vec<_>>()
            };
            assert!(
                of("login.succeeded")
                    .iter()
                    .filter(|m| *m == "private_key_jwt")
                    .count()
                    >= 2,
                "the CLI and the client logged {agent} in by private_key_jwt: {:?}",
                of("login.succeeded")
            );
            assert_eq!(
                of("login.failed"),
                ["private_key_jwt"],
                "{agent}: the unenrolled key's login was refused and recorded"
            );
        }
    }
}
