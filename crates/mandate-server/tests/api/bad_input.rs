//! Bad input gets a 4xx naming the field and changes nothing.

use mandate_testkit::serde_json::json;
use mandate_testkit::*;
use reqwest::StatusCode;

async fn event_count(s: &TestServer) -> usize {
    s.events().await.len()
}

#[tokio::test]
async fn malformed_bodies_are_rejected_with_field_names_and_nothing_written() {
    let s = TestServer::start().await;
    s.seed().await;
    let before = event_count(&s).await;
    let root = s.root.clone();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("/v1/agents", b"{not json".to_vec(), StatusCode::BAD_REQUEST, "not valid JSON"),
        ("/v1/agents", b"".to_vec(), StatusCode::BAD_REQUEST, "empty"),
        (
            "/v1/agents",
            json!({"name": "x", "owner": "platform", "environment": "staging", "colour": "red"}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "/v1/agents",
            json!({"name": "x", "owner": "platform", "environment": "prod"}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "environment",
        ),
        (
            "/v1/agents",
            json!({"name": "Bad Name", "owner": "platform", "environment": "staging"}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            "/v1/agents",
            json!({"name": "x", "owner": "nobody", "environment": "staging"}).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner",
        ),
        (
            "/v1/agents",
            json!({"name": "x", "owner": "platform", "environment": "staging", "allowed_tools": ["nope"]}).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "allowed_tools[0]",
        ),
        (
            "/v1/tools",
            json!({"name": "t", "audience": "ftp://x", "owner": "platform", "environment": "staging",
                   "sensitivity": "internal", "max_ttl_secs": 60, "actions": ["a"]}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "audience",
        ),
        (
            "/v1/tools",
            json!({"name": "t", "audience": "urn:t", "owner": "platform", "environment": "staging",
                   "sensitivity": "secret", "max_ttl_secs": 60, "actions": ["a"]}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "sensitivity",
        ),
        (
            "/v1/tools",
            json!({"name": "t", "audience": "https://api.github.com", "owner": "platform", "environment": "staging",
                   "sensitivity": "internal", "max_ttl_secs": 60, "actions": ["a"]}).to_string().into_bytes(),
            StatusCode::CONFLICT,
            "audience",
        ),
        ("/v1/agents", vec![b' '; 70 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "size limit"),
    ];
    for (path, body, status, needle) in cases {
        let (st, v) = s.post_raw(path, Some(&root), body).await;
        assert_eq!(st, status, "{path} {needle}: {v}");
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code: {v}"));
        assert!(!code.is_empty());
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{path}: `{msg}` should mention `{needle}`"
        );
    }
    assert_eq!(
        event_count(&s).await,
        before,
        "no bad request wrote anything"
    );
    let (_, agents) = s.get("/v1/agents", Some(&root)).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_ids_and_queries_are_4xx() {
    let s = TestServer::start().await;
    s.seed().await;
    let root = s.root.clone();
    for (path, status) in [
        ("/v1/tasks/not-a-task", StatusCode::BAD_REQUEST),
        (
            "/v1/tasks/task_00000000000000000000000000000000",
            StatusCode::NOT_FOUND,
        ),
        ("/v1/agents/UPPER", StatusCode::BAD_REQUEST),
        ("/v1/agents/ghost", StatusCode::NOT_FOUND),
        ("/v1/tasks?state=done", StatusCode::BAD_REQUEST),
        ("/v1/tasks?limit=abc", StatusCode::BAD_REQUEST),
        ("/v1/revocations?since=-1", StatusCode::BAD_REQUEST),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let (st, v) = s.get(path, Some(&root)).await;
        assert_eq!(st, status, "{path}: {v}");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
}

#[tokio::test]
async fn admin_rights_are_enforced() {
    let s = TestServer::start().await;
    s.seed().await;
    let (st, v) = s.get("/v1/agents", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = s.get("/v1/agents", Some("mdt_wrong")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let t = s
        .admin_post(
            "/v1/admin/tokens",
            json!({"rights": ["tools"], "description": "ci"}),
        )
        .await;
    let tools_only = t["token"].as_str().unwrap();
    assert_eq!(s.get("/v1/tools", Some(tools_only)).await.0, StatusCode::OK);
    // The right is checked before the body: a caller without it gets 403,
    // not a 400 that describes what the body should hold.
    for path in [
        "/v1/owners",
        "/v1/agents",
        "/v1/agents/bot/bindings",
        "/v1/admin/tokens",
        "/v1/secrets",
        "/v1/authorize",
        "/v1/audit/tool-invocations",
    ] {
        let (st, v) = s.post(path, Some(tools_only), &json!({})).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    let (st, v) = s.get("/v1/agents", Some(tools_only)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"].as_str().unwrap().contains("agents"));
    // And before the path: an undecodable id gets the caller without the
    // right a 403 too, not a 400 that describes the path.
    for (method, path) in [
        ("GET", "/v1/agents/%FF"),
        ("POST", "/v1/agents/%FF/revoke"),
        ("GET", "/v1/secrets/%FF"),
        ("POST", "/v1/keys/%FF/revoke"),
        ("POST", "/v1/admin/tokens/%FF/revoke"),
        ("GET", "/v1/tasks/%FF"),
        ("GET", "/v1/tasks/not-a-task-id"),
        ("POST", "/v1/tasks/not-a-task-id/revoke"),
        ("POST", "/v1/tasks/%FF/complete"),
        ("GET", "/v1/tasks/%FF/secrets/x"),
        ("POST", "/v1/tasks/%FF/credentials/db/ro"),
    ] {
        let (st, v) = if method == "GET" {
            s.get(path, Some(tools_only)).await
        } else {
            s.post(path, Some(tools_only), &json!({})).await
        };
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    let (st, _) = s
        .post(
            "/v1/admin/tokens",
            Some(tools_only),
            &json!({"rights": ["agents"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "only root mints admin tokens");
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            Some(&s.root),
            &json!({"rights": ["root"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            Some(&s.root),
            &json!({"rights": ["everything"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rights[0]")
    );
}

#[tokio::test]
async fn oauth_endpoint_errors_use_rfc6749_shape() {
    let s = TestServer::start().await;
    let (st, v) = s
        .form("/oauth/token", None, &[("grant_type", "password")])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "unsupported_grant_type");
    assert!(v["error_description"].is_string());
    let (st, v) = s.form("/oauth/token", None, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (st, v) = s
        .form(
            "/oauth/token",
            None,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("grant_type", TOKEN_EXCHANGE),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("repeated"),
        "{v}"
    );
    let (st, v) = s
        .post("/oauth/token", None, &json!({"grant_type": "x"}))
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "JSON is not a form"
    );
}

/// Every JSON route, the same three mistakes: an unknown field (named),
/// trailing bytes after the JSON value, and a body that does not say it is
/// JSON. Each is refused and nothing is written.
#[tokio::test]
async fn every_json_route_refuses_unknown_fields_trailing_bytes_and_non_json() {
    let s = TestServer::start().await;
    s.seed().await;
    let before = event_count(&s).await;
    let routes = [
        ("POST", "/v1/owners"),
        ("POST", "/v1/agents"),
        ("POST", "/v1/agents/bot/join-tokens"),
        ("POST", "/v1/agents/bot/bindings"),
        ("POST", "/v1/enroll"),
        ("POST", "/v1/tools"),
        ("PUT", "/v1/tools/github"),
        ("POST", "/v1/tasks"),
        ("POST", "/v1/secrets"),
        ("POST", "/v1/secrets/gh/rotate"),
        ("POST", "/v1/authorize"),
        ("POST", "/v1/admin/tokens"),
        ("POST", "/v1/audit/tool-invocations"),
    ];
    let http = reqwest::Client::new();
    for (method, path) in routes {
        let send = |ct: &'static str, body: &'static str| {
            http.request(method.parse().unwrap(), s.url(path))
                .bearer_auth(&s.root)
                .header("content-type", ct)
                .body(body)
                .send()
        };
        for (ct, body, status, needle) in [
            (
                "application/json",
                // Secret routes take the value out first (to wipe it early).
                if path.starts_with("/v1/secrets") {
                    r#"{"value": "v", "zzz_colour": 1}"#
                } else {
                    r#"{"zzz_colour": 1}"#
                },
                400,
                "zzz_colour",
            ),
            ("text/plain", r#"{"name": "plain"}"#, 415, "content-type"),
        ] {
            let r = send(ct, body).await.unwrap();
            let st = r.status().as_u16();
            let v: mandate_testkit::serde_json::Value = r.json().await.unwrap();
            assert_eq!(st, status, "{method} {path} {needle}: {v}");
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                msg.contains(needle) && (status == 415 || msg.contains("unknown field")),
                "{method} {path}: `{msg}` lacks `{needle}`"
            );
        }
    }
    // Bodies that would be good but for what follows them.
    for (path, body) in [
        ("/v1/owners", r#"{"name": "late"} trailing"#),
        (
            "/v1/admin/tokens",
            r#"{"rights": ["audit"]}{"rights": ["root"]}"#,
        ),
        ("/v1/agents/bot/join-tokens", r#"{"ttl_secs": 60}]"#),
    ] {
        let (st, v) = s
            .post_raw(path, Some(&s.root), body.as_bytes().to_vec())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("trailing characters"), "{path}: {msg}");
    }
    assert_eq!(
        event_count(&s).await,
        before,
        "a refused body wrote something"
    );
    let (_, owners) = s.get("/v1/owners", Some(&s.root)).await;
    assert!(!owners.to_string().contains("late"), "{owners}");
}

/// Undecodable path parameters and wrong methods get the JSON error shape
/// too; cursors past the end return nothing instead of wrapping around.
#[tokio::test]
async fn paths_methods_and_cursors_at_the_edges() {
    let s = TestServer::start().await;
    s.seed().await;
    for path in ["/v1/agents/%FF", "/v1/tasks/%C0%AF", "/v1/tools/%FF%FE"] {
        let (st, v) = s.get(path, Some(&s.root)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("path"),
            "{v}"
        );
    }
    let http = reqwest::Client::new();
    for (method, path) in [
        ("DELETE", "/v1/agents"),
        ("PATCH", "/v1/tools/github"),
        ("GET", "/oauth/token"),
    ] {
        let r = http
            .request(method.parse().unwrap(), s.url(path))
            .bearer_auth(&s.root)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let v: mandate_testkit::serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    }
    let max = u64::MAX;
    let (st, v) = s
        .get(&format!("/v1/audit/events?since={max}"), Some(&s.root))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["events"].as_array().unwrap().len(), 0, "{v}");
    let (st, v) = s.get(&format!("/v1/revocations?since={max}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["entries"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        v["next"].as_u64(),
        Some(max),
        "the cursor never moves backwards"
    );
}

#[tokio::test]
async fn oauth_oversize_body_and_zero_ttl() {
    let s = TestServer::start().await;
    s.seed().await;
    let big = "x".repeat(70 * 1024);
    let (st, v) = s
        .form(
            "/oauth/token",
            None,
            &[("grant_type", TOKEN_EXCHANGE), ("pad", &big)],
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"], "invalid_request", "{v}");
    let session = s.session("bot").await;
    let (_, task) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"], "resources": ["*"]}]),
            None,
        )
        .await;
    let task = task["id"].as_str().unwrap();
    let (st, v) = s
        .exchange(
            &session,
            task,
            "https://api.github.com",
            &[("requested_ttl", "0")],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("requested_ttl"),
        "{v}"
    );
}
