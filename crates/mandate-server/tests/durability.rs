//! Restart keeps every state; the audit chain verifies across restarts.

use mandate_testkit::serde_json::json;
use mandate_testkit::*;
use reqwest::StatusCode;

#[tokio::test]
async fn restart_keeps_agents_tools_tasks_grants_revocations_keys_and_chain() {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (id, token) = s.read_grant(&session).await;
    let (_, v) = s
        .exchange(&session, &id, "https://api.github.com", &[])
        .await;
    let revoked = v["access_token"].as_str().unwrap().to_owned();
    s.form("/oauth/revoke", Some(&session), &[("token", &revoked)])
        .await;
    let (_, jwks_before) = s.get("/.well-known/jwks.json", None).await;
    let events_before = s.events().await.len();

    let s = s.restart().await;
    let (_, jwks_after) = s.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks_before, jwks_after, "signing keys survive");
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:x").await["decision"],
        "allow",
        "token still valid"
    );
    assert_eq!(
        s.authorize(&revoked, "issues:read", "repo:x").await["decision"],
        "deny",
        "revocation survives"
    );
    let (st, t) = s.get(&format!("/v1/tasks/{id}"), Some(&s.root)).await;
    assert_eq!((st, t["state"].as_str()), (StatusCode::OK, Some("active")));
    let (_, agents) = s.get("/v1/agents", Some(&s.root)).await;
    assert_eq!(agents["agents"][0]["name"], "bot");
    assert!(
        agents["agents"][0]["enrolled_key"].is_object(),
        "enrolled key survives"
    );
    let events = s.events().await;
    assert!(events.len() > events_before);
    let parsed: Vec<mandate_audit::Event> = events
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    mandate_audit::verify_chain(parsed).expect("chain intact across restart");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (_, task) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            None,
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let (_, v) = s
        .exchange(&session, id, "https://api.github.com", &[])
        .await;
    let old_token = v["access_token"].as_str().unwrap().to_owned();
    let (st, r) = s.post("/v1/keys/rotate", Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (_, jwks) = s.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "old key still published"
    );
    assert_eq!(
        s.authorize(&old_token, "issues:read", "r").await["decision"],
        "allow"
    );
    let (_, v) = s
        .exchange(&session, id, "https://api.github.com", &[])
        .await;
    let header: serde_json::Value = serde_json::from_slice(
        &mandate_token::b64_decode(
            v["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], r["kid"]);
}
