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

fn kid_of(token: &str) -> String {
    let header = mandate_token::b64_decode(token.split('.').next().unwrap()).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn published(s: &TestServer) -> Vec<String> {
    let (_, jwks) = s.get("/.well-known/jwks.json", None).await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// A leaked key: `keys revoke` withdraws it at once, not when its window
/// ends, for the broker's own checks (cached ones too) and across restarts.
#[tokio::test]
async fn a_withdrawn_key_stops_every_token_it_signed_at_once_and_for_good() {
    let s = TestServer::start().await;
    s.seed().await;
    let old_session = s.session("bot").await;
    let (task, old_token) = s.read_grant(&old_session).await;
    let old = kid_of(&old_token);
    // Verified once, so it sits in the broker's verified-token cache.
    assert_eq!(
        s.authorize(&old_token, "issues:read", "r").await["decision"],
        "allow"
    );

    // The current key is refused; bad, unknown, unauthorised: nothing changes.
    let revoke = |kid: &str| format!("/v1/keys/{kid}/revoke");
    let (st, v) = s.post(&revoke(&old), Some(&s.root), &json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("key_in_use")),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("rotate"));
    let (st, _) = s
        .post(&revoke("no-such-key"), Some(&s.root), &json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s.post(&revoke("a%2Fb"), Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("kid"));
    let (st, _) = s.post("/v1/keys/rotate", Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let tasks_only = s.admin_token(&["tasks"]).await;
    let (st, _) = s.post(&revoke(&old), Some(&tasks_only), &json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        published(&s).await.contains(&old),
        "retired key still published"
    );
    assert!(!s.events().await.iter().any(|e| e["kind"] == "key.revoked"));

    let (st, v) = s.post(&revoke(&old), Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["tokens_expire_by"].as_i64().unwrap() > now());
    refused_everywhere(&s, &old, &old_token, &old_session, &task).await;
    let (_, feed) = s.get("/v1/revocations", None).await;
    assert!(
        feed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "key" && e["id"] == old.as_str()),
        "{feed}"
    );
    let ev: Vec<_> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "key.revoked")
        .collect();
    assert_eq!(ev.len(), 1);
    assert!(ev[0]["detail"].as_str().unwrap().contains(&old));
    assert!(
        !files_under(&s.data_dir.join("keys"))
            .iter()
            .any(|p| p.to_string_lossy().contains(&old)),
        "withdrawn private key left on disk"
    );

    let s = s.restart().await;
    refused_everywhere(&s, &old, &old_token, &old_session, &task).await;
}

/// Every use of the withdrawn key's tokens fails; the new key works.
async fn refused_everywhere(
    s: &TestServer,
    old: &str,
    old_token: &str,
    old_session: &str,
    task: &str,
) {
    assert!(
        !published(s).await.iter().any(|k| k == old),
        "withdrawn key still in the JWKS"
    );
    let d = s.authorize(old_token, "issues:read", "r").await;
    assert_eq!(d["decision"], "deny", "{d}");
    let (_, i) = s
        .form("/oauth/introspect", Some(&s.root), &[("token", old_token)])
        .await;
    assert_eq!(i["active"], false, "{i}");
    let (st, v) = s
        .exchange(old_session, task, "https://api.github.com", &[])
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    // A new login signs with the new key and works.
    let session = s.session("bot").await;
    let (_, token) = s.read_grant(&session).await;
    assert_ne!(kid_of(&token), old);
    assert_eq!(
        s.authorize(&token, "issues:read", "r").await["decision"],
        "allow"
    );
}

/// A crash between the durable feed entry and the withdrawal: the next
/// start withdraws the key the feed lists.
#[tokio::test]
async fn a_key_the_feed_lists_is_withdrawn_at_start() {
    use mandate_audit::{EventKind, NewEvent};
    use mandate_core::RevocationKind;
    let s = TestServer::start().await;
    s.seed().await;
    let (_, token) = s.read_grant(&s.session("bot").await).await;
    let old = kid_of(&token);
    let (st, _) = s.post("/v1/keys/rotate", Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let ev = NewEvent::new(EventKind::KeyRevoked, "admin:test");
    s.app()
        .store
        .revoke_by_id(RevocationKind::Key, &old, now() + 3600, now(), ev)
        .await
        .unwrap();
    assert!(
        published(&s).await.contains(&old),
        "written behind the app's back"
    );
    let s = s.restart().await;
    assert!(!published(&s).await.contains(&old));
    assert_eq!(
        s.authorize(&token, "issues:read", "r").await["decision"],
        "deny"
    );
}
