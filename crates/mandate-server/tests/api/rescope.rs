//! A task's context switch over HTTP: narrowing cuts off at once every
//! token and delegated child the new scope does not cover (and nothing
//! else); widening is a new policy decision; bad input names its field and
//! changes nothing.

use mandate_testkit::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const GITHUB: &str = "https://api.github.com";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

async fn rescope(s: &TestServer, who: &str, task: &str, body: Value) -> (StatusCode, Value) {
    s.post(&format!("/v1/tasks/{task}/rescope"), Some(who), &body)
        .await
}

fn decision(v: &Value) -> &str {
    v["code"].as_str().or(v["decision"].as_str()).unwrap_or("?")
}

#[tokio::test]
async fn narrowing_cuts_off_what_no_longer_fits_and_widening_is_decided_again() {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "helper", "owner": "platform", "environment": "staging",
               "allowed_tools": ["github"]}),
    )
    .await;
    let bot = s.session("bot").await;
    let helper = s.session("helper").await;
    let (st, t) = s
        .create_task(
            &bot,
            json!([{"tool": "github", "actions": ["issues:read", "issues:write"]}]),
            Some(600),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    let token = |v: Value| v["access_token"].as_str().unwrap().to_owned();
    let (_, v) = s.exchange(&bot, &id, GITHUB, &[]).await;
    let writes = token(v);
    let (st, v) = s
        .exchange(&bot, &id, GITHUB, &[("scope", "issues:read")])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let reads = token(v);
    // `helper` holds the reading part; a second child would hold writing.
    let (st, v) = s
        .form(
            "/oauth/token",
            None,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &writes),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("actor_token", &helper),
                ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("resource", GITHUB),
                ("scope", "issues:read"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let child_reads = token(v);
    let child_task = claims(&child_reads)["txn"].as_str().unwrap().to_owned();

    // Bad input: named, nothing changes.
    let before = s.events().await.len();
    for (body, status, names) in [
        (
            json!({"scope": [{"tool": "nope", "actions": ["x"]}]}),
            422,
            "scope[0].tool",
        ),
        (
            json!({"scope": [{"tool": "github", "actions": ["issues:delete"]}]}),
            422,
            "scope[0].actions[0]",
        ),
        (json!({"scope": []}), 400, "scope"),
        (
            json!({"scope": [{"tool": "github", "actions": ["issues:read"]}], "intent": " "}),
            400,
            "intent",
        ),
        (
            json!({"scope": [{"tool": "github", "actions": ["issues:read"]}], "deadline": 1}),
            400,
            "deadline",
        ),
    ] {
        let (st, v) = rescope(&s, &bot, &id, body.clone()).await;
        assert_eq!(st.as_u16(), status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(names), "{body}: {msg}");
    }
    let (st, _) = rescope(&s, &helper, &id, json!({"scope": []})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another agent's task");
    assert_eq!(
        s.events().await.len(),
        before,
        "a refused switch wrote something"
    );

    // Narrow to reading: the writing token and nothing else is cut off.
    let (st, v) = rescope(
        &s,
        &bot,
        &id,
        json!({"scope": [{"tool": "github", "actions": ["issues:read"]}], "intent": "just looking"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["intent"], "just looking");
    assert_eq!(v["revoked_tokens"], json!([claims(&writes)["jti"]]));
    assert_eq!(v["revoked_subtree"], json!([]), "the child only reads");
    let ask = |t: String| {
        let s = &s;
        async move { decision(&s.authorize(&t, "issues:read", "repo:acme/x").await).to_owned() }
    };
    assert_eq!(ask(writes.clone()).await, "revoked");
    assert_eq!(ask(reads.clone()).await, "allow");
    assert_eq!(ask(child_reads.clone()).await, "allow");
    let ev = s
        .events()
        .await
        .into_iter()
        .rfind(|e| e["kind"] == "task.context_changed")
        .unwrap();
    let d: Value = serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (ev["decision"].as_str(), d["widened"].as_bool()),
        (Some("allow"), Some(false))
    );
    assert_eq!(d["from"]["intent"], "test work");
    assert_eq!(d["to"]["intent"], "just looking");

    // Widening goes through the task-start policy: back to writing is
    // allowed; a restricted tool needs a person, so nothing changes.
    let (st, v) = rescope(
        &s,
        &bot,
        &id,
        json!({"scope": [{"tool": "payroll", "actions": ["salaries:read"]}]}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("approval_required")),
        "{v}"
    );
    let (_, now) = s.get(&format!("/v1/tasks/{id}"), Some(&bot)).await;
    assert_eq!(now["scope"][0]["tool"], "github");
    let (st, v) = rescope(
        &s,
        &bot,
        &id,
        json!({"scope": [{"tool": "github", "actions": ["issues:read", "issues:write"]}]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // A delegated task is never widened.
    let (st, v) = rescope(
        &s,
        &helper,
        &child_task,
        json!({"scope": [{"tool": "github", "actions": ["issues:read", "issues:write"]}]}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("scope[0]"),
        "{v}"
    );

    // Narrowing below what the child holds takes the child with it.
    let (st, v) = rescope(
        &s,
        &bot,
        &id,
        json!({"scope": [{"tool": "github", "actions": ["issues:write"]}]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revoked_subtree"], json!([child_task]));
    assert_eq!(ask(child_reads).await, "revoked");
    assert_eq!(ask(reads).await, "revoked");

    // Only a live task switches.
    s.post(&format!("/v1/tasks/{id}/complete"), Some(&bot), &json!({}))
        .await;
    let (st, v) = rescope(
        &s,
        &bot,
        &id,
        json!({"scope": [{"tool": "github", "actions": ["issues:read"]}]}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{v}"
    );
}
