//! Task scope validation and token-exchange limits over real HTTP.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use mandate_token::b64_decode;
use reqwest::StatusCode;

fn gh(actions: &[&str]) -> Value {
    json!([{"tool": "github", "actions": actions, "resources": ["repo:acme/*"]}])
}

async fn ready() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    (s, session)
}

#[tokio::test]
async fn task_scope_must_fit_agent_tools_and_tool_actions() {
    let (s, session) = ready().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "jira", "audience": "https://jira.example", "owner": "platform", "environment": "staging",
               "sensitivity": "internal", "max_ttl_secs": 60, "actions": ["tickets:read"]}),
    )
    .await;
    let cases = [
        (
            json!([{"tool": "jira", "actions": ["tickets:read"]}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].tool",
        ),
        (
            json!([{"tool": "github", "actions": ["repo:delete"]}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].actions[0]",
        ),
        (
            json!([{"tool": "vault-prod", "actions": ["secrets:read"]}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].tool",
        ),
        (json!([]), StatusCode::BAD_REQUEST, "scope"),
        (
            json!([{"tool": "github", "actions": ["issues:read"], "resources": ["a*b"]}]),
            StatusCode::BAD_REQUEST,
            "scope[0].resources[0]",
        ),
    ];
    for (scope, status, field) in cases {
        let (st, v) = s.create_task(&session, scope.clone(), None).await;
        assert_eq!(st, status, "{scope}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(field),
            "{scope}: `{msg}` should name `{field}`"
        );
    }
    let (st, v) = s
        .create_task(&session, gh(&["issues:read"]), Some(10 * 86_400))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ttl_secs")
    );
    let (_, list) = s.get("/v1/tasks", Some(&session)).await;
    assert_eq!(
        list["tasks"].as_array().unwrap().len(),
        0,
        "refused tasks are not stored"
    );
}

#[tokio::test]
async fn restricted_tool_task_waits_for_approval_and_mints_nothing() {
    let (s, session) = ready().await;
    let (st, task) = s
        .create_task(
            &session,
            json!([{"tool": "payroll", "actions": ["salaries:read"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["state"], "pending_approval");
    let (st, v) = s
        .exchange(
            &session,
            task["id"].as_str().unwrap(),
            "https://payroll.example",
            &[],
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending")),
        "{v}"
    );
    assert_eq!(v["approval_id"], task["approval"], "{v}");
}

#[tokio::test]
async fn minted_token_is_rfc9068_bound_to_task_and_tool() {
    let (s, session) = ready().await;
    let (_, task) = s
        .create_task(&session, gh(&["issues:read", "issues:write"]), Some(300))
        .await;
    let id = task["id"].as_str().unwrap();
    let (st, v) = s
        .exchange(
            &session,
            id,
            "https://api.github.com",
            &[("scope", "issues:read"), ("requested_ttl", "120")],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let token = v["access_token"].as_str().unwrap();
    let header: Value =
        serde_json::from_slice(&b64_decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());
    let c = claims(token);
    for k in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "txn",
        "scope",
        "authorization_details",
    ] {
        assert!(!c[k].is_null(), "claim {k} missing: {c}");
    }
    assert_eq!(c["aud"], "https://api.github.com");
    assert_eq!(c["txn"], id);
    assert_eq!(c["sub"], "spiffe://test.local/agent/bot");
    assert_eq!(c["scope"], "issues:read");
    assert_eq!(c["authorization_details"][0]["type"], "mandate");
    assert_eq!(
        c["authorization_details"][0]["resources"],
        json!(["repo:acme/*"])
    );
    assert_eq!(c["authorization_details"][0]["environment"], "staging");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    // The token verifies against the published JWKS.
    let (_, jwks) = s.get("/.well-known/jwks.json", None).await;
    let jwk: mandate_token::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let key = mandate_token::VerifyingKey::from_jwk(&jwk).unwrap();
    mandate_token::jwt::parse(token)
        .unwrap()
        .verify(&key)
        .unwrap();
    // And the mint is in the audit log, by jti, without the token.
    let events = s.events().await;
    let minted = events.iter().find(|e| e["kind"] == "grant.minted").unwrap();
    assert_eq!(minted["jti"], c["jti"]);
    assert!(!serde_json::to_string(&events).unwrap().contains(token));
}

#[tokio::test]
async fn ttl_is_capped_by_tool_max_and_task_remaining() {
    let (s, session) = ready().await;
    let (_, long) = s
        .create_task(&session, gh(&["issues:read"]), Some(3600))
        .await;
    let (_, v) = s
        .exchange(
            &session,
            long["id"].as_str().unwrap(),
            "https://api.github.com",
            &[],
        )
        .await;
    assert_eq!(v["expires_in"], 600, "tool max_ttl_secs caps it: {v}");
    let (_, short) = s
        .create_task(&session, gh(&["issues:read"]), Some(30))
        .await;
    let (_, v) = s
        .exchange(
            &session,
            short["id"].as_str().unwrap(),
            "https://api.github.com",
            &[("requested_ttl", "500")],
        )
        .await;
    let c = claims(v["access_token"].as_str().unwrap());
    assert!(
        c["exp"].as_i64().unwrap() <= short["deadline"].as_i64().unwrap(),
        "token outlives task: {c}"
    );
}

#[tokio::test]
async fn exchange_outside_task_scope_is_refused_with_rfc_codes() {
    let (s, session) = ready().await;
    let (_, task) = s.create_task(&session, gh(&["issues:read"]), None).await;
    let id = task["id"].as_str().unwrap();
    let gh_aud = "https://api.github.com";
    let details_other_repo = json!([{"type": "mandate", "tool": "github", "actions": ["issues:read"], "resources": ["repo:evil/x"]}]).to_string();
    let details_bad_type =
        json!([{"type": "other", "tool": "github", "actions": ["issues:read"]}]).to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (gh_aud, vec![("scope", "issues:write")], "invalid_scope"),
        ("https://vault.prod.example", vec![], "invalid_target"),
        ("https://unknown.example", vec![], "invalid_target"),
        (
            gh_aud,
            vec![("authorization_details", &details_other_repo)],
            "invalid_scope",
        ),
        (
            gh_aud,
            vec![("authorization_details", &details_bad_type)],
            "invalid_authorization_details",
        ),
        (
            gh_aud,
            vec![("authorization_details", "not json")],
            "invalid_authorization_details",
        ),
    ];
    for (resource, extra, code) in cases {
        let (st, v) = s.exchange(&session, id, resource, &extra).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{resource} {extra:?}: {v}");
        assert_eq!(v["error"], code, "{resource} {extra:?}: {v}");
    }
    // Another agent's task cannot be used.
    s.admin_post("/v1/agents", json!({"name": "other", "owner": "platform", "environment": "staging", "allowed_tools": ["github"]}))
        .await;
    let other = s.session("other").await;
    let (st, v) = s.exchange(&other, id, gh_aud, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let refused = s
        .events()
        .await
        .iter()
        .filter(|e| e["kind"] == "grant.refused")
        .count();
    assert_eq!(refused, 7, "every refused exchange is audited");
}

#[tokio::test]
async fn token_after_task_completion_is_refused() {
    let (s, session) = ready().await;
    let (_, task) = s.create_task(&session, gh(&["issues:read"]), None).await;
    let id = task["id"].as_str().unwrap();
    let (_, v) = s
        .exchange(&session, id, "https://api.github.com", &[])
        .await;
    let token = v["access_token"].as_str().unwrap().to_owned();
    let (st, done) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            Some(&session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed");
    let (st, v) = s
        .exchange(&session, id, "https://api.github.com", &[])
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:acme/x").await["decision"],
        "deny"
    );
}

#[tokio::test]
async fn overdue_task_is_expired_by_the_sweeper() {
    let (s, session) = ready().await;
    let (_, task) = s.create_task(&session, gh(&["issues:read"]), Some(1)).await;
    let id = task["id"].as_str().unwrap();
    let mut state = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state = s.get(&format!("/v1/tasks/{id}"), Some(&session)).await.1["state"].clone();
        if state == "expired" {
            break;
        }
    }
    assert_eq!(state, "expired");
    assert!(
        s.events()
            .await
            .iter()
            .any(|e| e["kind"] == "task.expired" && e["task"] == id)
    );
}
