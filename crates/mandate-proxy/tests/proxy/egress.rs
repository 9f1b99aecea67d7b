//! The proxy's egress listener over real parts: a real broker, proxy and
//! upstream on loopback ports, clients speaking CONNECT over TCP (and
//! reqwest, as an SDK behind `HTTPS_PROXY` would), the audit read back
//! from the broker.

use crate::support;

use mandate_testkit::serde_json::{Value, json};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A refusal or an open tunnel: status, head, body, and the connection.
struct Answer {
    status: u16,
    head: String,
    body: String,
    stream: TcpStream,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id")
            .to_owned()
    }

    fn code(&self) -> String {
        code(&self.body)
    }
}

/// Send `request` (a whole head) to the egress listener; read the answer's
/// head and, for a refusal, its body.
async fn send(egress: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(egress).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut b))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n == 1, "closed before the head ended: {buf:?}");
        buf.push(b[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break buf.len();
        }
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
        stream,
    };
    if status != 200 {
        let mut body = String::new();
        answer.stream.read_to_string(&mut body).await.unwrap();
        answer.body = body;
    }
    answer
}

async fn connect(egress: SocketAddr, target: &str, token: Option<&str>) -> Answer {
    let auth = token
        .map(|t| format!("Proxy-Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
    send(egress, req.as_bytes()).await
}

/// The upstream's `host:port`.
fn upstream_authority(w: &World) -> String {
    w.up.url.split("://").nth(1).unwrap().to_owned()
}

fn detail(e: &Value) -> Value {
    mandate_testkit::serde_json::from_str(e["detail"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_tunnel_to_a_host_of_the_tasks_reveal_tool_reaches_the_upstream() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (task, token) = w.grant("echo-reveal", &["items:read"]).await;
    let target = upstream_authority(&w);
    let mut tunnel = connect(egress, &target, Some(&token)).await;
    assert_eq!(tunnel.status, 200, "{}", tunnel.head);
    assert!(
        tunnel
            .head
            .starts_with("HTTP/1.1 200 Connection Established\r\n")
    );
    let id = tunnel.request_id();
    // Plain HTTP inside the tunnel: what the agent sends is what arrives.
    let inner = format!("GET /items/7 HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tunnel.stream.write_all(inner.as_bytes()).await.unwrap();
    let mut got = String::new();
    tunnel.stream.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let seen = w.up.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/items/7")
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "the proxy adds nothing inside a tunnel"
    );
    drop(tunnel);

    let opened = w
        .wait_for("egress.allowed", std::slice::from_ref(&id))
        .await;
    let e = opened
        .iter()
        .find(|e| e["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (&e["agent"], &e["task"], &e["tool"], &e["decision"]),
        (
            &json!("ci"),
            &json!(task),
            &json!("echo-reveal"),
            &json!("allow")
        )
    );
    let d = detail(e);
    assert_eq!(
        (&d["host"], &d["client"]),
        (&json!(target), &json!("127.0.0.1"))
    );
    // The outcome, in the same event or as `egress.closed`.
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcome = loop {
        let closed = w.events_of("egress.closed").await;
        let merged = w.events_of("egress.allowed").await;
        let found = closed
            .iter()
            .chain(&merged)
            .map(detail)
            .find(|d| d["bytes_up"].as_u64().is_some() && d["host"] == json!(target));
        if let Some(d) = found {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel's outcome never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcome["bytes_up"].as_u64(), Some(inner.len() as u64));
    assert_eq!(outcome["bytes_down"].as_u64(), Some(got.len() as u64));
    assert_eq!(outcome["status"], 200);
}

#[tokio::test]
async fn an_sdk_behind_https_proxy_with_the_token_as_password_reaches_a_tls_upstream() {
    let cert = TestCert::new();
    let mut w = World::with_tls(&cert).await;
    let egress = w.start_egress().await;
    let (_, token) = w.grant("echo-reveal", &["items:read"]).await;
    // What HTTPS_PROXY=http://mandate:<token>@host:port makes a client send.
    let proxy = reqwest::Proxy::https(format!("http://mandate:{token}@{egress}")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(proxy)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/items/9", w.up.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(w.up.last().uri, "/items/9");
    // The same client cannot go anywhere else through the proxy.
    let elsewhere = client.get("https://127.0.0.2:9/").send().await;
    assert!(
        elsewhere.is_err(),
        "a refused CONNECT is an error to the client"
    );
}

#[tokio::test]
async fn a_host_no_tool_of_the_task_declares_is_refused_and_audited() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (task, token) = w.grant("echo-reveal", &["items:read"]).await;
    let count = w.up.count();
    let a = connect(egress, "exfil.example.net:443", Some(&token)).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (403, "egress_denied"),
        "{}",
        a.body
    );
    assert!(a.body.contains("exfil.example.net:443"), "{}", a.body);
    // The upstream's host on another port is another host.
    let host = upstream_authority(&w);
    let other_port = format!("{}:1", host.rsplit_once(':').unwrap().0);
    let b = connect(egress, &other_port, Some(&token)).await;
    assert_eq!(b.code(), "egress_denied");
    let id = a.request_id();
    let denied = w.wait_for("egress.denied", std::slice::from_ref(&id)).await;
    let e = denied
        .iter()
        .find(|e| e["request_id"] == id.as_str())
        .unwrap();
    assert_eq!((&e["agent"], &e["task"]), (&json!("ci"), &json!(task)));
    assert_eq!(e["decision"], "deny");
    assert!(e["tool"].is_null(), "no tool declares it");
    let d = detail(e);
    assert_eq!(
        (&d["host"], &d["status"]),
        (&json!("exfil.example.net:443"), &json!(403))
    );
    assert!(
        e["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("egress_denied")
    );
    assert_eq!(w.up.count(), count);
}

#[tokio::test]
async fn an_injected_tools_upstream_is_not_an_egress_host() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    // `echo` injects its secret: reached through the proxy, never tunnelled to.
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let a = connect(egress, &upstream_authority(&w), Some(&token)).await;
    assert_eq!((a.status, a.code().as_str()), (403, "egress_denied"));
}

#[tokio::test]
async fn without_a_token_the_answer_is_407_with_a_challenge() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let target = upstream_authority(&w);
    let a = connect(egress, &target, None).await;
    assert_eq!((a.status, a.code().as_str()), (407, "missing_token"));
    assert_eq!(
        a.header("proxy-authenticate"),
        Some("Bearer realm=\"mandate-egress\"")
    );
    let req = format!("CONNECT {target} HTTP/1.1\r\nProxy-Authorization: Negotiate abc\r\n\r\n");
    let b = send(egress, req.as_bytes()).await;
    assert_eq!((b.status, b.code().as_str()), (407, "invalid_request"));
    let forged = connect(egress, &target, Some("not.a.token")).await;
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (403, "invalid_token")
    );
    w.wait_for("egress.denied", &[a.request_id(), forged.request_id()])
        .await;
}

#[tokio::test]
async fn a_revoked_tasks_token_opens_no_tunnel_and_an_open_one_is_closed() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (task, token) = w.grant("echo-reveal", &["items:read"]).await;
    let target = upstream_authority(&w);
    let mut open = connect(egress, &target, Some(&token)).await;
    assert_eq!(open.status, 200);
    let open_id = open.request_id();
    w.s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({}))
        .await;
    let revoked = Instant::now();
    // The open tunnel is closed within a few seconds of the revocation.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), open.stream.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "the tunnel outlived its task");
    // And no new one opens.
    let count = w.up.count();
    let refused = loop {
        let a = connect(egress, &target, Some(&token)).await;
        if a.status == 403 {
            break a;
        }
        assert!(revoked.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.code(), "revoked");
    assert_eq!(w.up.count(), count);
    // The closed tunnel's record says why it ended.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = w.s.events().await;
        let ended = events.iter().any(|e| {
            e["request_id"] == open_id.as_str()
                && (e["kind"] == "egress.closed" || e["kind"] == "egress.allowed")
                && e["reasons"].to_string().contains("token_refused: revoked")
        });
        if ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no record of why the tunnel ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dpop_bound_token_cannot_open_a_tunnel() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (key, _) = mandate_token::SigningKey::generate(mandate_token::SigningAlg::EdDsa).unwrap();
    let token = w.grant_dpop("echo-reveal", &["items:read"], &key).await;
    let a = connect(egress, &upstream_authority(&w), Some(&token)).await;
    assert_eq!((a.status, a.code().as_str()), (403, "dpop_bound_token"));
}

#[tokio::test]
async fn anything_but_connect_is_405() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (_, token) = w.grant("echo-reveal", &["items:read"]).await;
    let url = format!("{}/items/1", w.up.url);
    let req =
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer {token}\r\n\r\n");
    let a = send(egress, req.as_bytes()).await;
    assert_eq!((a.status, a.code().as_str()), (405, "not_connect"));
    assert_eq!(a.header("allow"), Some("CONNECT"));
    let b = send(egress, b"\x16\x03\x01\x00\x05hello\r\n\r\n").await;
    assert_eq!((b.status, b.code().as_str()), (400, "bad_request"));
}

#[tokio::test]
async fn hostile_connect_targets_are_refused_naming_the_problem() {
    let mut w = World::new().await;
    let egress = w.start_egress().await;
    let (_, token) = w.grant("echo-reveal", &["items:read"]).await;
    let long = format!("{}.example.com:443", "a".repeat(3000));
    for (target, status, code, says) in [
        ("example.com", 400, "bad_target", "port is required"),
        (long.as_str(), 400, "bad_target", "longer than"),
        ("example.com:0", 400, "bad_target", "1 to 65535"),
        ("example.com:99999", 400, "bad_target", "1 to 65535"),
        ("a@b:443", 400, "bad_target", "user information"),
        ("127.1:443", 400, "bad_target", "IPv4"),
        ("[::1]:443", 403, "egress_denied", "[::1]:443"),
        ("10.0.0.1:443", 403, "egress_denied", "10.0.0.1:443"),
    ] {
        let a = connect(egress, target, Some(&token)).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (status, code),
            "{target}: {}",
            a.body
        );
        assert!(a.body.contains(says), "{target}: {}", a.body);
        assert!(
            a.body.len() < 1024,
            "the message cuts long input: {}",
            a.body.len()
        );
    }
    // The proxy still serves.
    let ok = connect(egress, &upstream_authority(&w), Some(&token)).await;
    assert_eq!(ok.status, 200);
}
