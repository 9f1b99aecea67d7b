//! Request-time authorisation, introspection and revocation over real HTTP.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;

struct Minted {
    s: TestServer,
    session: String,
    task: String,
    token: String,
}

async fn minted(actions: &[&str]) -> Minted {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (_, task) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": actions, "resources": ["repo:acme/*"]}]),
            None,
        )
        .await;
    let task = task["id"].as_str().unwrap().to_owned();
    let (st, v) = s
        .exchange(&session, &task, "https://api.github.com", &[])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    Minted {
        s,
        session,
        task,
        token,
    }
}

async fn last_decision(s: &TestServer) -> Value {
    let events = s.events().await;
    events
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "decision")
        .expect("a decision event")
}

fn reasons(v: &Value) -> String {
    v["reasons"].to_string()
}

async fn decide(m: &Minted, body: Value) -> Value {
    let mut body = body;
    body["token"] = json!(m.token);
    if body.get("audience").is_none() {
        body["audience"] = json!("https://api.github.com");
    }
    let (st, v) = m.s.post("/v1/authorize", Some(&m.s.root), &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Every decision is a durable audit row, so only known verifiers may ask:
/// nobody else can fill the log (or probe a stolen token's reach).
#[tokio::test]
async fn only_verifiers_may_ask_and_refusals_write_nothing() {
    let m = minted(&["issues:read"]).await;
    let body = json!({"token": m.token, "audience": "https://api.github.com",
                      "action": "issues:read", "resource": "repo:acme/widgets"});
    let tools_only = m.s.admin_token(&["tools"]).await;
    let before = m.s.events().await.len();
    for (who, bearer, want) in [
        ("nobody", None, StatusCode::UNAUTHORIZED),
        (
            "an agent session",
            Some(m.session.as_str()),
            StatusCode::FORBIDDEN,
        ),
        (
            "a tools token",
            Some(tools_only.as_str()),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (st, v) = m.s.post("/v1/authorize", bearer, &body).await;
        assert_eq!(st, want, "{who}: {v}");
        assert!(v["error"]["message"].is_string(), "{who}: {v}");
    }
    assert_eq!(
        m.s.events().await.len(),
        before,
        "a refused caller was audited as a decision"
    );

    let verifier = m.s.admin_token(&["verify"]).await;
    let (st, v) = m.s.post("/v1/authorize", Some(&verifier), &body).await;
    assert_eq!(
        (st, v["decision"].as_str()),
        (StatusCode::OK, Some("allow")),
        "{v}"
    );
    let d = last_decision(&m.s).await;
    assert!(
        d["actor"].as_str().unwrap().starts_with("admin:adm_"),
        "{d}"
    );
}

#[tokio::test]
async fn in_scope_request_is_allowed_and_audited() {
    let m = minted(&["issues:read"]).await;
    let v =
        m.s.authorize(&m.token, "issues:read", "repo:acme/widgets")
            .await;
    assert_eq!(v["decision"], "allow", "{v}");
    assert!(
        v["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&json!("allow-in-scope")),
        "{v}"
    );
    let d = last_decision(&m.s).await;
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["task"], m.task);
    assert_eq!(d["tool"], "github");
}

#[tokio::test]
async fn each_default_deny_policy_fires() {
    let m = minted(&["issues:read"]).await;
    let out_of_scope =
        m.s.authorize(&m.token, "issues:write", "repo:acme/widgets")
            .await;
    assert_eq!(out_of_scope["decision"], "deny");
    assert!(
        reasons(&out_of_scope).contains("deny-out-of-scope"),
        "{out_of_scope}"
    );
    let other_repo = m.s.authorize(&m.token, "issues:read", "repo:evil/x").await;
    assert!(
        reasons(&other_repo).contains("deny-out-of-scope"),
        "{other_repo}"
    );
    let cross_env = decide(
        &m,
        json!({"action": "issues:read", "resource": "repo:acme/x", "environment": "production"}),
    )
    .await;
    // One environment is a rule of the decision path, before policy.
    assert_eq!(
        (&cross_env["decision"], &cross_env["code"]),
        (&json!("deny"), &json!("wrong_environment")),
        "{cross_env}"
    );
    let sensitive = decide(&m, json!({"action": "issues:read", "resource": "repo:acme/x", "data_sensitivity": "restricted"})).await;
    assert!(
        reasons(&sensitive).contains("deny-data-above-tool-sensitivity"),
        "{sensitive}"
    );
    let deny_count =
        m.s.events()
            .await
            .iter()
            .filter(|e| e["kind"] == "decision" && e["decision"] == "deny")
            .count();
    assert_eq!(deny_count, 4, "every deny is audited");
}

#[tokio::test]
async fn revoked_task_denies_on_the_next_request() {
    let m = minted(&["issues:read"]).await;
    assert_eq!(
        m.s.authorize(&m.token, "issues:read", "repo:acme/x").await["decision"],
        "allow"
    );
    let (st, v) =
        m.s.post(
            &format!("/v1/tasks/{}/revoke", m.task),
            Some(&m.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = m.s.authorize(&m.token, "issues:read", "repo:acme/x").await;
    assert_eq!(
        (&v["decision"], &v["code"]),
        (&json!("deny"), &json!("revoked")),
        "{v}"
    );
    assert!(reasons(&v).contains("task has been revoked"), "{v}");
    let (_, intro) =
        m.s.form("/oauth/introspect", Some(&m.s.root), &[("token", &m.token)])
            .await;
    assert_eq!(intro, json!({"active": false}));
    // The feed tells verifiers.
    let (_, feed) = m.s.get("/v1/revocations?since=0", None).await;
    assert!(
        feed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task" && e["id"] == m.task),
        "{feed}"
    );
}

#[tokio::test]
async fn revoked_token_fails_introspection_and_authorisation_immediately() {
    let m = minted(&["issues:read"]).await;
    let (_, intro) =
        m.s.form(
            "/oauth/introspect",
            Some(&m.session),
            &[("token", &m.token)],
        )
        .await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["txn"], m.task);
    let (st, v) =
        m.s.form("/oauth/revoke", Some(&m.session), &[("token", &m.token)])
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, intro) =
        m.s.form(
            "/oauth/introspect",
            Some(&m.session),
            &[("token", &m.token)],
        )
        .await;
    assert_eq!(intro, json!({"active": false}));
    let v = m.s.authorize(&m.token, "issues:read", "repo:acme/x").await;
    assert_eq!(v["decision"], "deny");
    assert!(reasons(&v).contains("revoked"), "{v}");
    // The task itself is still fine: a fresh token works.
    let (st, _) =
        m.s.exchange(&m.session, &m.task, "https://api.github.com", &[])
            .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn revoked_agent_loses_sessions_tasks_and_tokens() {
    let m = minted(&["issues:read"]).await;
    let (st, v) =
        m.s.post("/v1/agents/bot/revoke", Some(&m.s.root), &json!({}))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revoked_tasks"], json!([m.task]));
    assert_eq!(
        m.s.authorize(&m.token, "issues:read", "repo:acme/x").await["decision"],
        "deny"
    );
    let (st, _) = m.s.get("/v1/tasks", Some(&m.session)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "session dies with the agent");
    let (_, task) =
        m.s.get(&format!("/v1/tasks/{}", m.task), Some(&m.s.root))
            .await;
    assert_eq!(task["state"], "revoked");
}

#[tokio::test]
async fn introspection_needs_a_caller_and_hides_other_agents_tokens() {
    let m = minted(&["issues:read"]).await;
    let (st, v) =
        m.s.form("/oauth/introspect", None, &[("token", &m.token)])
            .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "invalid_client");
    m.s.admin_post(
        "/v1/agents",
        json!({"name": "other", "owner": "platform", "environment": "staging"}),
    )
    .await;
    let other = m.s.session("other").await;
    let (_, v) =
        m.s.form("/oauth/introspect", Some(&other), &[("token", &m.token)])
            .await;
    assert_eq!(v, json!({"active": false}));
    // Revocation by another agent is a silent no-op (RFC 7009).
    m.s.form("/oauth/revoke", Some(&other), &[("token", &m.token)])
        .await;
    assert_eq!(
        m.s.authorize(&m.token, "issues:read", "repo:acme/x").await["decision"],
        "allow"
    );
}

/// A gateway holds `verify` (as the README tells it to): introspection
/// must answer it truthfully, and an admin token with no introspection
/// right is told which it lacks instead of hearing every token is dead.
#[tokio::test]
async fn a_gateways_verify_right_introspects_and_a_token_without_a_right_gets_403() {
    let m = minted(&["issues:read"]).await;
    let gateway = m.s.admin_token(&["verify"]).await;
    let (st, v) =
        m.s.form("/oauth/introspect", Some(&gateway), &[("token", &m.token)])
            .await;
    assert_eq!((st, &v["active"]), (StatusCode::OK, &json!(true)), "{v}");
    let secrets_only = m.s.admin_token(&["secrets"]).await;
    let (st, v) =
        m.s.form(
            "/oauth/introspect",
            Some(&secrets_only),
            &[("token", &m.token)],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "insufficient_scope");
    let why = v["error_description"].as_str().unwrap();
    assert!(why.contains("verify"), "{why}");
}

#[tokio::test]
async fn tampered_or_foreign_tokens_are_denied() {
    let m = minted(&["issues:read"]).await;
    let mut parts: Vec<String> = m.token.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&mandate_token::b64_decode(&parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("issues:read issues:write");
    claims["authorization_details"][0]["actions"] = json!(["issues:read", "issues:write"]);
    parts[1] = mandate_token::b64(claims.to_string().as_bytes());
    let forged = parts.join(".");
    let v = m.s.authorize(&forged, "issues:write", "repo:acme/x").await;
    assert_eq!(v["decision"], "deny");
    assert!(reasons(&v).contains("signature"), "{v}");
    let v =
        m.s.authorize("not-a-token", "issues:read", "repo:acme/x")
            .await;
    assert_eq!(v["decision"], "deny");
}

#[tokio::test]
async fn revocation_stream_pushes_new_entries() {
    use futures::StreamExt;
    let m = minted(&["issues:read"]).await;
    let resp = reqwest::get(m.s.url("/v1/revocations/stream?since=0"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    m.s.form("/oauth/revoke", Some(&m.session), &[("token", &m.token)])
        .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains("\"kind\":\"token\"") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("event within 5s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: revocation"), "{seen}");
}

/// More live revocations than one page: a restarted broker still knows
/// every revoked token, and both the poll and the stream hand out the whole
/// backlog, not just its first page.
#[tokio::test]
async fn every_revocation_survives_restart_and_paging() {
    use futures::StreamExt;
    use mandate_audit::{EventKind, NewEvent};
    use mandate_core::RevocationKind;
    const FILLER: usize = 2100;
    let m = minted(&["issues:read"]).await;
    let store = m.s.app().store.clone();
    let far = now() + 3600;
    let writes = (0..FILLER).map(|i| {
        let store = store.clone();
        async move {
            let ev = NewEvent::new(EventKind::TokenRevoked, "admin:test");
            store
                .revoke_by_id(
                    RevocationKind::Token,
                    &format!("filler-{i}"),
                    far,
                    now(),
                    ev,
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(writes).await;
    // Written behind the directory's back: only a reload from the store
    // (the restart below) can learn it, and it lies past the first pages.
    let jti = claims(&m.token)["jti"].as_str().unwrap().to_owned();
    let ev = NewEvent::new(EventKind::TokenRevoked, "admin:test");
    store
        .revoke_by_id(RevocationKind::Token, &jti, far, now(), ev)
        .await
        .unwrap();
    drop(store);
    let s = m.s.restart().await;

    let v = s.authorize(&m.token, "issues:read", "repo:acme/x").await;
    assert_eq!(v["decision"], "deny", "{v}");
    assert!(reasons(&v).contains("revoked"), "{v}");

    let (mut since, mut polled, mut pages) = (0, 0, 0);
    loop {
        let (st, page) = s.get(&format!("/v1/revocations?since={since}"), None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        polled += page["entries"].as_array().unwrap().len();
        since = page["next"].as_u64().unwrap();
        pages += 1;
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(polled, FILLER + 1);
    assert!(pages > 2, "{pages} pages");

    let resp = reqwest::get(s.url("/v1/revocations/stream?since=0"))
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains(&jti) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the whole backlog within 20 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen.matches("event: revocation").count(), FILLER + 1);
}

/// Invariant 2: a token counts only at its own audience. A resource server
/// asking about a token minted for another tool is told no, whatever the
/// token's scope, and the decision is on the record.
#[tokio::test]
async fn a_token_is_denied_at_any_other_audience() {
    let m = minted(&["issues:read"]).await;
    let v = decide(
        &m,
        json!({"audience": "https://payroll.example", "action": "issues:read",
               "resource": "repo:acme/widgets"}),
    )
    .await;
    assert_eq!(v["decision"], "deny", "{v}");
    assert!(reasons(&v).contains("audience"), "{v}");
    let d = last_decision(&m.s).await;
    assert_eq!(d["decision"], "deny");
    let v = decide(
        &m,
        json!({"action": "issues:read", "resource": "repo:acme/widgets"}),
    )
    .await;
    assert_eq!(
        v["decision"], "allow",
        "the same request at its own audience: {v}"
    );
    let (st, v) =
        m.s.post(
            "/v1/authorize",
            Some(&m.s.root),
            &json!({"token": m.token, "action": "issues:read", "resource": "r"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("audience"),
        "{v}"
    );
}
