//! The proxy end to end: a real broker, a real upstream, the real proxy.

use crate::support;

use base64::Engine;
use mandate_testkit::raw::{keep_alive_get, served_at_last, unserved_request};
use mandate_testkit::serde_json::{Value, json};
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::{SECRET, World, code, request_id};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn assert_no_secret(what: &str, text: &str) {
    let forms = [
        SECRET.to_owned(),
        b64(&format!("ci:{SECRET}")),
        form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>(),
        SECRET.replace('/', "\\/"),
    ];
    for f in forms {
        assert!(!text.contains(&f), "{what} leaks the secret: {text}");
    }
}

fn headers_text(h: &http::HeaderMap) -> String {
    h.iter()
        .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

#[tokio::test]
async fn upstream_gets_the_secret_and_the_agent_never_sees_it() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, h, body) = w.call("GET", "/echo/items/42?x=1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let seen = w.up.last();
    assert_eq!(seen.uri, "/items/42?x=1");
    assert_eq!(
        seen.headers["authorization"].to_str().unwrap(),
        format!("Bearer {SECRET}")
    );
    // The agent's own token never reaches the upstream.
    assert!(!format!("{:?}", seen.headers).contains(&token));
    assert_eq!(seen.headers["accept-encoding"], "identity");
    assert_eq!(seen.headers["x-request-id"], h["x-request-id"]);
    // Echoed back in a header and a chunked body: redacted in both.
    assert_eq!(h["x-echo-auth"], "Bearer [REDACTED]");
    assert!(h.get("content-length").is_none());
    let v: Value = mandate_testkit::serde_json::from_str(&body).unwrap();
    assert_eq!(v["authorization"], "Bearer [REDACTED]");
    assert_no_secret("body", &body);
    assert_no_secret("headers", &headers_text(&h));
}

/// A small body with a length is read whole and redacted at once; the agent
/// gets the redacted body's own exact length.
#[tokio::test]
async fn a_sized_body_is_redacted_whole_with_its_new_length() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, h, body) = w.call("GET", "/echo/items/42?sized=1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        h["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    let v: Value = mandate_testkit::serde_json::from_str(&body).unwrap();
    assert_eq!(v["authorization"], "Bearer [REDACTED]");
    assert_no_secret("body", &body);
    assert_no_secret("headers", &headers_text(&h));
    let (st, h, body) = w.call("HEAD", "/echo/items/42?sized=1", Some(&token)).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, ""));
    assert_no_secret("headers", &headers_text(&h));
}

#[tokio::test]
async fn basic_query_and_header_forms_are_injected_and_redacted() {
    let w = World::new().await;
    for (tool, check) in [
        ("echo-basic", "authorization"),
        ("echo-query", "uri"),
        ("echo-header", "x-api-key"),
    ] {
        let (_, token) = w.grant(tool, &["items:read"]).await;
        // An agent-supplied copy of the injected parameter must not survive.
        let (st, h, body) = w
            .call(
                "GET",
                &format!("/{tool}/items/7?api_key=mine&keep=1"),
                Some(&token),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{tool}: {body}");
        let seen = w.up.last();
        match check {
            "authorization" => assert_eq!(
                seen.headers["authorization"].to_str().unwrap(),
                format!("Basic {}", b64(&format!("ci:{SECRET}")))
            ),
            "uri" => {
                let enc: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
                assert_eq!(seen.uri, format!("/items/7?keep=1&api_key={enc}"));
                assert!(seen.headers.get("authorization").is_none());
            }
            _ => assert_eq!(
                seen.headers["x-api-key"].to_str().unwrap(),
                format!("Key {SECRET}")
            ),
        }
        assert_no_secret(tool, &body);
        assert_no_secret(tool, &headers_text(&h));
        assert!(
            body.contains("[REDACTED]") || check == "x-api-key",
            "{tool}: {body}"
        );
    }
}

#[tokio::test]
async fn a_revoked_tasks_token_is_refused_within_a_second() {
    let w = World::new().await;
    let (task, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let before = Instant::now();
    let (st, v) =
        w.s.post(
            &format!("/v1/tasks/{task}/revoke"),
            Some(&w.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let revoked = Instant::now();
    let refused_id = loop {
        let (st, h, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
        if st == StatusCode::UNAUTHORIZED {
            assert_eq!(code(&body), "revoked");
            break request_id(&h);
        }
        assert_eq!(st, StatusCode::OK);
        assert!(revoked.elapsed() < Duration::from_secs(5), "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let after_revoke = revoked.elapsed();
    println!(
        "revocation → refusal: {:.1} ms after the broker answered ({:.1} ms including the revoke call)",
        after_revoke.as_secs_f64() * 1000.0,
        before.elapsed().as_secs_f64() * 1000.0
    );
    assert!(after_revoke < Duration::from_millis(1500));
    // The refusal's audit record still says which tool and task it was for.
    let evs = w.wait_for_records(std::slice::from_ref(&refused_id)).await;
    let ev = evs
        .iter()
        .find(|e| e["request_id"] == refused_id.as_str())
        .unwrap();
    assert_eq!(ev["decision"], "deny");
    assert_eq!(ev["tool"], "echo");
    assert_eq!(ev["task"], task.as_str());
}

/// A leaked signing key withdrawn at the broker: the proxy stops taking
/// the tokens it signed (verified and cached before) within a second.
#[tokio::test]
async fn tokens_of_a_withdrawn_signing_key_are_refused_within_a_second() {
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let header = mandate_token::b64_decode(token.split('.').next().unwrap()).unwrap();
    let kid = mandate_testkit::serde_json::from_slice::<Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) =
        w.s.post("/v1/keys/rotate", Some(&w.s.root), &json!({}))
            .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "a rotation alone keeps old tokens: {body}"
    );
    let (st, v) =
        w.s.post(
            &format!("/v1/keys/{kid}/revoke"),
            Some(&w.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let revoked = Instant::now();
    loop {
        let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
        if st == StatusCode::UNAUTHORIZED {
            assert_eq!(code(&body), "revoked", "{body}");
            assert!(body.contains("key"), "{body}");
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(revoked.elapsed() < Duration::from_secs(5), "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "key withdrawal → refusal: {:.1} ms",
        revoked.elapsed().as_secs_f64() * 1000.0
    );
    assert!(revoked.elapsed() < Duration::from_millis(1500));
    // A restarted proxy learns it from the feed's backlog and the JWKS.
    w.proxy.take().unwrap().stop().await;
    w.start_proxy(50).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    // The agent's session was signed by the withdrawn key too: it logs in
    // again, and tokens from the new key pass.
    w.session = w.s.session("ci").await;
    let (_, fresh) = w.grant("echo", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&fresh)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

/// Name, method, path, token, expected status and error code.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    StatusCode,
    &'a str,
);

/// A token signed with the broker's real key, claims edited.
fn forged(w: &World, token: &str, edit: impl Fn(&mut Value)) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let mut claims: Value =
        mandate_testkit::serde_json::from_slice(&mandate_token::b64_decode(payload).unwrap())
            .unwrap();
    claims["jti"] = json!(hex::encode(mandate_token::random_bytes::<8>()));
    edit(&mut claims);
    let key = w.s.app().keys.current();
    mandate_token::jwt::encode(&key, "at+jwt", &claims).unwrap()
}

#[tokio::test]
async fn bad_tokens_and_requests_are_refused_with_a_reason() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (_, github) = w.grant("github", &["issues:read"]).await;
    let now = mandate_testkit::now();
    let expired = forged(&w, &token, |c| {
        c["exp"] = json!(now - 120);
        c["iat"] = json!(now - 300);
        c["nbf"] = json!(now - 300);
    });
    let other_env = forged(&w, &token, |c| {
        c["authorization_details"][0]["environment"] = json!("production");
    });
    let (other_key, _) =
        mandate_token::SigningKey::generate(mandate_token::SigningAlg::EdDsa).unwrap();
    let foreign = mandate_token::jwt::encode(&other_key, "at+jwt", &json!({"jti": "x"})).unwrap();
    let cases: Vec<Case> = vec![
        (
            "no token",
            "GET",
            "/echo/items/1",
            None,
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            "expired",
            "GET",
            "/echo/items/1",
            Some(&expired),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            "unknown key",
            "GET",
            "/echo/items/1",
            Some(&foreign),
            StatusCode::UNAUTHORIZED,
            "unknown_key",
        ),
        (
            "garbage",
            "GET",
            "/echo/items/1",
            Some("abc.def"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "wrong audience",
            "GET",
            "/echo/items/1",
            Some(&github),
            StatusCode::FORBIDDEN,
            "wrong_audience",
        ),
        (
            "other environment",
            "GET",
            "/echo/items/1",
            Some(&other_env),
            StatusCode::FORBIDDEN,
            "wrong_environment",
        ),
        (
            "action outside scope",
            "POST",
            "/echo/items",
            Some(&token),
            StatusCode::FORBIDDEN,
            "policy_denied",
        ),
        (
            "unmatched route",
            "GET",
            "/echo/admin",
            Some(&token),
            StatusCode::FORBIDDEN,
            "no_route",
        ),
        (
            "encoded slash",
            "GET",
            "/echo/items/a%2Fb",
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "unknown tool",
            "GET",
            "/nope/items/1",
            Some(&token),
            StatusCode::NOT_FOUND,
            "unknown_tool",
        ),
    ];
    let upstream_before = w.up.count();
    for (name, method, path, tok, status, want) in cases {
        let (st, h, body) = w.call(method, path, tok).await;
        assert_eq!((st, code(&body).as_str()), (status, want), "{name}: {body}");
        assert!(!request_id(&h).is_empty());
        if st == StatusCode::UNAUTHORIZED {
            assert!(h.contains_key("www-authenticate"), "{name}");
        }
    }
    let (st, _, body) = w.call("POST", "/echo/items", Some(&token)).await;
    assert!(body.contains("deny-out-of-scope"), "{st} {body}");
    // An unbound token cannot pose as DPoP-bound (more in the DPoP test).
    let r = w
        .http
        .get(w.url("/echo/items/1"))
        .header("authorization", format!("DPoP {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r.text().await.unwrap()), "not_dpop_bound");
    // Dot segments, sent raw (HTTP clients normalise them away).
    // So are the forms servlet containers and double-decoding servers
    // read as `..`.
    for path in [
        "/echo/items/../admin",
        "/echo/items/..;x/admin",
        "/echo/items/%252e%252e/admin",
    ] {
        let raw = raw_get(&w, path, &token).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        assert!(raw.contains("bad_path"), "{path}: {raw}");
    }
    // A method override would let a read route carry a delete.
    let r = w
        .http
        .post(w.url("/echo/items"))
        .bearer_auth(&token)
        .header("x-http-method-override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.text().await.unwrap()), "method_override");
    // So would `_method` in a POST body, which Rack, Symfony and Laravel
    // read from forms (Rack also from a POST with no content type) and
    // Laravel from JSON. Bodies are read only once the call is allowed.
    let (_, writer) = w.grant("echo", &["items:read", "items:write"]).await;
    for (content_type, body) in [
        (
            Some("application/x-www-form-urlencoded"),
            "title=x&_method=DELETE",
        ),
        (None, "_method=DELETE"),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        (Some("application/json"), r#"{"_method": "DELETE"}"#),
    ] {
        let mut req = w.http.post(w.url("/echo/items")).bearer_auth(&writer);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{content_type:?}");
        assert_eq!(code(&r.text().await.unwrap()), "method_override");
    }
    assert_eq!(
        w.up.count(),
        upstream_before,
        "nothing refused reached the upstream"
    );
    // A form or JSON body without one is read and forwarded whole.
    for (content_type, body) in [
        (
            "application/json",
            r#"{"title": "_method is just text here"}"#,
        ),
        ("application/x-www-form-urlencoded", "title=x&method=y"),
    ] {
        let r = w
            .http
            .post(w.url("/echo/items"))
            .bearer_auth(&writer)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{content_type}");
        let echoed: Value = r.json().await.unwrap();
        assert_eq!(echoed["body"], body);
    }
}

async fn raw_get(w: &World, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = w.proxy_addr.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn upstream_trouble_is_a_502_never_a_crash() {
    let w = World::new().await;
    let (_, down) = w.grant("echo-down", &["items:read"]).await;
    let (st, h, body) = w.call("GET", "/echo-down/items/1", Some(&down)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
        "{body}"
    );
    assert_eq!(h["content-type"], "application/json");
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo/gzip", Some(&token)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_encoded"),
        "{body}"
    );
    assert!(body.contains("gzip"));
}

#[tokio::test]
async fn reveal_tools_are_not_proxied_and_a_missing_secret_is_a_503() {
    let w = World::new().await;
    let (_, reveal) = w.grant("echo-reveal", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo-reveal/items/1", Some(&reveal)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "not_proxied"),
        "{body}"
    );
    let (_, none) = w.grant("echo-nosecret", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo-nosecret/items/1", Some(&none)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no_secret"),
        "{body}"
    );
}

#[tokio::test]
async fn every_call_lands_once_in_the_audit_chain_without_the_secret() {
    let w = World::new().await;
    let (task, token) = w.grant("echo", &["items:read"]).await;
    let mut ids = Vec::new();
    for (method, path, tok) in [
        ("GET", "/echo/items/1?q=secretquery", Some(token.as_str())),
        ("GET", "/echo/items/2", Some(token.as_str())),
        ("POST", "/echo/items", Some(token.as_str())),
        ("GET", "/echo/items/3", None),
    ] {
        let (_, h, _) = w.call(method, path, tok).await;
        ids.push(request_id(&h));
    }
    let evs = w.wait_for_records(&ids).await;
    for id in &ids {
        let mine: Vec<&Value> = evs
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{id} chained {} times", mine.len());
    }
    let first = evs
        .iter()
        .find(|e| e["request_id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["agent"], "ci");
    assert_eq!(first["task"], task.as_str());
    assert_eq!(first["tool"], "echo");
    let detail: Value =
        mandate_testkit::serde_json::from_str(first["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["path"], "/echo/items/1");
    assert_eq!(detail["action"], "items:read");
    // Where the call came from, as the proxy's connection saw it.
    assert_eq!(detail["client"], "127.0.0.1", "{detail}");
    // Each allowed call's outcome is chained once (with its opening, or
    // after it); a denied call's record is its outcome.
    for id in &ids[..2] {
        let (_, outcome) = w.outcome(id).await;
        assert_eq!(outcome["status"], 200, "{outcome}");
        assert!(outcome["bytes"].as_u64().unwrap() > 0);
    }
    let done = w.events_of("tool.completed").await;
    assert!(
        !done
            .iter()
            .any(|e| e["request_id"] == ids[2].as_str() || e["request_id"] == ids[3].as_str()),
        "a denied call has no completion"
    );
    let denied = evs
        .iter()
        .find(|e| e["request_id"] == ids[2].as_str())
        .unwrap();
    assert_eq!(denied["decision"], "deny");
    assert!(
        denied["reasons"].to_string().contains("deny-out-of-scope"),
        "{denied}"
    );
    let anon = evs
        .iter()
        .find(|e| e["request_id"] == ids[3].as_str())
        .unwrap();
    assert_eq!(
        (anon["decision"].as_str(), anon["agent"].is_null()),
        (Some("deny"), true)
    );
    let all = Value::Array(evs).to_string();
    assert_no_secret("audit chain", &all);
    assert!(!all.contains(&token), "audit chain holds the agent's token");
    assert!(!all.contains("secretquery"), "audit chain holds the query");
}

#[tokio::test]
async fn ops_endpoints_report_health_readiness_and_metrics() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    w.call("GET", "/echo/items/1", Some(&token)).await;
    w.call("GET", "/echo/items/1", None).await;
    let r = w.http.get(w.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = w.http.get(w.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A scraper needs the metrics token (as Vault's sys/metrics needs one).
    for bearer in [None, Some("wrong"), Some("")] {
        let mut r = w.http.get(w.url("/metrics"));
        if let Some(b) = bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(code(&r.text().await.unwrap()), "unauthorized");
    }
    let text = w
        .http
        .get(w.url("/metrics"))
        .bearer_auth(support::METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"mandate_proxy_requests_total{tool="echo",class="2xx"} 1"#,
        r#"mandate_proxy_decisions_total{decision="deny",reason="missing_token"} 1"#,
        r#"decision="allow",reason="allow-in-scope""#,
        "mandate_proxy_upstream_latency_seconds_count 1",
        "mandate_proxy_revocation_feed_lag_seconds",
        "mandate_proxy_audit_spool_backlog_bytes",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[tokio::test]
async fn a_stale_broker_makes_the_proxy_refuse_and_not_ready() {
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    // A proxy whose staleness bound is 1 s, then the broker goes away.
    let p = w.replace_proxy(|c| c.staleness_secs = 1).await;
    w.proxy_addr = format!("http://{}", p.addr());
    w.proxy = Some(p);
    w.wait_ready().await;
    let (st, _, _) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK);
    w.s.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        "{body}"
    );
    assert!(body.contains("stale"), "{body}");
    let r = w.http.get(w.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    w.proxy.take().unwrap().kill().await;
}

#[tokio::test]
async fn a_rotated_secret_is_injected_without_downtime() {
    const NEW: &str = "sk_test_rotated_value_0042";
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, _) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK);
    w.s.admin_post("/v1/secrets/echo-key/rotate", json!({"value": NEW}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Every call during the switch succeeds, with one value or the other.
        let (st, h, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let auth = w.up.last().headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(auth == format!("Bearer {SECRET}") || auth == format!("Bearer {NEW}"));
        if auth == format!("Bearer {NEW}") {
            assert!(
                !body.contains(NEW) && !headers_text(&h).contains(NEW),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused_before_the_upstream() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:write"]).await;
    // A second proxy beside the first with a small body limit (own spool).
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&w.s.base, &w.proxy_token, spool.path(), 50);
    cfg.max_body_bytes = 1024;
    let small = mandate_proxy::Proxy::start(cfg)
        .await
        .expect("proxy starts");
    let url = format!("http://{}/echo/items", small.addr());
    let deadline = Instant::now() + Duration::from_secs(15);
    while w
        .http
        .get(format!("http://{}/readyz", small.addr()))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "second proxy never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_before = w.up.count();
    let post = |body: reqwest::Body| w.http.post(&url).bearer_auth(&token).body(body).send();

    // Declared too large: refused from the header alone.
    let r = post(vec![b'a'; 2048].into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&r.text().await.unwrap()), "body_too_large");
    assert_eq!(
        w.up.count(),
        seen_before,
        "the upstream saw an oversize request"
    );

    // Streamed without a length: cut off at the limit, never forwarded whole.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'b'; 512])).collect();
    let r = post(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .await
        .unwrap();
    // The rest of the body was never read: the connection is not reused.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        r.text().await
    );

    // Within the limit: forwarded, on a fresh connection.
    let r = post(vec![b'c'; 512].into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    small.stop().await;
}

#[tokio::test]
async fn dpop_bound_tokens_need_a_fresh_proof_by_their_key() {
    use mandate_token::{SigningAlg, SigningKey, dpop};
    let w = World::new().await;
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let token = w.grant_dpop("echo", &["items:read"], &key).await;
    let path = "/echo/items/7";
    let url = w.url(path);
    let now = mandate_testkit::now();
    let send = |scheme: &str, proof: Option<String>| {
        let mut r = w
            .http
            .get(&url)
            .header("authorization", format!("{scheme} {token}"));
        if let Some(p) = proof {
            r = r.header("dpop", p);
        }
        r.send()
    };
    let proof = |k: &SigningKey, method: &str, u: &str, tok: &str| {
        dpop::sign_proof(k, method, u, Some(tok), now).unwrap()
    };

    let good = proof(&key, "GET", &url, &token);
    let r = send("DPoP", Some(good.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        w.up.last().headers.get("dpop").is_none(),
        "the proof went upstream"
    );
    assert_eq!(
        w.up.last().headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );

    let other = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let cases = [
        ("replayed proof", "DPoP", Some(good), "invalid_dpop_proof"),
        ("as Bearer", "Bearer", None, "dpop_required"),
        ("no proof", "DPoP", None, "invalid_dpop_proof"),
        (
            "other key",
            "DPoP",
            Some(proof(&other, "GET", &url, &token)),
            "invalid_dpop_proof",
        ),
        (
            "other method",
            "DPoP",
            Some(proof(&key, "POST", &url, &token)),
            "invalid_dpop_proof",
        ),
        (
            "other URL",
            "DPoP",
            Some(proof(&key, "GET", &w.url("/echo/items/8"), &token)),
            "invalid_dpop_proof",
        ),
        (
            "other token",
            "DPoP",
            Some(proof(&key, "GET", &url, "another")),
            "invalid_dpop_proof",
        ),
    ];
    let seen = w.up.count();
    for (name, scheme, p, want) in cases {
        let r = send(scheme, p).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("DPoP"), "{name}: {challenge}");
        assert_eq!(code(&r.text().await.unwrap()), want, "{name}");
    }
    assert_eq!(w.up.count(), seen, "a refused call reached the upstream");

    // An unbound token cannot be presented under the DPoP scheme.
    let (_, plain) = w.grant("echo", &["items:read"]).await;
    let r = w
        .http
        .get(&url)
        .header("authorization", format!("DPoP {plain}"))
        .header("dpop", proof(&key, "GET", &url, &plain))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(&r.text().await.unwrap()), "not_dpop_bound");
}

#[tokio::test]
async fn a_private_ca_is_trusted_for_the_broker_and_https_upstreams() {
    let cert = support::TestCert::new();
    let w = World::with_tls(&cert).await;
    assert!(w.s.base.starts_with("https://") && w.up.url.starts_with("https://"));
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        w.up.last().headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );
    assert!(!body.contains(SECRET));

    // Without the CA the proxy cannot even talk to the broker: never ready.
    let spool = tempfile::tempdir().unwrap();
    let cfg = support::config(&w.s.base, &w.proxy_token, spool.path(), 50);
    let blind = mandate_proxy::Proxy::start(cfg).await.expect("starts");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = w
        .http
        .get(format!("http://{}/readyz", blind.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    blind.stop().await;
}

/// A tool's routes change at the broker; the proxy follows within its
/// catalog refresh, and a forbidden change is refused without effect.
#[tokio::test]
async fn route_changes_reach_the_proxy_and_bad_updates_change_nothing() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (st, _, _) = w.call("GET", "/echo/v2/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "no such route yet");

    let mut tool = support::tool_json("echo", &w.up.url);
    tool["routes"].as_array_mut().unwrap().push(
        json!({"method": "GET", "path": "/v2/items/{id}", "action": "items:read",
                     "resource": "item:{id}"}),
    );
    let (st, v) = w.s.put("/v1/tools/echo", Some(&w.s.root), &tool).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, body) = w.call("GET", "/echo/v2/items/1", Some(&token)).await;
        if st == StatusCode::OK {
            break;
        }
        assert_eq!(code(&body), "no_route");
        assert!(
            Instant::now() < deadline,
            "the proxy never saw the new route"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let updated =
        w.s.events()
            .await
            .into_iter()
            .find(|e| e["kind"] == "tool.updated")
            .expect("audited");
    assert!(
        updated["detail"].as_str().unwrap().contains("routes"),
        "{updated}"
    );

    // The proxy ships its calls' records on its own schedule: compare the
    // events that are not tool-call records.
    let written = || async {
        w.s.events()
            .await
            .iter()
            .filter(|e| !matches!(e["kind"].as_str(), Some("tool.invoked" | "tool.completed")))
            .count()
    };
    let before = written().await;
    for (edit, field) in [
        (json!({"audience": "https://elsewhere.test"}), "audience"),
        (
            json!({"actions": ["items:read"], "routes": [tool["routes"][0].clone()]}),
            "actions",
        ),
        (json!({"name": "other"}), "name"),
    ] {
        let mut bad = tool.clone();
        for (k, v) in edit.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (st, v) = w.s.put("/v1/tools/echo", Some(&w.s.root), &bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{field}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{v}"
        );
    }
    let (st, _) = w.s.put("/v1/tools/nope", Some(&w.s.root), &tool).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "path and body names differ");
    assert_eq!(written().await, before, "a refused update wrote something");
}

/// A policy edit at the broker reaches the proxy's decisions within its
/// catalog refresh, even for a call it has just allowed many times (its
/// reused decisions are tied to the policy set they came from).
#[tokio::test]
async fn a_policy_edit_at_the_broker_changes_the_proxys_next_decisions() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    for _ in 0..20 {
        let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    std::fs::write(
        w.s.data_dir.join("policies/freeze.cedar"),
        r#"@id("change-freeze") @reason("calls to echo are frozen")
forbid (principal, action == Mandate::Action::"invoke", resource == Mandate::Tool::"echo");"#,
    )
    .unwrap();
    let (st, v) =
        w.s.post("/v1/policy/reload", Some(&w.s.root), &json!({}))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, body) = w.call("GET", "/echo/items/1", Some(&token)).await;
        if st == StatusCode::FORBIDDEN {
            assert_eq!(code(&body), "policy_denied");
            assert!(body.contains("change-freeze"), "{body}");
            break;
        }
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(
            Instant::now() < deadline,
            "the proxy kept allowing after the freeze"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent connection that never finishes its headers, or goes quiet
/// between requests, is closed after `header_read_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_agent_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new().await;
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&w.s.base, &w.proxy_token, spool.path(), 50);
    cfg.header_read_timeout_secs = 1;
    let p = mandate_proxy::Proxy::start(cfg).await.unwrap();
    for request in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let mut c = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
        c.write_all(request).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection kept open: {request:?}");
        assert!(start.elapsed() >= Duration::from_millis(900));
    }
    // Silent from the start (HTTP/1 or 2 undecided), and HTTP/2 that says
    // hello and nothing more, not even acknowledging the shutdown ping:
    // closed after the idle second and a second's grace.
    let h2_hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for (what, hello) in [("silent", &b""[..]), ("HTTP/2 hello", &h2_hello[..])] {
        let mut c = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
        c.write_all(hello).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(n) = c.read(&mut buf).await
                && n > 0
            {}
        })
        .await;
        assert!(closed.is_ok(), "{what} connection kept open");
        assert!(start.elapsed() >= Duration::from_millis(900), "{what}");
    }
    // HTTP/2 after an answer: idle from the end of it, then told to go.
    let addr = p.addr().to_string();
    let closed = mandate_testkit::http2::answer_then_wait_for_close(
        &addr,
        "/healthz",
        Duration::from_secs(10),
    )
    .await
    .expect("an idle HTTP/2 connection kept open");
    assert!(closed.after >= Duration::from_millis(900), "{closed:?}");
    assert!(closed.goaway, "closed without GOAWAY: {closed:?}");
    p.stop().await;
}

/// The serving threads (one per core by default) end, runtimes and all,
/// when the proxy stops: a restarted proxy leaks nothing.
#[tokio::test]
async fn serving_threads_end_when_the_proxy_stops() {
    let mut w = World::new().await;
    let port = w.proxy.as_ref().unwrap().addr().port();
    let serving = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(&format!("proxy-{port}-")))
            .count()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(serving(), cores);
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let paths: Vec<String> = (0..8).map(|i| format!("/echo/items/{i}")).collect();
    let calls = paths.iter().map(|p| w.call("GET", p, Some(&token)));
    for (st, _, body) in futures::future::join_all(calls).await {
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    w.proxy.take().unwrap().stop().await;
    assert_eq!(serving(), 0, "serving threads outlived the proxy");
}

fn open_per_thread(metrics: &str) -> Vec<u64> {
    let mut open: Vec<(usize, u64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mandate_proxy_connections_open{thread=\"")?;
            let (thread, n) = rest.split_once("\"} ")?;
            Some((thread.parse().ok()?, n.trim().parse().ok()?))
        })
        .collect();
    open.sort();
    open.into_iter().map(|(_, n)| n).collect()
}

/// Connections are spread evenly over the serving threads, whichever
/// thread wins the accept, and counted until they close.
#[tokio::test]
async fn connections_are_spread_over_the_serving_threads() {
    let mut w = World::new().await;
    let p = w.replace_proxy(|c| c.worker_threads = Some(3)).await;
    let addr = p.addr();
    let mut conns = Vec::new();
    for _ in 0..9 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        keep_alive_get(&mut c, "/healthz", None).await;
        conns.push(c);
    }
    let text = keep_alive_get(&mut conns[0], "/metrics", Some(support::METRICS_TOKEN)).await;
    assert_eq!(open_per_thread(&text), [3, 3, 3], "{text}");
    // Closed connections are no longer counted.
    conns.truncate(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = keep_alive_get(&mut conns[0], "/metrics", Some(support::METRICS_TOKEN)).await;
        let open = open_per_thread(&text);
        if open.iter().sum::<u64>() == 1 {
            assert_eq!(open.len(), 3, "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed connections still counted: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conns);
    p.stop().await;
}

/// A graceful stop (SIGTERM, Ctrl-C) takes no new connection but lets the
/// call in flight finish and reach the agent.
#[tokio::test]
async fn a_graceful_stop_finishes_the_call_in_flight() {
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let addr = w.proxy.as_ref().unwrap().addr();
    let call = tokio::spawn(
        reqwest::Client::new()
            .get(w.url("/echo/items/slow"))
            .bearer_auth(&token)
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w
        .up
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.uri.ends_with("/slow"))
    {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = tokio::spawn(w.proxy.take().unwrap().stop());
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a stopping proxy still takes connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = call.await.unwrap().expect("the call in flight is answered");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("/items/slow"));
    stop.await.unwrap();
}

/// Past `max_connections` the proxy accepts nothing more: a new connection
/// waits in the listen queue and is served once another closes.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let mut w = World::new().await;
    let p = w
        .replace_proxy(|c| {
            c.worker_threads = Some(2);
            c.max_connections = 2;
        })
        .await;
    let addr = p.addr();
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep_alive_get(&mut a, "/healthz", None).await;
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep_alive_get(&mut b, "/healthz", None).await;
    let mut third = unserved_request(&addr.to_string(), "/healthz").await;
    let text = keep_alive_get(&mut a, "/metrics", Some(support::METRICS_TOKEN)).await;
    assert_eq!(open_per_thread(&text).iter().sum::<u64>(), 2, "{text}");
    assert!(
        text.contains("mandate_proxy_connection_limit_reached_total 1"),
        "{text}"
    );
    drop(b);
    served_at_last(&mut third).await;
    drop((a, third));
    p.stop().await;
}

/// Bodies read whole to be screened share `max_buffered_body_bytes`: while
/// one upload holds it, another is refused with 503 `proxy_busy` (and
/// never reaches the upstream); once the first is sent, there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screened_bodies_share_one_memory_budget() {
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:write"]).await;
    let p = w
        .replace_proxy(|c| {
            c.max_body_bytes = 64 * 1024;
            c.max_buffered_body_bytes = 64 * 1024;
        })
        .await;
    let base = format!("http://{}", p.addr());
    w.wait_ready_at(&base).await;
    let url = format!("{base}/echo/items");
    let post = |body: reqwest::Body| {
        w.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    // An upload that has sent 60 KiB and waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let mut first = Vec::from(&b"{\"a\":\""[..]);
    first.extend(vec![b'x'; 60 * 1024]);
    tx.send(Ok(first)).await.unwrap();
    let slow = tokio::spawn(
        post(reqwest::Body::wrap_stream(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) },
        )))
        .send(),
    );
    // Until the proxy holds it: a second body screened first could take
    // the room the first needs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = w
            .http
            .get(format!("{base}/metrics"))
            .bearer_auth(support::METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let held: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("mandate_proxy_buffered_body_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if held >= 60 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first upload was never held: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = w.up.count();
    let r = post(format!("{{\"b\":\"{}\"}}", "y".repeat(8 * 1024)).into())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(w.up.count(), before, "a refused body reached the upstream");
    // Its body was not read to the end: the connection goes.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let busy = r.text().await.unwrap();
    assert_eq!(code(&busy), "proxy_busy", "{busy}");
    assert!(busy.contains("max_buffered_body_bytes"), "{busy}");
    // The first upload ends: forwarded whole, and its share is given back.
    tx.send(Ok(b"\"}".to_vec())).await.unwrap();
    drop(tx);
    let first = slow.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let r = post(format!("{{\"b\":\"{}\"}}", "y".repeat(8 * 1024)).into())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    p.stop().await;
}

/// With `tool_host_suffix`, a request on `{tool}{suffix}` goes to that
/// tool with its whole path (the proxy's own `/metrics` included), is
/// checked like any other, and a DPoP proof names that host; other hosts
/// keep `/{tool}/…` routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_host_routes_to_it_with_the_whole_path() {
    use mandate_token::{SigningAlg, SigningKey, dpop};
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let p = w
        .replace_proxy(|c| c.tool_host_suffix = Some(".tools.test".into()))
        .await;
    let base = format!("http://{}", p.addr());
    w.wait_ready_at(&base).await;
    let on_host = |host: &str, path: &str, auth: &str| {
        w.http
            .get(format!("{base}{path}"))
            .header("host", host)
            .header("authorization", auth.to_owned())
    };
    let bearer = format!("Bearer {token}");
    let get = |host: &str, path: &str, auth: &str| {
        let sent = on_host(host, path, auth).send();
        async move { sent.await.unwrap() }
    };

    let r = get("echo.tools.test:8400", "/items/42?x=1", &bearer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = w.up.last();
    assert_eq!(seen.uri, "/items/42?x=1");
    assert_eq!(
        seen.headers["authorization"].to_str().unwrap(),
        format!("Bearer {SECRET}")
    );
    assert_no_secret("body", &r.text().await.unwrap());

    // The tool's host owns every path: `/metrics` is the tool's, and no
    // route rule of its matches.
    let r = get("ECHO.tools.test", "/metrics", &bearer).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&r.text().await.unwrap()), "no_route");
    // A host naming no tool.
    let r = get("other.tools.test", "/items/1", &bearer).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(&r.text().await.unwrap()), "unknown_tool");
    // Any other host: path routing as before.
    let r = get("proxy.example", "/echo/items/1", &bearer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get("proxy.example", "/healthz", "Bearer x").await;
    assert_eq!(r.status(), StatusCode::OK);

    // An absolute-form target names the host, whatever `Host` says.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
        let req = format!(
            "GET http://echo.tools.test/items/5 HTTP/1.1\r\nhost: proxy.example\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(w.up.last().uri, "/items/5");
    }

    // DPoP: the proof names the host route's URL.
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let bound = w.grant_dpop("echo", &["items:read"], &key).await;
    let now = mandate_testkit::now();
    let dpop_call = |url: &str| {
        let proof = dpop::sign_proof(&key, "GET", url, Some(&bound), now).unwrap();
        on_host("echo.tools.test", "/items/7", &format!("DPoP {bound}"))
            .header("dpop", proof)
            .send()
    };
    let r = dpop_call(&format!("{base}/echo/items/7")).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a proof for another URL"
    );
    let r = dpop_call("http://echo.tools.test/items/7").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    p.stop().await;
}

/// Over HTTP/2 a request has no `Host` header, only its `:authority`; with
/// no `public_url` configured, a DPoP proof is checked against that.
#[tokio::test]
async fn dpop_over_http2_is_checked_against_the_authority() {
    use mandate_token::{SigningAlg, SigningKey, dpop};
    let w = World::new().await;
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let token = w.grant_dpop("echo", &["items:read"], &key).await;
    let url = w.url("/echo/items/7");
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let now = mandate_testkit::now();
    for (proof_for, want) in [
        (url.clone(), StatusCode::OK),
        (w.url("/echo/items/8"), StatusCode::UNAUTHORIZED),
    ] {
        let proof = dpop::sign_proof(&key, "GET", &proof_for, Some(&token), now).unwrap();
        let req = http::Request::get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert!(req.headers().get("host").is_none());
        let answer = send.send_request(req).await.unwrap();
        assert_eq!(
            answer.status().as_u16(),
            want.as_u16(),
            "proof for {proof_for}"
        );
    }
}
