//! Break-glass over real HTTP: it needs the right and a justification, is
//! refused above its cap, never reaches past the agent's own tools or
//! environment, skips approval, flags every token and record, and closes
//! itself at its deadline.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const PAY: &str = "https://pay.example";

/// The seed, plus a restricted `payments` tool that `payer` may use.
async fn ready() -> TestServer {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "payments", "audience": PAY, "owner": "platform", "environment": "staging",
               "sensitivity": "restricted", "max_ttl_secs": 600,
               "actions": ["charges:read", "charges:write"]}),
    )
    .await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "payer", "owner": "platform", "environment": "staging",
               "allowed_tools": ["payments"]}),
    )
    .await;
    s
}

fn open_body(duration: i64) -> Value {
    json!({"agent": "payer", "tool": "payments", "actions": ["charges:read", "charges:write"],
           "justification": "INC-2231: refunds stuck, clearing the queue", "duration_secs": duration})
}

fn detail(e: &Value) -> Value {
    mandate_testkit::serde_json::from_str(e["detail"].as_str().unwrap_or("{}")).unwrap()
}

#[tokio::test]
async fn break_glass_skips_approval_and_flags_every_token_and_record() {
    let s = ready().await;
    let officer = s.admin_token(&["breakglass"]).await;
    let (st, task) = s
        .post("/v1/breakglass", Some(&officer), &open_body(600))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    assert_eq!(task["state"], "active", "no approval waited for");
    assert_eq!(
        task["breakglass"]["justification"],
        "INC-2231: refunds stuck, clearing the queue"
    );
    let id = task["id"].as_str().unwrap();

    // Its agent exchanges as usual; the token says break-glass.
    let session = s.session("payer").await;
    let (st, v) = s.exchange(&session, id, PAY, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["breakglass"], true);
    // A write on a restricted tool is not held for a person.
    let v = s.authorize(token, "charges:write", "acct:1").await;
    assert_eq!(v["decision"], "allow", "{v}");
    let (_, listed) = s.get("/v1/breakglass", Some(&officer)).await;
    assert_eq!(listed["breakglass"].as_array().unwrap().len(), 1);
    assert_eq!(listed["breakglass"][0]["id"], id);

    let events = s.events().await;
    let of = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["task"] == id)
            .collect()
    };
    assert_eq!(of("breakglass.opened").len(), 1);
    assert_eq!(
        of("breakglass.opened")[0]["reasons"],
        json!(["INC-2231: refunds stuck, clearing the queue"])
    );
    assert_eq!(of("breakglass.used").len(), 2, "the token and the decision");
    for kind in ["grant.minted", "decision"] {
        let e = of(kind);
        assert_eq!(e.len(), 1, "{kind}");
        assert_eq!(detail(e[0])["breakglass"], true, "{kind} is flagged");
    }
    // An ordinary task's records are not flagged.
    let (_, plain) = s.read_grant(&s.session("bot").await).await;
    let v = s.authorize(&plain, "issues:read", "repo:acme/x").await;
    assert_eq!(v["decision"], "allow");
    assert!(claims(&plain).get("breakglass").is_none());
}

#[tokio::test]
async fn break_glass_closes_itself_at_its_deadline() {
    let s = ready().await;
    let officer = s.admin_token(&["breakglass"]).await;
    let (st, task) = s
        .post("/v1/breakglass", Some(&officer), &open_body(2))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let id = task["id"].as_str().unwrap();
    let session = s.session("payer").await;
    let (_, v) = s.exchange(&session, id, PAY, &[]).await;
    let token = v["access_token"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let closed = s
            .events()
            .await
            .into_iter()
            .find(|e| e["kind"] == "breakglass.closed" && e["task"] == id);
        if let Some(e) = closed {
            assert_eq!(e["actor"], "system");
            break;
        }
        assert!(Instant::now() < until, "never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), Some(&s.root)).await;
    assert_eq!(t["state"], "expired");
    let v = s.authorize(&token, "charges:read", "acct:1").await;
    assert_eq!(v["decision"], "deny", "{v}");
}

#[tokio::test]
async fn break_glass_needs_the_right_a_justification_and_stays_within_the_agent() {
    let s = ready().await;
    let officer = s.admin_token(&["breakglass"]).await;
    let tasks_only = s.admin_token(&["tasks", "approve"]).await;
    let (st, _) = s
        .post("/v1/breakglass", Some(&tasks_only), &open_body(60))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the breakglass right is needed");
    let agent_session = s.session("payer").await;
    let (st, _) = s
        .post("/v1/breakglass", Some(&agent_session), &open_body(60))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an agent never opens one");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = open_body(600);
        f(&mut b);
        b
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (open_body(3601), StatusCode::BAD_REQUEST, "duration_secs"),
        (open_body(-300), StatusCode::BAD_REQUEST, "duration_secs"),
        (open_body(0), StatusCode::BAD_REQUEST, "duration_secs"),
        (
            with(&|b| b["justification"] = json!("   ")),
            StatusCode::BAD_REQUEST,
            "justification",
        ),
        (
            with(&|b| {
                b.as_object_mut()
                    .unwrap()
                    .remove("justification")
                    .map(drop)
                    .unwrap_or(())
            }),
            StatusCode::BAD_REQUEST,
            "justification",
        ),
        (
            with(&|b| b["agent"] = json!("ghost")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent",
        ),
        // Not among the agent's tools, another environment, an unknown action.
        (
            with(&|b| b["tool"] = json!("github")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].tool",
        ),
        (
            with(&|b| b["tool"] = json!("vault-prod")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].tool",
        ),
        (
            with(&|b| b["actions"] = json!(["charges:refund"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope[0].actions[0]",
        ),
        (
            with(&|b| b["actions"] = json!([])),
            StatusCode::BAD_REQUEST,
            "actions",
        ),
    ];
    for (body, status, field) in cases {
        let (st, v) = s.post("/v1/breakglass", Some(&officer), &body).await;
        assert_eq!(st, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{body}: `{msg}` should name `{field}`");
    }
    let (_, listed) = s.get("/v1/breakglass", Some(&officer)).await;
    assert_eq!(listed["breakglass"], json!([]), "nothing was opened");
    let opened = s
        .events()
        .await
        .iter()
        .filter(|e| e["kind"] == "breakglass.opened")
        .count();
    assert_eq!(opened, 0);

    // A break-glass task is not handed on to another agent.
    let (_, task) = s
        .post("/v1/breakglass", Some(&officer), &open_body(600))
        .await;
    let (_, v) = s
        .exchange(&agent_session, task["id"].as_str().unwrap(), PAY, &[])
        .await;
    let token = v["access_token"].as_str().unwrap();
    let helper = s.session("bot").await;
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{}/delegate", task["id"].as_str().unwrap()),
            Some(&helper),
            &json!({"subject_token": token, "scope": [{"tool": "payments", "actions": ["charges:read"]}]}),
        )
        .await;
    assert!(st.is_client_error(), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("break-glass"),
        "{v}"
    );
}
