//! Governance over real HTTP: the inventory per class and owner, the
//! posture report's findings from a real state (and gone once fixed), the
//! owner rule for production agents, anomaly acknowledgement and rotation
//! notices raised once by the running broker.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const VALUE: &str = "ghp_PersonalTokenOfAlice_0123456789";

fn kinds(report: &Value) -> Vec<String> {
    let mut k: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["kind"].as_str().unwrap(),
                f["subject"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

/// The seed, with a person `alice` owning a staging agent and a person's
/// GitHub token (a human exception) that `bot` used through the proxy.
async fn estate() -> (TestServer, String) {
    let s = TestServer::start_with(|c| {
        c.max_delegation_depth = 2;
        c.task_max_ttl_secs = 7200;
    })
    .await;
    s.seed().await;
    s.admin_post("/v1/owners", json!({"name": "alice", "kind": "person"}))
        .await;
    let (st, v) = s
        .post(
            "/v1/secrets",
            Some(&s.root),
            &json!({"name": "alice-gh", "tool": "github", "class": "human-exception",
                    "owner": "platform", "expires_at": now() + 86_400, "value": VALUE}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let proxy = s.admin_token(&["proxy"]).await;
    let call = json!({"id": "c1", "seq": 1, "stage": "invoked", "at": now() * 1000, "agent": "bot",
        "task": null, "tool": "github", "action": "issues:read", "jti": null, "method": "GET",
        "path": "/repos/acme/x/issues", "status": null, "latency_ms": 0, "bytes": 0,
        "decision": "allow", "reasons": ["allow-in-scope: ok"]});
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &json!({"source": "spool-a", "events": [call]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    (s, proxy)
}

#[tokio::test]
async fn a_person_cannot_solely_own_a_production_agent() {
    let (s, _) = estate().await;
    let (st, v) = s
        .post(
            "/v1/agents",
            Some(&s.root),
            &json!({"name": "prod-bot", "owner": "alice", "environment": "production"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("owner:"),
        "{v}"
    );
    let (_, agents) = s.get("/v1/agents", Some(&s.root)).await;
    assert!(!agents.to_string().contains("prod-bot"), "nothing written");
    let (st, v) = s
        .post(
            "/v1/owners",
            Some(&s.root),
            &json!({"name": "x", "kind": "robot"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("kind"),
        "{v}"
    );
}

#[tokio::test]
async fn the_inventory_lists_use_class_owner_and_strength_and_filters() {
    let (s, _) = estate().await;
    let auditor = s.admin_token(&["audit"]).await;
    let (st, inv) = s.get("/v1/inventory", Some(&auditor)).await;
    assert_eq!(st, StatusCode::OK, "{inv}");
    let secret = &inv["secrets"][0];
    assert_eq!(secret["name"], "alice-gh");
    assert_eq!(secret["class"], "human-exception");
    assert_eq!(secret["used_by"], json!(["bot"]));
    assert_eq!(secret["allowed_agents"], json!(["bot"]));
    assert!(
        secret["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("human"))
    );
    assert!(secret["rotation"]["rotation_due_at"].as_i64().unwrap() > now());
    assert!(!inv.to_string().contains(VALUE), "never the value");
    let bot = &inv["agents"][0];
    assert_eq!(
        (bot["name"].as_str(), bot["auth_strength"].as_str()),
        (Some("bot"), Some("join_token"))
    );
    assert!(bot["last_seen"].as_i64().is_some(), "{bot}");
    // An enrolled key, then DPoP-bound tokens, raise the strength.
    s.enroll("bot").await;
    let (_, inv) = s.get("/v1/inventory", Some(&auditor)).await;
    assert_eq!(inv["agents"][0]["auth_strength"], "enrolled_key");

    let (_, by_class) = s.get("/v1/inventory?class=model", Some(&auditor)).await;
    assert_eq!(by_class["secrets"], json!([]));
    let (_, by_owner) = s.get("/v1/inventory?owner=alice", Some(&auditor)).await;
    assert_eq!(
        (
            by_owner["secrets"].as_array().unwrap().len(),
            by_owner["agents"].as_array().unwrap().len()
        ),
        (0, 0)
    );
    for (q, field) in [
        ("class=password", "class"),
        ("days=0", "days"),
        ("owner=Bad%20Name", "owner"),
        ("color=red", "query"),
    ] {
        let (st, v) = s.get(&format!("/v1/inventory?{q}"), Some(&auditor)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{q}: {v}"
        );
    }
    let tools = s.admin_token(&["tools"]).await;
    let (st, _) = s.get("/v1/inventory", Some(&tools)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn posture_findings_come_from_the_state_and_go_when_fixed() {
    let (s, _) = estate().await;
    let auditor = s.admin_token(&["audit"]).await;
    // A person-owned staging agent; a production agent with only a join token.
    s.admin_post(
        "/v1/agents",
        json!({"name": "proto", "owner": "alice", "environment": "staging"}),
    )
    .await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "deployer", "owner": "platform", "environment": "production",
        "allowed_tools": ["vault-prod"]}),
    )
    .await;
    let (st, report) = s.get("/v1/posture", Some(&auditor)).await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(
        kinds(&report),
        [
            "human-credential-used-by-agent:alice-gh",
            "no-team-owner:proto",
            "production-agent-join-token-only:deployer",
            "task-ttl-above-class-ceiling:github",
        ],
        "{report}"
    );
    let f = &report["findings"][0];
    assert!(
        f["frameworks"]["owasp_nhi"]
            .as_array()
            .unwrap()
            .contains(&json!("NHI10:2025")),
        "{f}"
    );
    assert!(!f["fix"].as_str().unwrap().is_empty());
    assert_eq!(report["summary"]["by_severity"]["high"], 2, "{report}");
    assert!(!report.to_string().contains(VALUE));

    // Fix them: an application credential replaces the person's, the
    // production agent enrols a key, the prototype is revoked.
    let (st, v) = s
        .post(
            "/v1/secrets/alice-gh/rotate",
            Some(&s.root),
            &json!({"value": "ghs_AppInstallationToken_0123", "class": "tool"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.enroll("deployer").await;
    let (st, _) = s
        .post("/v1/agents/proto/revoke", Some(&s.root), &json!({}))
        .await;
    assert!(st.is_success());
    let (_, report) = s.get("/v1/posture", Some(&auditor)).await;
    assert_eq!(kinds(&report), Vec::<String>::new(), "{report}");

    // Deeper delegation than the chosen limit, and a reveal tool.
    let (_, report) = {
        let s2 = TestServer::start_with(|c| c.max_delegation_depth = 4).await;
        s2.seed().await;
        s2.admin_post(
            "/v1/tools",
            json!({"name": "models", "audience": "https://llm.example", "owner": "platform",
                   "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
                   "actions": ["complete"], "delivery": {"mode": "reveal"}}),
        )
        .await;
        let a = s2.admin_token(&["audit"]).await;
        s2.get("/v1/posture?days=7", Some(&a)).await
    };
    assert_eq!(
        kinds(&report),
        [
            "delegation-depth-above-limit:max_delegation_depth",
            "tool-in-reveal-mode:models"
        ],
        "{report}"
    );
    assert_eq!(report["period_days"], 7);
}

#[tokio::test]
async fn acknowledging_an_anomaly_takes_it_off_the_report_once() {
    let (s, _) = estate().await;
    let auditor = s.admin_token(&["audit"]).await;
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
    let token = v["access_token"].as_str().unwrap();
    // A refusal outside the task's scope trips the out_of_scope rule.
    let v = s.authorize(token, "issues:write", "repo:acme/x").await;
    assert_eq!(v["decision"], "deny", "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        let (_, a) = s.get("/v1/anomalies", Some(&auditor)).await;
        if let Some(seq) = a["anomalies"][0]["seq"].as_u64() {
            break seq;
        }
        assert!(Instant::now() < deadline, "no anomaly: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, report) = s.get("/v1/posture", Some(&auditor)).await;
    assert!(
        kinds(&report).contains(&format!("anomaly-unacknowledged:{seq}")),
        "{report}"
    );
    let ack = |seq: u64| {
        let (s, a) = (&s, &auditor);
        async move {
            s.post(
                &format!("/v1/anomalies/{seq}/acknowledge"),
                Some(a),
                &json!({"note": "expected: a test"}),
            )
            .await
        }
    };
    let (st, v) = ack(seq).await;
    assert_eq!(
        (st, v["already"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{v}"
    );
    let (st, v) = ack(seq).await;
    assert_eq!(
        (st, v["already"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let acks = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "anomaly.acknowledged")
        .count();
    assert_eq!(acks, 1, "written once");
    let (_, report) = s.get("/v1/posture", Some(&auditor)).await;
    assert!(
        !kinds(&report).iter().any(|k| k.starts_with("anomaly-")),
        "{report}"
    );
    // Not an anomaly: 404, nothing written.
    let (st, v) = ack(1).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = s
        .post(
            &format!("/v1/anomalies/{seq}/acknowledge"),
            Some(&auditor),
            &json!({"note": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn overdue_and_unused_secrets_are_announced_once() {
    let s = TestServer::start_with(|c| {
        c.posture.notice_interval_secs = 1;
        let quick = mandate_core::ClassPolicy {
            max_age_secs: 1,
            unused_after_secs: 1,
            max_task_ttl_secs: 3600,
        };
        c.rotation.insert(mandate_core::SecretClass::Tool, quick);
    })
    .await;
    s.seed().await;
    s.admin_post(
        "/v1/secrets",
        json!({"name": "gh", "tool": "github", "class": "tool", "owner": "platform", "value": "ghs_x"}),
    )
    .await;
    let count = |events: &[Value], kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = s.events().await;
        if count(&e, "secret.rotation_due") == 1 && count(&e, "secret.unused") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no notices");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Further ticks raise nothing new for the same version and idle spell.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = s.events().await;
    assert_eq!(
        (count(&e, "secret.rotation_due"), count(&e, "secret.unused")),
        (1, 1)
    );
    let due = e
        .iter()
        .find(|x| x["kind"] == "secret.rotation_due")
        .unwrap();
    assert_eq!(due["tool"], "github");
    // A rotation is a new version: due again once it is overdue again.
    s.admin_post("/v1/secrets/gh/rotate", json!({"value": "ghs_y"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&s.events().await, "secret.rotation_due") < 2 {
        assert!(Instant::now() < deadline, "no second notice");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_deleted_secret_is_gone_and_audited() {
    let (s, _) = estate().await;
    let (st, v) = s.delete("/v1/secrets/alice-gh", Some(&s.root)).await;
    assert_eq!(
        (st, v["deleted"].as_str()),
        (StatusCode::OK, Some("alice-gh")),
        "{v}"
    );
    let (st, _) = s.get("/v1/secrets/alice-gh", Some(&s.root)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s.delete("/v1/secrets/alice-gh", Some(&s.root)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        s.events()
            .await
            .into_iter()
            .filter(|e| e["kind"] == "secret.deleted")
            .count(),
        1
    );
}
