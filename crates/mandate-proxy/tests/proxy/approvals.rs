//! A request policy holds for a person, through the real proxy and a real
//! upstream: refused `approval_pending` with the approval to wait on and
//! never forwarded; once approved, forwarded exactly once; once denied,
//! refused for good. The broker's `/v1/authorize` answers the same. A
//! break-glass task's calls skip the hold and are flagged in the proxy's
//! records.

use crate::support;

use mandate_testkit::serde_json::{Value, json};
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::{SECRET, World, code, tool_json};

fn body(text: &str) -> Value {
    mandate_testkit::serde_json::from_str(text).unwrap()
}

/// A restricted tool `ledger` behind the proxy; agent `payer` allowed it,
/// with an approved task on it and a token for reading and writing.
async fn approved(w: &World) -> String {
    let mut tool = tool_json("ledger", &w.up.url);
    tool["sensitivity"] = json!("restricted");
    w.s.admin_post("/v1/tools", tool).await;
    w.s.admin_post(
        "/v1/secrets",
        json!({"name": "ledger-key", "tool": "ledger", "class": "tool",
               "owner": "platform", "value": SECRET}),
    )
    .await;
    w.s.admin_post(
        "/v1/agents",
        json!({"name": "payer", "owner": "platform", "environment": "staging",
               "allowed_tools": ["ledger"]}),
    )
    .await;
    let session = w.s.session("payer").await;
    let (st, task) =
        w.s.create_task(
            &session,
            json!([{"tool": "ledger", "actions": ["items:read", "items:write"]}]),
            Some(600),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "held for a person: {task}");
    let apr = task["approval"].as_str().unwrap();
    w.s.admin_post(&format!("/v1/approvals/{apr}/approve"), json!({}))
        .await;
    let (st, v) =
        w.s.exchange(
            &session,
            task["id"].as_str().unwrap(),
            "https://ledger.test",
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    // Until the proxy's catalog has the tool, it answers `unknown_tool`.
    let deadline = Instant::now() + Duration::from_secs(15);
    while code(&w.call("GET", "/ledger/items/1", Some(&token)).await.2) == "unknown_tool" {
        assert!(Instant::now() < deadline, "the proxy never saw `ledger`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token
}

#[tokio::test]
async fn a_held_request_waits_for_a_person_and_passes_exactly_once() {
    let w = World::new().await;
    let token = approved(&w).await;

    let (st, _, text) = w.call("GET", "/ledger/items/1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "reads are not held: {text}");
    let forwarded = w.up.count();

    let (st, _, text) = w.call("POST", "/ledger/items", Some(&token)).await;
    let refused = body(&text);
    assert_eq!(
        (st, code(&text).as_str()),
        (StatusCode::FORBIDDEN, "approval_pending"),
        "{text}"
    );
    let apr = refused["error"]["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        w.up.count(),
        forwarded,
        "a held request never reaches the upstream"
    );

    // The broker's answer for the same token and request: the same code
    // and the same approval request.
    let v =
        w.s.post(
            "/v1/authorize",
            Some(&w.s.root),
            &json!({"token": token, "audience": "https://ledger.test",
                    "action": "items:write", "resource": "item:new"}),
        )
        .await
        .1;
    assert_eq!(
        (&v["code"], &v["approval_id"]),
        (&json!("approval_pending"), &json!(apr)),
        "{v}"
    );

    w.s.admin_post(&format!("/v1/approvals/{apr}/approve"), json!({}))
        .await;
    let (st, _, text) = w.call("POST", "/ledger/items", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "approved once: {text}");
    assert_eq!(w.up.count(), forwarded + 1);
    let auth = w.up.last().headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(auth.contains(SECRET), "injected as usual");

    let (st, _, text) = w.call("POST", "/ledger/items", Some(&token)).await;
    assert_eq!(
        (st, code(&text).as_str()),
        (StatusCode::FORBIDDEN, "approval_pending"),
        "spent: {text}"
    );
    let next = body(&text)["error"]["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next, apr);
    let (st, _) =
        w.s.post(
            &format!("/v1/approvals/{next}/deny"),
            Some(&w.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..2 {
        let (st, _, text) = w.call("POST", "/ledger/items", Some(&token)).await;
        assert_eq!(
            (st, code(&text).as_str()),
            (StatusCode::FORBIDDEN, "approval_denied"),
            "{text}"
        );
        assert_eq!(body(&text)["error"]["approval_id"], next.as_str());
    }
    assert_eq!(
        w.up.count(),
        forwarded + 1,
        "only the approved call went through"
    );
}

#[tokio::test]
async fn a_break_glass_call_skips_the_hold_and_its_record_says_so() {
    let w = World::new().await;
    approved(&w).await;
    let officer = w.s.admin_token(&["breakglass"]).await;
    let (st, task) =
        w.s.post(
            "/v1/breakglass",
            Some(&officer),
            &json!({"agent": "payer", "tool": "ledger", "actions": ["items:write"],
                    "justification": "INC-9: ledger stuck", "duration_secs": 300}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let session = w.s.session("payer").await;
    let (_, v) =
        w.s.exchange(
            &session,
            task["id"].as_str().unwrap(),
            "https://ledger.test",
            &[],
        )
        .await;
    let token = v["access_token"].as_str().unwrap().to_owned();
    let (st, h, text) = w.call("POST", "/ledger/items", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "not held: {text}");
    let id = support::request_id(&h);
    let records = w.wait_for_records(std::slice::from_ref(&id)).await;
    let record = records
        .iter()
        .find(|e| e["request_id"] == id.as_str())
        .unwrap();
    let detail: Value =
        mandate_testkit::serde_json::from_str(record["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["breakglass"], true, "{detail}");
    let used = w
        .wait_for("breakglass.used", std::slice::from_ref(&id))
        .await;
    let used = used
        .iter()
        .find(|e| e["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(used["task"], task["id"]);
}
