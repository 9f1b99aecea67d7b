//! Policies are files in the data dir: edits take effect without a restart,
//! and an edit that does not validate is refused while the old set stays.

use mandate_testkit::serde_json::json;
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn policy_edit_is_hot_reloaded_and_a_bad_edit_keeps_the_old_set() {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (_, token) = s.read_grant(&session).await;
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:x").await["decision"],
        "allow"
    );

    let dir = s.data_dir.join("policies");
    std::fs::write(
        dir.join("freeze.cedar"),
        r#"@id("change-freeze") @reason("writes and reads to github are frozen")
forbid (principal, action == Mandate::Action::"invoke", resource == Mandate::Tool::"github");"#,
    )
    .unwrap();
    let mut decision = json!(null);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        decision = s.authorize(&token, "issues:read", "repo:x").await;
        if decision["decision"] == "deny" {
            break;
        }
    }
    assert!(
        decision["reasons"].to_string().contains("change-freeze"),
        "{decision}"
    );

    // A broken edit is refused by the explicit reload, and the freeze stays in force.
    std::fs::write(
        dir.join("freeze.cedar"),
        "forbid (principal, action, resource) when { principal.colour };",
    )
    .unwrap();
    let (st, v) = s.post("/v1/policy/reload", Some(&s.root), &json!({})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("freeze.cedar"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = s.authorize(&token, "issues:read", "repo:x").await;
    assert!(
        still["reasons"].to_string().contains("change-freeze"),
        "{still}"
    );
    // The watcher saw the broken file too: refused, and on the record.
    let rejected: Vec<_> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "policy.rejected")
        .collect();
    assert!(
        rejected
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("freeze.cedar")),
        "{rejected:?}"
    );
    let (_, info) = s.get("/v1/policy", Some(&s.root)).await;
    assert!(
        info["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&json!("change-freeze"))
    );
}
