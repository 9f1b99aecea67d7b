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
    let (st, v) = s.get("/v1/agents", Some(tools_only)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"].as_str().unwrap().contains("agents"));
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
