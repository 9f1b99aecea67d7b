//! Outbound webhooks over real HTTP: a broker on a loopback port, a
//! receiver on another, endpoints made through the API. Signatures are
//! checked twice, by a hand-written HMAC (RustCrypto, not the broker's
//! aws-lc-rs) and by the Standard Webhooks reference library in Python
//! (pinned in `interop/python/standardwebhooks.lock`; skipped loudly
//! without Python, required under `MANDATE_REQUIRE_INTEROP=1`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use mandate_testkit::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: String,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

#[derive(Default)]
struct Inbox {
    got: Vec<Delivery>,
    /// Statuses to answer, in order; 200 once they run out.
    answers: VecDeque<u16>,
}

/// A webhook receiver on a loopback port: records every request.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Receiver {
        Self::start_at("127.0.0.1:0".parse().unwrap(), answers).await
    }

    async fn start_at(addr: SocketAddr, answers: &[u16]) -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox {
            got: Vec::new(),
            answers: answers.iter().copied().collect(),
        }));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = inbox.clone();
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let mut inbox = state.lock().unwrap();
                    inbox.got.push(Delivery {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body,
                    });
                    let status = inbox.answers.pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inbox, task }
    }

    fn url(&self) -> String {
        format!("http://{}/mandate-events", self.addr)
    }

    fn got(&self) -> Vec<Delivery> {
        self.inbox.lock().unwrap().got.clone()
    }

    /// Wait until `n` requests arrived (at most `secs`).
    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} requests within {secs} s: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on (connection refused), to start a
/// receiver on later.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn create_webhook(s: &TestServer, url: &str, kinds: &[&str]) -> Value {
    let (st, v) = s
        .post(
            "/v1/webhooks",
            Some(&s.root),
            &json!({"url": url, "kinds": kinds, "description": "pager bridge"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// A seeded broker with a live task of `bot`: (session, task id).
async fn with_task(s: &TestServer) -> (String, String) {
    s.seed().await;
    let session = s.session("bot").await;
    let task = s.read_task(&session).await;
    (session, task)
}

async fn move_task(s: &TestServer, task: &str, verb: &str) {
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{task}/{verb}"),
            Some(&s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{verb}: {v}");
}

/// The endpoint's record once its delivery state is `state` (at most 10 s:
/// the state is saved just after the receiver answers).
async fn settled(s: &TestServer, id: &str, state: Value) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, shown) = s.get(&format!("/v1/webhooks/{id}"), Some(&s.root)).await;
        assert_eq!(st, StatusCode::OK, "{shown}");
        let d = &shown["delivery"];
        if state.as_object().unwrap().iter().all(|(k, v)| &d[k] == v) {
            return shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery state never became {state}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(s: &TestServer, name: &str, webhook: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(s.url("/metrics"))
        .bearer_auth(&s.root)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{webhook=\"{webhook}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The signature recomputed from the spec, with another HMAC
/// implementation than the broker's.
fn assert_signed(d: &Delivery, secret: &str) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(key.len(), 32);
    let id = d.header("webhook-id");
    let ts = d.header("webhook-timestamp");
    let sent: i64 = ts.parse().unwrap();
    assert!((sent - now()).abs() < 60, "timestamp {sent} is now");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", d.body).as_bytes());
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(d.header("webhook-signature"), want);
}

/// The reference library verifies every delivery, and refuses each with
/// its body changed.
async fn verify_with_reference_library(deliveries: &[Delivery], secret: &str) {
    let Some(venv) = interop::python_packages("python/standardwebhooks.lock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.json");
    let list: Vec<Value> = deliveries
        .iter()
        .map(|d| json!({"headers": d.headers, "body": d.body}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(interop::interop_dir().join("python/verify_webhooks.py"))
        .env("WEBHOOK_DELIVERIES", &file)
        .env("WEBHOOK_SECRET", secret)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "standardwebhooks refused a delivery:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in deliveries {
        let id = d.header("webhook-id");
        assert!(stdout.contains(&format!("verified {id} ")), "{stdout}");
        assert!(
            stdout.contains(&format!("tampered {id} refused")),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_event_is_signed_per_standard_webhooks() {
    let s = TestServer::start().await;
    let rx = Receiver::start(&[]).await;
    let (session, task) = with_task(&s).await;
    let hook = create_webhook(&s, &rx.url(), &["task.suspended"]).await;
    let id = hook["id"].as_str().unwrap();
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{hook}");
    assert_eq!(hook["kinds"], json!(["task.suspended"]));
    // A token of the task, to show no token ever reaches the receiver.
    let (st, grant) = s
        .exchange(&session, &task, "https://api.github.com", &[])
        .await;
    assert_eq!(st, StatusCode::OK, "{grant}");
    let token = grant["access_token"].as_str().unwrap();

    move_task(&s, &task, "suspend").await;
    let got = rx.wait_for(1, 10).await;
    let d = &got[0];
    let body = d.json();
    assert_eq!(body["type"], "task.suspended");
    assert_eq!(body["data"]["kind"], "task.suspended");
    assert_eq!(body["data"]["task"], task.as_str());
    assert_eq!(body["data"]["agent"], "bot");
    assert!(
        body["data"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    let seq = body["data"]["seq"].as_u64().unwrap();
    let chained = s
        .events()
        .await
        .into_iter()
        .find(|e| e["seq"] == seq)
        .unwrap();
    assert_eq!(body["data"]["hash"], chained["hash"]);
    assert_eq!(body["data"]["time_ms"], chained["time_ms"]);
    time::OffsetDateTime::parse(
        body["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339 timestamp");
    assert_eq!(d.header("content-type"), "application/json");
    assert_eq!(d.header("webhook-id"), format!("evt_{seq}_{id}"));
    assert_signed(d, secret);

    // What the receiver got carries no secret: not the signing secret, the
    // task's token, the agent's session or the admin token.
    for (what, value) in [
        ("signing secret", secret),
        ("access token", token),
        ("session", session.as_str()),
        ("root token", s.root.as_str()),
    ] {
        for d in rx.got() {
            assert!(!d.body.contains(value), "{what} in a delivery");
            assert!(
                !d.headers.values().any(|h| h.contains(value)),
                "{what} in a header"
            );
        }
    }
    // Only the kinds asked for: the task's creation and the endpoint's own
    // event were not sent.
    assert!(
        rx.got()
            .iter()
            .all(|d| d.json()["type"] == "task.suspended")
    );
    // The endpoint never shows its secret again; the log names its origin only.
    let shown = settled(&s, id, json!({"delivered_seq": seq, "attempts": 0})).await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let (_, listed) = s.get("/v1/webhooks", Some(&s.root)).await;
    assert!(!listed.to_string().contains(secret));
    let created = s
        .events()
        .await
        .into_iter()
        .find(|e| e["kind"] == "webhook.created")
        .unwrap();
    assert!(!created.to_string().contains(&secret[6..]));
    assert!(!created.to_string().contains("mandate-events"), "{created}");
    assert_eq!(metric(&s, "mandate_webhook_deliveries_total", id).await, 1);

    verify_with_reference_library(&got, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_delays_no_request_and_loses_nothing() {
    let s = TestServer::start().await;
    let addr = closed_port().await;
    let (_, task) = with_task(&s).await;
    let hook = create_webhook(
        &s,
        &format!("http://{addr}/in"),
        &["task.suspended", "task.resumed"],
    )
    .await;
    let id = hook["id"].as_str().unwrap();

    // Nothing listens: every request to the broker still succeeds while
    // delivery fails behind it.
    move_task(&s, &task, "suspend").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, "mandate_webhook_failed_attempts_total", id).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = metric(&s, "mandate_webhook_failed_attempts_total", id).await;
    move_task(&s, &task, "resume").await;
    move_task(&s, &task, "suspend").await;
    let shown = settled(&s, id, json!({"last_error": "cannot connect"})).await;
    assert!(shown["delivery"]["attempts"].as_u64().unwrap() >= 1);
    assert!(shown["delivery"]["pending_events"].as_u64().unwrap() >= 3);
    assert!(metric(&s, "mandate_webhook_lag_events", id).await >= 1);

    // The receiver comes up: everything arrives, in chain order, once.
    let rx = Receiver::start_at(addr, &[]).await;
    let got = rx.wait_for(3, 30).await;
    let kinds: Vec<Value> = got.iter().map(|d| d.json()["type"].clone()).collect();
    assert_eq!(
        kinds,
        [
            json!("task.suspended"),
            json!("task.resumed"),
            json!("task.suspended")
        ]
    );
    let seqs: Vec<u64> = got
        .iter()
        .map(|d| d.json()["data"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(metric(&s, "mandate_webhook_failed_attempts_total", id).await >= failed);
    assert_eq!(metric(&s, "mandate_webhook_deliveries_total", id).await, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got().len(), 3, "nothing sent twice");
    settled(&s, id, json!({"attempts": 0, "last_error": null})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_retried_with_the_same_webhook_id() {
    let s = TestServer::start().await;
    let rx = Receiver::start(&[500, 503]).await;
    let (_, task) = with_task(&s).await;
    let hook = create_webhook(&s, &rx.url(), &["task.*"]).await;
    let id = hook["id"].as_str().unwrap();
    let secret = hook["secret"].as_str().unwrap();
    move_task(&s, &task, "revoke").await;
    let got = rx.wait_for(3, 20).await;
    let ids: Vec<&str> = got.iter().map(|d| d.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert!(got.iter().all(|d| d.body == got[0].body));
    for d in &got {
        assert_signed(d, secret);
    }
    assert_eq!(got[0].json()["type"], "task.revoked");
    assert_eq!(
        metric(&s, "mandate_webhook_failed_attempts_total", id).await,
        2
    );
    assert_eq!(metric(&s, "mandate_webhook_deliveries_total", id).await, 1);
    settled(&s, id, json!({"attempts": 0, "last_error": null})).await;
    verify_with_reference_library(&got, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_restart_from_the_stored_cursor() {
    let s = TestServer::start().await;
    let addr = closed_port().await;
    let (_, task) = with_task(&s).await;
    let hook = create_webhook(&s, &format!("http://{addr}/in"), &["task.suspended"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    move_task(&s, &task, "suspend").await;
    let s = s.restart().await;
    let rx = Receiver::start_at(addr, &[]).await;
    let got = rx.wait_for(1, 30).await;
    assert_eq!(got[0].json()["data"]["task"], task.as_str());
    assert!(got[0].header("webhook-id").ends_with(&id));
    assert_signed(&got[0], hook["secret"].as_str().unwrap());
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_input_is_refused_naming_the_field() {
    let s = TestServer::start().await;
    let long = format!("https://hooks.example/{}", "a".repeat(2048));
    for (body, field) in [
        (json!({"url": "ftp://hooks.example/x"}), "url"),
        (json!({"url": "javascript:alert(1)"}), "url"),
        (json!({"url": "https://"}), "url"),
        (json!({"url": "https://user:pw@hooks.example/"}), "url"),
        (json!({"url": long}), "url"),
        (json!({"description": "no url"}), "url"),
        (
            json!({"url": "https://hooks.example/", "kinds": []}),
            "kinds",
        ),
        (
            json!({"url": "https://hooks.example/", "kinds": ["task.suspended", "task.exploded"]}),
            "kinds[1]",
        ),
        (
            json!({"url": "https://hooks.example/", "kinds": ["nothing.*"]}),
            "kinds[0]",
        ),
        (
            json!({"url": "https://hooks.example/", "secret": "whsec_mine"}),
            "secret",
        ),
    ] {
        let (st, v) = s.post("/v1/webhooks", Some(&s.root), &body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
        assert_eq!(v["error"]["code"], "invalid_request");
    }
    let (st, v) = s.get("/v1/webhooks", Some(&s.root)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["webhooks"], json!([]), "nothing was created");
    assert!(
        !s.events()
            .await
            .iter()
            .any(|e| e["kind"] == "webhook.created")
    );

    for path in [
        "/v1/webhooks/whk_00000000000000000000000000000000",
        "/v1/webhooks/not-an-id",
    ] {
        let (st, v) = s.get(path, Some(&s.root)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let r = reqwest::Client::new()
            .delete(s.url(path))
            .bearer_auth(&s.root)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    // The right, and only it.
    let tasks = s.admin_token(&["tasks"]).await;
    let ok = json!({"url": "https://hooks.example/in"});
    let (st, _) = s.post("/v1/webhooks", Some(&tasks), &ok).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let hooks = s.admin_token(&["webhooks"]).await;
    let (st, v) = s.post("/v1/webhooks", Some(&hooks), &ok).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["kinds"],
        json!([
            "approval.*",
            "breakglass.*",
            "anomaly.*",
            "token.misuse",
            "task.suspended"
        ])
    );
    let id = v["id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .delete(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&hooks)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = s.get("/v1/webhooks", Some(&hooks)).await;
    assert_eq!(v["webhooks"], json!([]));
    assert!(
        s.events()
            .await
            .iter()
            .any(|e| e["kind"] == "webhook.deleted")
    );
}
