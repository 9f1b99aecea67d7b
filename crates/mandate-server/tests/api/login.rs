//! Workload login over real HTTP: federated JWTs, join-token enrolment and
//! private_key_jwt, with the attacks each must refuse.

use mandate_server::config::IssuerConfig;
use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use mandate_token::{SigningAlg, SigningKey, b64};
use reqwest::StatusCode;

const ISS: &str = "https://k8s.example/cluster-1";

async fn federated() -> (TestServer, TestIssuer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::new(dir.path(), ISS, SigningAlg::Es256);
    let jwks = issuer.jwks_file.clone();
    let s = TestServer::start_with(move |c| {
        c.issuers = vec![IssuerConfig {
            issuer: ISS.into(),
            jwks_file: Some(jwks.clone()),
            jwks_url: None,
            audiences: vec!["mandate".into()],
            refresh_secs: 300,
        }]
    })
    .await;
    s.seed().await;
    s.admin_post(
        "/v1/agents/bot/bindings",
        json!({"issuer": ISS, "subject": "system:serviceaccount:ci:bot", "claims": {"namespace": "ci"}}),
    )
    .await;
    (s, issuer, dir)
}

fn workload_claims() -> Value {
    let t = now();
    json!({"iss": ISS, "sub": "system:serviceaccount:ci:bot", "aud": "mandate", "exp": t + 300, "iat": t, "namespace": "ci"})
}

async fn jwt_login(s: &TestServer, token: &str) -> (StatusCode, Value) {
    s.form(
        "/oauth/token",
        None,
        &[("grant_type", JWT_BEARER), ("assertion", token)],
    )
    .await
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

#[tokio::test]
async fn federated_workload_jwt_logs_in_as_the_bound_agent() {
    let (s, issuer, _d) = federated().await;
    let (st, v) = jwt_login(&s, &issuer.token(workload_claims())).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_i64().unwrap() <= 900);
    // The session identifies the agent but grants no tool access.
    let session = v["access_token"].as_str().unwrap();
    let d = s.authorize(session, "issues:read", "repo:x").await;
    assert_eq!(d["decision"], "deny");
}

#[tokio::test]
async fn federated_login_refuses_expired_wrong_aud_wrong_issuer_and_unbound() {
    let (s, issuer, d) = federated().await;
    let t = now();
    let cases = [
        (
            "expired",
            issuer.token(with(workload_claims(), "exp", json!(t - 120))),
        ),
        (
            "wrong aud",
            issuer.token(with(workload_claims(), "aud", json!("someone-else"))),
        ),
        (
            "not yet valid",
            issuer.token(with(workload_claims(), "nbf", json!(t + 600))),
        ),
        (
            "claim mismatch",
            issuer.token(with(workload_claims(), "namespace", json!("prod"))),
        ),
        (
            "unbound subject",
            issuer.token(with(
                workload_claims(),
                "sub",
                json!("system:serviceaccount:ci:other"),
            )),
        ),
        (
            "untrusted issuer",
            issuer.token(with(
                workload_claims(),
                "iss",
                json!("https://evil.example"),
            )),
        ),
        (
            "right iss, other key",
            TestIssuer::new(d.path(), ISS, SigningAlg::Es256).token(workload_claims()),
        ),
    ];
    for (name, token) in cases {
        let (st, v) = jwt_login(&s, &token).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name}: {v}");
        assert_eq!(v["error"], "invalid_grant", "{name}: {v}");
        assert!(v["error_description"].as_str().unwrap().len() > 5, "{name}");
    }
    let failed = s
        .events()
        .await
        .iter()
        .filter(|e| e["kind"] == "login.failed")
        .count();
    assert_eq!(failed, 7, "every refused login is audited");
}

/// RFC 9864: current JOSE libraries sign Ed25519 client assertions as
/// `alg: Ed25519`; they log in as `EdDSA` ones do.
#[tokio::test]
async fn a_client_assertion_signed_as_ed25519_logs_in() {
    let s = TestServer::start().await;
    s.seed().await;
    let key = s.enroll("bot").await;
    let plain = s.assertion(&key, json!({}));
    let claims = mandate_testkit::claims(&plain);
    let header = mandate_token::jwt::Header::new(
        "Ed25519",
        "client-authentication+jwt",
        Some(key.key.kid.clone()),
        None,
    );
    let named = mandate_token::jwt::encode_with_header(&key.key, &header, &claims).unwrap();
    let (st, v) = s.login_with_assertion(&named).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["access_token"].is_string(), "{v}");
}

#[tokio::test]
async fn alg_none_and_hs256_key_confusion_are_refused() {
    let (s, issuer, _d) = federated().await;
    let header = |alg: &str| {
        b64(json!({"alg": alg, "typ": "JWT", "kid": issuer.key.kid})
            .to_string()
            .as_bytes())
    };
    let payload = b64(workload_claims().to_string().as_bytes());
    let none = format!("{}.{payload}.", header("none"));
    let (st, v) = jwt_login(&s, &none).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    // HS256 keyed with the issuer's public JWK bytes: the classic confusion.
    let signing_input = format!("{}.{payload}", header("HS256"));
    let secret = serde_json::to_vec(issuer.key.public_jwk()).unwrap();
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        signing_input.as_bytes(),
    );
    let forged = format!("{signing_input}.{}", b64(mac.as_ref()));
    let (st, v) = jwt_login(&s, &forged).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error_description"].as_str().unwrap().contains("HS256"),
        "{v}"
    );
}

#[tokio::test]
async fn unknown_kid_triggers_a_jwks_refresh() {
    let (s, _issuer, d) = federated().await;
    // The issuer rotates: a new key appears in its JWKS file after the broker cached the old set.
    let rotated = TestIssuer::new(d.path(), ISS, SigningAlg::EdDsa);
    let old_file = s.app().settings.raw.issuers[0].jwks_file.clone().unwrap();
    std::fs::copy(&rotated.jwks_file, &old_file).unwrap();
    let (st, v) = jwt_login(&s, &rotated.token(workload_claims())).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// An issuer serving its JWKS over HTTP withdraws a key: once the broker's
/// copy is older than `refresh_secs`, tokens signed with the withdrawn key
/// are refused, and the key that replaced it works.
#[tokio::test]
async fn a_key_withdrawn_from_a_jwks_url_stops_being_trusted() {
    use std::sync::{Arc, Mutex};
    let d = tempfile::tempdir().unwrap();
    let old = TestIssuer::new(d.path(), ISS, SigningAlg::Es256);
    let new = TestIssuer::new(d.path(), ISS, SigningAlg::EdDsa);
    let served = Arc::new(Mutex::new(json!({"keys": [old.key.public_jwk()]})));
    let jwks_app = {
        let served = served.clone();
        axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let v = served.lock().unwrap().clone();
                async move { axum::Json(v) }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, jwks_app).await.unwrap() });
    let s = TestServer::start_with(move |c| {
        c.issuers = vec![IssuerConfig {
            issuer: ISS.into(),
            jwks_file: None,
            jwks_url: Some(url.clone()),
            audiences: vec!["mandate".into()],
            refresh_secs: 1,
        }]
    })
    .await;
    s.seed().await;
    s.admin_post(
        "/v1/agents/bot/bindings",
        json!({"issuer": ISS, "subject": "system:serviceaccount:ci:bot"}),
    )
    .await;
    let (st, v) = jwt_login(&s, &old.token(workload_claims())).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    *served.lock().unwrap() = json!({"keys": [new.key.public_jwk()]});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, v) = jwt_login(&s, &old.token(workload_claims())).await;
        if st != StatusCode::OK {
            assert_eq!(v["error"], "invalid_grant", "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the withdrawn key is still trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (st, v) = jwt_login(&s, &new.token(workload_claims())).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn join_token_enrols_once_then_private_key_jwt_logs_in() {
    let s = TestServer::start().await;
    s.seed().await;
    let jt = s
        .admin_post("/v1/agents/bot/join-tokens", json!({"ttl_secs": 60}))
        .await;
    let (key, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
    let body = json!({"join_token": jt["join_token"], "jwk": key.public_jwk()});
    let (st, v) = s.post("/v1/enroll", None, &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["client_id"], "spiffe://test.local/agent/bot");
    // Reusing the join token fails.
    let (st, v) = s.post("/v1/enroll", None, &body).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "invalid_join_token");
    let agent = AgentKey {
        client_id: "spiffe://test.local/agent/bot".into(),
        key,
    };
    let (st, v) = s
        .login_with_assertion(&s.assertion(&agent, json!({})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn join_token_ttl_is_capped_at_one_hour_and_never_stored_in_clear() {
    let s = TestServer::start().await;
    s.seed().await;
    let (st, v) = s
        .post(
            "/v1/agents/bot/join-tokens",
            Some(&s.root),
            &json!({"ttl_secs": 3601}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ttl_secs")
    );
    let jt = s.admin_post("/v1/agents/bot/join-tokens", json!({})).await;
    let secret = jt["join_token"].as_str().unwrap();
    let db = std::fs::read(s.data_dir.join("mandate.db")).unwrap();
    let wal = std::fs::read(s.data_dir.join("mandate.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "join token stored in clear"
        );
    }
}

#[tokio::test]
async fn client_assertion_replay_and_bad_claims_are_refused() {
    let s = TestServer::start().await;
    s.seed().await;
    let k = s.enroll("bot").await;
    let a = s.assertion(&k, json!({}));
    assert_eq!(s.login_with_assertion(&a).await.0, StatusCode::OK);
    let (st, v) = s.login_with_assertion(&a).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "replay: {v}");
    assert!(
        v["error_description"].as_str().unwrap().contains("replay"),
        "{v}"
    );
    let t = now();
    let (other, _) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
    let impostor = AgentKey {
        client_id: k.client_id.clone(),
        key: other,
    };
    let cases = [
        (
            "wrong aud",
            s.assertion(&k, json!({"aud": "https://elsewhere.example/token"})),
        ),
        (
            "expired",
            s.assertion(&k, json!({"exp": t - 60, "iat": t - 120})),
        ),
        ("too long-lived", s.assertion(&k, json!({"exp": t + 3601}))),
        // Extreme numbers must be refused, not overflow past the checks.
        (
            "iat i64::MIN",
            s.assertion(&k, json!({"exp": 32503680000_i64, "iat": i64::MIN})),
        ),
        ("exp i64::MAX", s.assertion(&k, json!({"exp": i64::MAX}))),
        ("no jti", s.assertion(&k, json!({"jti": null}))),
        (
            "sub differs",
            s.assertion(&k, json!({"sub": "spiffe://test.local/agent/other"})),
        ),
        ("other key", s.assertion(&impostor, json!({}))),
    ];
    for (name, a) in cases {
        let (st, v) = s.login_with_assertion(&a).await;
        assert!(st.is_client_error(), "{name}: {st} {v}");
        assert!(
            matches!(
                v["error"].as_str(),
                Some("invalid_client" | "invalid_grant")
            ),
            "{name}: {v}"
        );
    }
}

#[tokio::test]
async fn session_is_not_an_access_token_and_vice_versa() {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (task, access) = s.read_grant(&session).await;
    let access = access.as_str();
    // An access token cannot act as a session (typ differs).
    let (st, _) = s.get("/v1/tasks", Some(access)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .exchange(access, &task, "https://api.github.com", &[])
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

/// A client address that keeps failing at the token endpoint is refused
/// with 429 `slow_down` before anything is verified or audited, so garbage
/// cannot fill the audit log; one `client.throttled` event marks it.
#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_not_audited_each() {
    let s = TestServer::start_with(|c| {
        c.token_failure_burst = 5;
        c.token_failures_per_minute = 600; // one back every 100 ms
    })
    .await;
    s.seed().await;
    for i in 0..5 {
        let (st, v) = jwt_login(&s, &format!("garbage-{i}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }
    for _ in 0..20 {
        let r = reqwest::Client::new()
            .post(s.url("/oauth/token"))
            .form(&[("grant_type", JWT_BEARER), ("assertion", "garbage")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "slow_down", "{v}");
        assert!(v["error_description"].as_str().unwrap().contains("retry"));
    }
    // Even a good login from this address waits (the budget is per address).
    let key = s.enroll("bot").await;
    let (st, _) = s.login_with_assertion(&s.assertion(&key, json!({}))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let events = s.events().await;
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(
        count("login.failed"),
        5,
        "refused requests are not audited one by one"
    );
    assert_eq!(count("client.throttled"), 1);
    // The allowance comes back with time; success costs nothing.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    for _ in 0..3 {
        let (st, v) = s.login_with_assertion(&s.assertion(&key, json!({}))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
}

/// A failed login from `client` as the reverse proxy reports it.
async fn garbage_via(s: &TestServer, forwarded_for: &str) -> StatusCode {
    reqwest::Client::new()
        .post(s.url("/oauth/token"))
        .header("x-forwarded-for", forwarded_for)
        .form(&[("grant_type", JWT_BEARER), ("assertion", "garbage")])
        .send()
        .await
        .unwrap()
        .status()
}

/// Behind a trusted reverse proxy each client has its own allowance; from
/// an untrusted peer the header is ignored, so rotating it gains nothing.
#[tokio::test]
async fn the_throttle_counts_the_client_a_trusted_proxy_names_and_only_then() {
    let behind = TestServer::start_with(|c| {
        c.token_failure_burst = 3;
        c.token_failures_per_minute = 1;
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            garbage_via(&behind, "198.51.100.7").await,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        garbage_via(&behind, "198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A spoofed entry left of what the proxy appended changes nothing.
    assert_eq!(
        garbage_via(&behind, "203.0.113.1, 198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        garbage_via(&behind, "198.51.100.8").await,
        StatusCode::BAD_REQUEST,
        "another client behind the same proxy is not throttled"
    );
    let events = behind.events().await;
    let throttled: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "client.throttled")
        .collect();
    assert_eq!(throttled.len(), 1);
    assert!(
        throttled[0]["detail"]
            .as_str()
            .unwrap()
            .contains("198.51.100.7")
    );

    let direct = TestServer::start_with(|c| {
        c.token_failure_burst = 3;
        c.token_failures_per_minute = 1;
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            garbage_via(&direct, &format!("198.51.100.{i}")).await,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        garbage_via(&direct, "198.51.100.99").await,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted peer cannot pick its own bucket"
    );
}

/// With `forwarding_header = "forwarded"` the RFC 7239 header names the
/// client, and `X-Forwarded-For` (which the proxy would pass through from
/// the client) is ignored.
#[tokio::test]
async fn a_proxy_that_writes_rfc7239_forwarded_is_read_by_that_header_only() {
    let s = TestServer::start_with(|c| {
        c.token_failure_burst = 1;
        c.token_failures_per_minute = 1;
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.forwarding_header = mandate_server::config::ForwardingHeader::Forwarded;
    })
    .await;
    let via = |forwarded: &'static str, xff: &'static str| {
        let url = s.url("/oauth/token");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("forwarded", forwarded)
                .header("x-forwarded-for", xff)
                .form(&[("grant_type", JWT_BEARER), ("assertion", "garbage")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let a = "for=198.51.100.7;proto=https";
    assert_eq!(via(a, "203.0.113.1").await, StatusCode::BAD_REQUEST);
    // Same client by Forwarded, another by X-Forwarded-For: still throttled.
    assert_eq!(via(a, "203.0.113.2").await, StatusCode::TOO_MANY_REQUESTS);
    // Another client by Forwarded has its own allowance.
    let b = "for=\"[2001:db8::7]:4711\"";
    assert_eq!(via(b, "203.0.113.1").await, StatusCode::BAD_REQUEST);
    let e = mandate_server::Config::load(None, |k| {
        (k == "MANDATE_FORWARDING_HEADER").then(|| "x-real-ip".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("MANDATE_FORWARDING_HEADER"), "{e}");
}

#[test]
fn trusted_proxies_are_checked_by_name() {
    let cfg = mandate_server::Config {
        trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.starts_with("trusted_proxies[1]"), "{e}");
    let env = mandate_server::Config::load(None, |k| {
        (k == "MANDATE_TRUSTED_PROXIES").then(|| "10.0.0.0/8, 192.0.2.7".to_owned())
    })
    .unwrap();
    assert_eq!(env.trusted_proxies, ["10.0.0.0/8", "192.0.2.7"]);
}

#[test]
fn throttle_settings_are_checked() {
    let cfg = mandate_server::Config {
        token_failure_burst: 10,
        token_failures_per_minute: 0,
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("token_failures_per_minute"), "{e}");
    let off = mandate_server::Config {
        token_failure_burst: 0,
        token_failures_per_minute: 0,
        ..Default::default()
    };
    assert!(off.validate().is_ok(), "0 turns it off");
}
