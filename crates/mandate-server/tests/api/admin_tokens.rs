//! Admin tokens: listed without secrets, revoked at once and for good.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["admin_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[tokio::test]
async fn a_revoked_admin_token_fails_on_its_next_use_even_after_restart() {
    let s = TestServer::start().await;
    s.seed().await;
    let created = s
        .admin_post(
            "/v1/admin/tokens",
            json!({"rights": ["tools"], "description": "ci deploys"}),
        )
        .await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(s.get("/v1/tools", Some(&token)).await.0, StatusCode::OK);

    let (st, list) = s.get("/v1/admin/tokens", Some(&s.root)).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let listed = find(&list, &id);
    assert_eq!(listed["live"], true);
    assert_eq!(listed["description"], "ci deploys");
    let text = list.to_string();
    assert!(!text.contains(&token) && !text.contains("hash"), "{text}");

    // Only root revokes; the tools token cannot revoke itself either.
    let path = format!("/v1/admin/tokens/{id}/revoke");
    let (st, _) = s.post(&path, Some(&token), &json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s.post(&path, Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].as_i64().is_some(), "{v}");

    let (st, v) = s.get("/v1/tools", Some(&token)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let (st, v) = s.post(&path, Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "revoking twice: {v}");

    let ev = s
        .events()
        .await
        .into_iter()
        .find(|e| e["kind"] == "admin_token.revoked")
        .expect("audited");
    assert!(
        ev["actor"].as_str().unwrap().starts_with("admin:adm_"),
        "{ev}"
    );
    assert!(ev["detail"].as_str().unwrap().contains(&id), "{ev}");

    let s = s.restart().await;
    let (st, _) = s.get("/v1/tools", Some(&token)).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "revocation survives a restart"
    );
    let (_, list) = s.get("/v1/admin/tokens", Some(&s.root)).await;
    assert_eq!(find(&list, &id)["live"], false);
}

#[tokio::test]
async fn the_last_root_token_and_bad_ids_are_refused_without_a_change() {
    let s = TestServer::start().await;
    let (_, list) = s.get("/v1/admin/tokens", Some(&s.root)).await;
    let root_id = list["admin_tokens"][0]["id"].as_str().unwrap().to_owned();
    let before = s.events().await.len();
    let (st, v) = s
        .post(
            &format!("/v1/admin/tokens/{root_id}/revoke"),
            Some(&s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "refused");
    for (id, want) in [
        ("nope", StatusCode::BAD_REQUEST),
        ("adm_0000000000000000", StatusCode::NOT_FOUND),
    ] {
        let (st, v) = s
            .post(
                &format!("/v1/admin/tokens/{id}/revoke"),
                Some(&s.root),
                &json!({}),
            )
            .await;
        assert_eq!(st, want, "{id}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(s.events().await.len(), before, "a refusal wrote nothing");
    assert_eq!(s.get("/v1/agents", Some(&s.root)).await.0, StatusCode::OK);
}
