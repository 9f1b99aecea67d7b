//! An agent's model is part of its task's context: a login declares it
//! (or the agent's record does), the task records what it started under,
//! and a different model mid-task is decided by Cedar's `continue_task` —
//! by default the task is suspended, which revokes its tokens and its
//! delegated subtree; a policy can let chosen changes through.

use mandate_testkit::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const GITHUB: &str = "https://api.github.com";
const CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Log `key`'s agent in, declaring `model` fields.
async fn login(s: &TestServer, key: &AgentKey, model: &[(&str, &str)]) -> (StatusCode, Value) {
    let assertion = s.assertion(key, json!({}));
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", CLIENT_ASSERTION),
        ("client_assertion", assertion.as_str()),
    ];
    form.extend_from_slice(model);
    s.form("/oauth/token", None, &form).await
}

fn token(v: &Value) -> String {
    v["access_token"].as_str().unwrap().to_owned()
}

/// `modeler` (record: claude-sonnet-4@2025-05-14), its enrolled key, and
/// a task it started under its record's model, with one token.
async fn started(s: &TestServer) -> (AgentKey, String, String) {
    s.seed().await;
    let a = s
        .admin_post(
            "/v1/agents",
            json!({"name": "modeler", "owner": "platform", "environment": "staging",
                   "allowed_tools": ["github"], "model": "claude-sonnet-4",
                   "model_version": "2025-05-14"}),
        )
        .await;
    assert_eq!(
        a["model"],
        json!({"model": "claude-sonnet-4", "model_version": "2025-05-14"})
    );
    let key = s.enroll("modeler").await;
    let (st, v) = login(s, &key, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let session = token(&v);
    assert_eq!(claims(&session)["model_version"], "2025-05-14");
    let (st, t) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            Some(600),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["model"]["model_version"], "2025-05-14");
    let id = t["id"].as_str().unwrap().to_owned();
    let (st, v) = s.exchange(&session, &id, GITHUB, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    (key, id, token(&v))
}

#[tokio::test]
async fn a_model_version_change_suspends_the_task_and_its_subtree() {
    let s = TestServer::start().await;
    let (key, id, old) = started(&s).await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "helper", "owner": "platform", "environment": "staging",
               "allowed_tools": ["github"]}),
    )
    .await;
    let helper = s.session("helper").await;
    let (st, child) = s
        .post(
            &format!("/v1/tasks/{id}/delegate"),
            Some(&helper),
            &json!({"subject_token": old, "scope": [{"tool": "github", "actions": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{child}");

    // Bad declarations are refused at login, naming the field.
    for (form, field) in [
        (vec![("model_version", "1")], "model_version"),
        (vec![("model", "has space")], "model"),
    ] {
        let (st, v) = login(&s, &key, &form).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        assert!(
            v["error_description"].as_str().unwrap().starts_with(field),
            "{v}"
        );
    }

    // The same agent, now on a new version of its model.
    let (_, v) = login(
        &s,
        &key,
        &[
            ("model", "claude-sonnet-4"),
            ("model_version", "2025-09-01"),
        ],
    )
    .await;
    let session = token(&v);
    let (st, v) = s.exchange(&session, &id, GITHUB, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    let why = v["error_description"].as_str().unwrap();
    assert!(
        why.contains("claude-sonnet-4@2025-05-14 to claude-sonnet-4@2025-09-01"),
        "{why}"
    );
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&s.root)).await;
    assert_eq!(t["state"], "suspended");
    let (_, c) = s
        .get(
            &format!("/v1/tasks/{}", child["id"].as_str().unwrap()),
            Some(&s.root),
        )
        .await;
    assert_eq!(c["state"], "revoked");
    assert_eq!(
        s.authorize(&old, "issues:read", "repo:a/b").await["code"],
        "revoked"
    );
    let ev = s
        .events()
        .await
        .into_iter()
        .rfind(|e| e["kind"] == "task.context_changed")
        .unwrap();
    assert_eq!(
        (ev["decision"].as_str(), ev["task"].as_str()),
        (Some("deny"), Some(id.as_str()))
    );
    let d: Value = serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!(d["change"], "model");
    assert_eq!(d["policy_ids"], json!(["suspend-on-model-change"]));
}

#[tokio::test]
async fn a_policy_can_let_a_model_change_through_and_the_task_records_it() {
    let s = TestServer::start().await;
    let (key, id, _) = started(&s).await;
    // This team accepts new versions of the same model.
    let policies = mandate_policy::DEFAULT_POLICIES.replace(
        "context.change.from != context.change.to",
        "!(context.change.from like \"claude-sonnet-4@*\" && context.change.to like \"claude-sonnet-4@*\")",
    );
    std::fs::write(s.app().policy_dir.join("default.cedar"), policies).unwrap();
    let (st, v) = s.post("/v1/policy/reload", Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = login(
        &s,
        &key,
        &[
            ("model", "claude-sonnet-4"),
            ("model_version", "2025-09-01"),
        ],
    )
    .await;
    let newer = token(&v);
    let (st, v) = s.exchange(&newer, &id, GITHUB, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&s.root)).await;
    assert_eq!(
        (t["state"].as_str(), t["model"]["model_version"].as_str()),
        (Some("active"), Some("2025-09-01"))
    );
    let ev = s
        .events()
        .await
        .into_iter()
        .rfind(|e| e["kind"] == "task.context_changed")
        .unwrap();
    assert_eq!(ev["decision"], "allow");
    // Another model altogether is still stopped.
    let (_, v) = login(&s, &key, &[("model", "gpt-5")]).await;
    let (st, v) = s.exchange(&token(&v), &id, GITHUB, &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&s.root)).await;
    assert_eq!(t["state"], "suspended");
}
