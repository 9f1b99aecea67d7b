//! Step-up approval over real HTTP: a held task start at the token
//! endpoint (RFC 8628 `authorization_pending`, then a token), a held
//! request at `/v1/authorize` (approved once, for a time-box, denied for
//! good), who may approve, waiting without polling, and bad input.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const PAY: &str = "https://pay.example";

/// The seed, plus a restricted `payments` tool (`charges:read`,
/// `charges:write`) that `bot` may use, a second agent `helper` of the
/// same owner and `auditor` of another.
async fn ready() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post("/v1/owners", json!({"name": "finance"})).await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "payments", "audience": PAY, "owner": "finance", "environment": "staging",
               "sensitivity": "restricted", "max_ttl_secs": 600,
               "actions": ["charges:read", "charges:write"]}),
    )
    .await;
    for (name, owner) in [
        ("payer", "platform"),
        ("helper", "platform"),
        ("auditor", "finance"),
    ] {
        s.admin_post(
            "/v1/agents",
            json!({"name": name, "owner": owner, "environment": "staging",
                   "allowed_tools": ["payments", "github"]}),
        )
        .await;
    }
    let session = s.session("payer").await;
    (s, session)
}

fn pay_scope() -> Value {
    json!([{"tool": "payments", "actions": ["charges:read", "charges:write"], "resources": ["acct:*"]}])
}

async fn approve(s: &TestServer, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    s.post(&format!("/v1/approvals/{id}/approve"), Some(token), &body)
        .await
}

/// A task on the restricted tool, approved by a person, and a token for it.
async fn approved_grant(s: &TestServer, session: &str, approver: &str) -> (String, String) {
    let (st, task) = s.create_task(session, pay_scope(), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let apr = task["approval"].as_str().unwrap().to_owned();
    let (st, v) = approve(s, approver, &apr, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.exchange(session, &id, PAY, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    (id, v["access_token"].as_str().unwrap().to_owned())
}

async fn ask(
    s: &TestServer,
    token: &str,
    action: &str,
    resource: &str,
    amount: Option<i64>,
) -> Value {
    let mut body = json!({"token": token, "audience": PAY, "action": action, "resource": resource});
    if let Some(a) = amount {
        body["context"] = json!({"amount": a});
    }
    let (st, v) = s.post("/v1/authorize", Some(&s.root), &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn a_held_task_answers_authorization_pending_then_a_token_after_approval() {
    let (s, session) = ready().await;
    let approver = s.admin_token(&["approve"]).await;
    let (st, task) = s.create_task(&session, pay_scope(), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["state"], "pending_approval");
    let id = task["id"].as_str().unwrap();
    let apr = task["approval"].as_str().unwrap();

    let (st, v) = s.exchange(&session, id, PAY, &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "authorization_pending");
    assert_eq!(v["approval_id"], apr);
    assert!(v["interval"].as_u64().unwrap() > 0);

    // What the approver sees: who asks, what, why, until when.
    let (st, shown) = s
        .get(&format!("/v1/approvals/{apr}"), Some(&approver))
        .await;
    assert_eq!(st, StatusCode::OK, "{shown}");
    assert_eq!(
        (
            &shown["state"],
            &shown["agent"],
            &shown["owner"],
            &shown["held"]["kind"]
        ),
        (
            &json!("pending"),
            &json!("payer"),
            &json!("platform"),
            &json!("task")
        )
    );
    assert_eq!(shown["policy_ids"], json!(["restricted-needs-approval"]));
    assert!(shown["valid_until"].as_i64().unwrap() > now());

    let (st, v) = approve(&s, &approver, apr, json!({"note": "ok for the refund run"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "granted");
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&session)).await;
    assert_eq!(t["state"], "active");
    let (st, v) = s.exchange(&session, id, PAY, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let kinds: Vec<Value> = s.events().await.iter().map(|e| e["kind"].clone()).collect();
    for k in ["approval.requested", "approval.granted"] {
        assert!(kinds.contains(&json!(k)), "{k} missing");
    }
}

#[tokio::test]
async fn a_denied_task_answers_access_denied_and_is_revoked() {
    let (s, session) = ready().await;
    let approver = s.admin_token(&["approve"]).await;
    let (_, task) = s.create_task(&session, pay_scope(), None).await;
    let (id, apr) = (
        task["id"].as_str().unwrap(),
        task["approval"].as_str().unwrap(),
    );
    let (st, v) = s
        .post(
            &format!("/v1/approvals/{apr}/deny"),
            Some(&approver),
            &json!({"note": "no"}),
        )
        .await;
    assert_eq!((st, &v["state"]), (StatusCode::OK, &json!("denied")), "{v}");
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&session)).await;
    assert_eq!(t["state"], "revoked");
    let (st, v) = s.exchange(&session, id, PAY, &[]).await;
    assert_eq!(
        (st, &v["error"]),
        (StatusCode::BAD_REQUEST, &json!("access_denied")),
        "{v}"
    );
    assert_eq!(v["approval_id"], apr);
    // Final: approving afterwards is refused and changes nothing.
    let (st, v) = approve(&s, &approver, apr, json!({})).await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("approval_decided")),
        "{v}"
    );
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&session)).await;
    assert_eq!(t["state"], "revoked");
}

#[tokio::test]
async fn a_held_request_is_allowed_once_for_exactly_what_was_approved() {
    let (s, session) = ready().await;
    let approver = s.admin_token(&["approve"]).await;
    let (_, token) = approved_grant(&s, &session, &approver).await;

    // Reads pass; each write waits for a person (default policy).
    assert_eq!(
        ask(&s, &token, "charges:read", "acct:1", None).await["decision"],
        "allow"
    );
    let v = ask(&s, &token, "charges:write", "acct:1", Some(250)).await;
    assert_eq!(
        (&v["decision"], &v["code"]),
        (&json!("deny"), &json!("approval_pending")),
        "{v}"
    );
    assert_eq!(v["policy_ids"], json!(["restricted-write-needs-approval"]));
    let apr = v["approval_id"].as_str().unwrap().to_owned();
    // Asking again waits on the same request.
    let again = ask(&s, &token, "charges:write", "acct:1", Some(250)).await;
    assert_eq!(again["approval_id"], apr.as_str());

    let (st, v) = approve(&s, &approver, &apr, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Another resource or amount is not covered: it opens its own request.
    for (resource, amount) in [
        ("acct:2", Some(250)),
        ("acct:1", Some(251)),
        ("acct:1", None),
    ] {
        let v = ask(&s, &token, "charges:write", resource, amount).await;
        assert_eq!(v["code"], "approval_pending", "{resource} {amount:?}: {v}");
        assert_ne!(v["approval_id"], apr.as_str());
    }
    // Exactly the approved one, once.
    assert_eq!(
        ask(&s, &token, "charges:write", "acct:1", Some(250)).await["decision"],
        "allow"
    );
    let v = ask(&s, &token, "charges:write", "acct:1", Some(250)).await;
    assert_eq!(v["code"], "approval_pending", "spent: {v}");
    assert_ne!(v["approval_id"], apr.as_str());
    let (_, a) = s
        .get(&format!("/v1/approvals/{apr}"), Some(&approver))
        .await;
    assert_eq!(a["state"], "used");
}

#[tokio::test]
async fn a_timebox_allows_until_it_ends_and_a_denial_stays() {
    let (s, session) = ready().await;
    let approver = s.admin_token(&["approve"]).await;
    let (_, token) = approved_grant(&s, &session, &approver).await;

    let apr = ask(&s, &token, "charges:write", "acct:7", None).await["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, v) = approve(&s, &approver, &apr, json!({"for_secs": 2})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for _ in 0..3 {
        assert_eq!(
            ask(&s, &token, "charges:write", "acct:7", None).await["decision"],
            "allow"
        );
    }
    let until = v["valid_until"].as_i64().unwrap();
    while now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = ask(&s, &token, "charges:write", "acct:7", None).await;
    assert_eq!(v["code"], "approval_pending", "the time-box ended: {v}");

    let denied = v["approval_id"].as_str().unwrap().to_owned();
    let (st, _) = s
        .post(
            &format!("/v1/approvals/{denied}/deny"),
            Some(&approver),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..2 {
        let v = ask(&s, &token, "charges:write", "acct:7", None).await;
        assert_eq!(
            (&v["code"], &v["approval_id"]),
            (&json!("approval_denied"), &json!(denied)),
            "{v}"
        );
    }
}

#[tokio::test]
async fn the_agent_its_owner_and_sessions_cannot_approve() {
    let (s, session) = ready().await;
    let (_, task) = s.create_task(&session, pay_scope(), None).await;
    let apr = task["approval"].as_str().unwrap();
    let as_agent = |agent: &'static str| {
        let s = &s;
        async move {
            s.admin_post(
                "/v1/admin/tokens",
                json!({"rights": ["approve"], "agent": agent}),
            )
            .await["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    for (token, why) in [
        (as_agent("payer").await, "its own request"),
        (as_agent("helper").await, "same owner"),
    ] {
        let (st, v) = approve(&s, &token, apr, json!({})).await;
        assert_eq!(
            (st, &v["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("approver_conflict")),
            "{why}: {v}"
        );
    }
    let (st, _) = approve(&s, &session, apr, json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an agent session never approves");
    let (st, _) = approve(&s, &s.admin_token(&["tasks"]).await, apr, json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "needs the approve right");
    let (_, a) = s.get(&format!("/v1/approvals/{apr}"), Some(&s.root)).await;
    assert_eq!(a["state"], "pending", "nothing changed");
    // An agent of another owner may.
    let (st, v) = approve(&s, &as_agent("auditor").await, apr, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn waiting_on_an_approval_returns_when_a_person_decides() {
    let (s, session) = ready().await;
    let (_, task) = s.create_task(&session, pay_scope(), None).await;
    let apr = task["approval"].as_str().unwrap().to_owned();
    let approver = s.admin_token(&["approve"]).await;
    let waiter = {
        let url = s.url(&format!("/v1/approvals/{apr}?wait=30"));
        let session = session.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let v: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(session)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (v, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, _) = approve(&s, &approver, &apr, json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (v, waited) = waiter.await.unwrap();
    assert_eq!(v["state"], "granted", "{v}");
    assert!(
        waited < Duration::from_secs(20),
        "woke on the decision, not the timeout: {waited:?}"
    );
    // Another agent cannot see it.
    let other = s.session("helper").await;
    let (st, _) = s.get(&format!("/v1/approvals/{apr}"), Some(&other)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let (s, session) = ready().await;
    let approver = s.admin_token(&["approve"]).await;
    let (_, task) = s.create_task(&session, pay_scope(), None).await;
    let apr = task["approval"].as_str().unwrap();
    let unknown = "apr_00000000000000000000000000000000";
    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        (
            format!("/v1/approvals/{unknown}/approve"),
            json!({}),
            StatusCode::NOT_FOUND,
            "approval",
        ),
        (
            "/v1/approvals/nope/approve".to_owned(),
            json!({}),
            StatusCode::BAD_REQUEST,
            "approval_id",
        ),
        (
            format!("/v1/approvals/{apr}/approve"),
            json!({"for_secs": 0}),
            StatusCode::BAD_REQUEST,
            "for_secs",
        ),
        (
            format!("/v1/approvals/{apr}/approve"),
            json!({"for_secs": 999_999}),
            StatusCode::BAD_REQUEST,
            "for_secs",
        ),
        (
            format!("/v1/approvals/{apr}/approve"),
            json!({"for_secs": -5}),
            StatusCode::BAD_REQUEST,
            "for_secs",
        ),
        (
            format!("/v1/approvals/{apr}/approve"),
            json!({"note": "x".repeat(1025)}),
            StatusCode::BAD_REQUEST,
            "note",
        ),
        (
            format!("/v1/approvals/{apr}/approve"),
            json!({"until": 5}),
            StatusCode::BAD_REQUEST,
            "until",
        ),
    ];
    for (path, body, status, field) in cases {
        let (st, v) = s.post(&path, Some(&approver), &body).await;
        assert_eq!(st, status, "{path} {body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{path} {body}: `{msg}` should name `{field}`"
        );
    }
    let (st, v) = s
        .get(&format!("/v1/approvals/{apr}?wait=61"), Some(&approver))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("wait"));
    let (_, a) = s
        .get(&format!("/v1/approvals/{apr}"), Some(&approver))
        .await;
    assert_eq!(a["state"], "pending", "nothing changed: {a}");
    // Approving twice: the second is refused.
    assert_eq!(
        approve(&s, &approver, apr, json!({})).await.0,
        StatusCode::OK
    );
    let (st, v) = approve(&s, &approver, apr, json!({})).await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("approval_decided"))
    );
}
