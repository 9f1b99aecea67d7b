//! Secrets over HTTP: stored sealed (the value is nowhere on disk in
//! clear), listed as metadata only, rotated, revealed only to active tasks
//! of `reveal` tools, delivered to proxies, and tool-call records from
//! proxies chained once.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;

const VALUE: &str = "ghp_SuperSecretUpstreamKey_0123456789";

async fn with_secret() -> TestServer {
    let s = TestServer::start().await;
    s.seed().await;
    let (st, v) = s
        .post(
            "/v1/secrets",
            Some(&s.root),
            &json!({"name": "gh-token", "tool": "github", "class": "tool", "owner": "platform",
                    "shared": true, "value": VALUE}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s
}

#[tokio::test]
async fn value_is_never_on_disk_in_clear_nor_in_listings_or_audit() {
    let mut s = with_secret().await;
    let (st, v) = s
        .post(
            "/v1/secrets/gh-token/rotate",
            Some(&s.root),
            &json!({"value": "ghp_RotatedValue_abcdef"}),
        )
        .await;
    assert_eq!(
        (st, v["version"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    let (_, list) = s.get("/v1/secrets", Some(&s.root)).await;
    let (_, one) = s.get("/v1/secrets/gh-token", Some(&s.root)).await;
    assert_eq!(one["used_by"]["agents"], json!(["bot"]));
    assert_eq!(
        (one["shared"].as_bool(), one["delivery"].as_str()),
        (Some(true), Some("inject"))
    );
    let events = s.events().await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"secret.stored") && kinds.contains(&"secret.rotated"));
    for text in [list.to_string(), one.to_string(), json!(events).to_string()] {
        assert!(
            !text.contains(VALUE) && !text.contains("ghp_RotatedValue"),
            "{text}"
        );
        assert!(!text.contains("\"value\""), "{text}");
    }
    s.stop().await; // flush the WAL into the file, close everything
    let files = files_under(&s.data_dir);
    assert!(files.iter().any(|p| p.ends_with("mandate.db")));
    // With a master key the signing keys are sealed too: no private key in clear.
    let keys: Vec<String> = files_under(&s.data_dir.join("keys"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        keys.iter()
            .all(|k| k == "ring.json" || k.ends_with(".pk8.sealed"))
            && keys.len() >= 2,
        "{keys:?}"
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [VALUE, "ghp_RotatedValue_abcdef", "SuperSecretUpstreamKey"] {
            assert!(
                !contains(&bytes, needle),
                "{} holds a secret in clear",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn bad_secret_input_names_the_field_and_writes_nothing() {
    let s = with_secret().await;
    let before = s.events().await.len();
    let base = json!({"name": "jira", "tool": "payroll", "class": "tool", "owner": "platform",
                      "value": "v"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    for (body, status, field) in [
        (without("value"), StatusCode::BAD_REQUEST, "value"),
        (with("value", json!("")), StatusCode::BAD_REQUEST, "value"),
        (
            with("value", json!("a\r\nX-Evil: 1")),
            StatusCode::BAD_REQUEST,
            "value",
        ),
        (with("value", json!(42)), StatusCode::BAD_REQUEST, "value"),
        (
            with("class", json!("password")),
            StatusCode::BAD_REQUEST,
            "class",
        ),
        (
            with("colour", json!("red")),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            with("name", json!("Bad Name")),
            StatusCode::BAD_REQUEST,
            "secret",
        ),
        (
            with("human_credential", json!(true)),
            StatusCode::BAD_REQUEST,
            "expires_at",
        ),
        (
            with("expires_at", json!(1)),
            StatusCode::BAD_REQUEST,
            "expires_at",
        ),
        (
            with("tool", json!("nope")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tool",
        ),
        (
            with("owner", json!("nobody")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner",
        ),
        (
            with("tool", json!("github")),
            StatusCode::CONFLICT,
            "gh-token",
        ),
    ] {
        let (st, v) = s.post("/v1/secrets", Some(&s.root), &body).await;
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(st, status, "{body}: {v}");
        assert!(msg.contains(field), "{field}: {msg}");
        assert!(!msg.contains("X-Evil"), "value echoed: {msg}");
    }
    let (st, v) = s
        .post(
            "/v1/secrets/gh-token/rotate",
            Some(&s.root),
            &json!({"value": "x", "extra": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = s
        .post(
            "/v1/secrets/missing/rotate",
            Some(&s.root),
            &json!({"value": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(s.events().await.len(), before, "nothing written");
    assert_eq!(
        s.get("/v1/secrets/gh-token", Some(&s.root)).await.1["version"],
        1
    );
}

#[tokio::test]
async fn secret_rights_are_enforced() {
    let s = with_secret().await;
    let limited = s.admin_token(&["tools"]).await;
    let (st, _) = s.get("/v1/secrets", Some(&limited)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get("/v1/proxy/secrets/github", Some(&limited)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let secrets_admin = s.admin_token(&["secrets"]).await;
    let (st, _) = s.get("/v1/secrets", Some(&secrets_admin)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .get("/v1/proxy/secrets/github", Some(&secrets_admin))
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "managing secrets is not reading them"
    );
    let session = s.session("bot").await;
    let (st, _) = s.get("/v1/secrets", Some(&session)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

/// Repointing a tool's upstream would send its secret to whoever runs the
/// new host: the `tools` right alone may not do that, and the audit record
/// of an allowed change says from where to where.
#[tokio::test]
async fn tools_right_alone_cannot_redirect_where_a_secret_goes() {
    let s = with_secret().await;
    let github = |upstream: &str, mode: &str| {
        json!({"name": "github", "audience": "https://api.github.com", "owner": "platform",
               "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
               "actions": ["issues:read", "issues:write"], "upstream": upstream,
               "delivery": {"mode": mode}})
    };
    let tools_admin = s.admin_token(&["tools"]).await;
    let before = s.events().await.len();
    for (body, what) in [
        (github("https://attacker.example", "inject"), "upstream"),
        (github("", "reveal"), "delivery"),
    ] {
        let mut body = body;
        if body["upstream"] == "" {
            body.as_object_mut().unwrap().remove("upstream");
        }
        let (st, v) = s.put("/v1/tools/github", Some(&tools_admin), &body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("secrets"),
            "{v}"
        );
    }
    assert_eq!(
        s.events().await.len(),
        before,
        "a refused update wrote something"
    );
    let (_, tool) = s.get("/v1/tools/github", Some(&s.root)).await;
    assert!(tool.get("upstream").is_none(), "{tool}");
    assert_eq!(tool["delivery"]["mode"], "inject");

    let both = s.admin_token(&["tools", "secrets"]).await;
    let (st, v) = s
        .put(
            "/v1/tools/github",
            Some(&both),
            &github("https://ghe.example", "inject"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ev = s
        .events()
        .await
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "tool.updated")
        .unwrap();
    let detail: Value =
        mandate_testkit::serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["upstream"]["to"], "https://ghe.example", "{detail}");
    assert!(detail["upstream"]["from"].is_null(), "{detail}");

    // Routes and the like stay a `tools` matter.
    let mut routes_only = github("https://ghe.example", "inject");
    routes_only["routes"] = json!([{"method": "GET", "path": "/issues", "action": "issues:read"}]);
    let (st, v) = s
        .put("/v1/tools/github", Some(&tools_admin), &routes_only)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn proxy_gets_catalog_and_value_and_its_records_are_chained_once() {
    let s = with_secret().await;
    let proxy = s.admin_token(&["proxy"]).await;
    let (st, cat) = s.get("/v1/proxy/catalog", Some(&proxy)).await;
    assert_eq!(st, StatusCode::OK, "{cat}");
    assert_eq!(cat["issuer"], s.base.as_str());
    // Proxies check it: a proxy needing more than its broker speaks stays unready.
    assert_eq!(cat["proxy_protocol"], mandate_wire::PROXY_PROTOCOL);
    assert_eq!(cat["tools"].as_array().unwrap().len(), 3);
    assert_eq!(cat["secrets"][0]["version"], 1);
    assert!(!cat.to_string().contains(VALUE));
    let files = cat["policy"]["policies"].as_array().unwrap();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().into(),
                f["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let rebuilt = mandate_policy::PolicySet::from_sources(
        cat["policy"]["schema"].as_str().unwrap(),
        &sources,
    )
    .expect("the catalog's policy builds the same set");
    assert_eq!(rebuilt.policy_ids(), s.app().policy().policy_ids());

    let (st, v) = s.get("/v1/proxy/secrets/github", Some(&proxy)).await;
    assert_eq!((st, v["value"].as_str()), (StatusCode::OK, Some(VALUE)));
    let (st, _) = s.get("/v1/proxy/secrets/payroll", Some(&proxy)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let delivered: Vec<Value> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "secret.delivered")
        .collect();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("proxy:adm_")
    );
    assert!(!delivered[0].to_string().contains(VALUE));

    // An allowed call's `invoked` record: written before the upstream answered.
    let call = |id: &str, seq: u64| {
        json!({"id": id, "seq": seq, "stage": "invoked", "at": now() * 1000, "agent": "bot",
               "task": null, "tool": "github", "action": "issues:read", "jti": null,
               "method": "GET", "path": "/repos/acme/x/issues?token=leak", "status": null,
               "latency_ms": 0, "bytes": 0, "decision": "allow",
               "reasons": ["allow-in-scope: ok"]})
    };
    let batch = |events: Vec<Value>| json!({"source": "spool-a", "events": events});
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![call("c1", 100), call("c2", 200)]),
        )
        .await;
    assert_eq!(
        (st, v),
        (StatusCode::OK, json!({"accepted": 2, "duplicates": 0}))
    );
    // A resend after a crash overlaps what was chained.
    let (_, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![call("c2", 200), call("c3", 300)]),
        )
        .await;
    assert_eq!(v, json!({"accepted": 1, "duplicates": 1}));
    let mut bad = call("c4", 500);
    bad["decision"] = json!("maybe");
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![call("c5", 400), bad]),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].decision")
    );
    // Out of spool order, a seq past i64, a bad source, records whose stage,
    // decision and status disagree: refused, naming the field.
    let with = |mut c: Value, fields: Value| {
        for (k, v) in fields.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    for (body, field) in [
        (
            batch(vec![with(call("c6", 700), json!({"status": 200}))]),
            "events[0].status",
        ),
        (
            batch(vec![with(
                call("c6", 700),
                json!({"stage": "completed", "decision": "deny", "status": 200}),
            )]),
            "events[0].stage",
        ),
        (
            batch(vec![with(call("c6", 700), json!({"stage": "completed"}))]),
            "events[0].status",
        ),
        (
            batch(vec![with(call("c6", 700), json!({"decision": "deny"}))]),
            "events[0].status",
        ),
        (
            batch(vec![with(call("c6", 700), json!({"stage": "started"}))]),
            "stage",
        ),
        (
            batch(vec![call("c6", 700), call("c7", 600)]),
            "events[1].seq",
        ),
        (batch(vec![call("c6", u64::MAX)]), "events[0].seq"),
        (
            batch(vec![with(
                call("c6", 700),
                json!({"client": "evil.example"}),
            )]),
            "events[0].client",
        ),
        (
            json!({"source": "a b", "events": [call("c6", 700)]}),
            "source",
        ),
        (json!({"events": [call("c6", 700)]}), "source"),
    ] {
        let (st, v) = s
            .post("/v1/audit/tool-invocations", Some(&proxy), &body)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let invoked: Vec<Value> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "tool.invoked")
        .collect();
    assert_eq!(
        invoked.len(),
        3,
        "c1, c2, c3 once each; c5 refused with its batch, c6 and c7 never taken"
    );
    // The outcome of c1 comes as its `completed` record.
    let done = with(
        call("c1", 800),
        json!({"stage": "completed", "status": 201, "latency_ms": 12, "bytes": 99, "reasons": []}),
    );
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![done]),
        )
        .await;
    assert_eq!(
        (st, v["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let completed: Vec<Value> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "tool.completed")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["request_id"], "c1");
    assert!(
        completed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("\"status\":201"),
        "{}",
        completed[0]
    );
    assert_eq!(
        s.events()
            .await
            .into_iter()
            .filter(|e| e["kind"] == "tool.invoked")
            .count(),
        3
    );
    let detail: Value =
        mandate_testkit::serde_json::from_str(invoked[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail["path"], "/repos/acme/x/issues",
        "query never chained"
    );

    // A whole call (`invoked` and `completed` merged by the proxy) is one
    // `tool.invoked` event with its outcome; resent after its opening was
    // chained (other batch boundaries), only the outcome is chained.
    let whole = |id: &str, seq: u64, opened: u64| {
        with(
            call(id, seq),
            json!({"stage": "call", "opened_seq": opened, "status": 204, "latency_ms": 3, "bytes": 7}),
        )
    };
    let count = |events: &[Value], kind: &str, id: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["request_id"] == id)
            .count()
    };
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![whole("w1", 900, 850)]),
        )
        .await;
    assert_eq!(
        (st, v["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let (st, _) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![call("w2", 1000)]),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s
        .post(
            "/v1/audit/tool-invocations",
            Some(&proxy),
            &batch(vec![whole("w1", 900, 850), whole("w2", 1100, 1000)]),
        )
        .await;
    assert_eq!(
        (st, v),
        (StatusCode::OK, json!({"accepted": 1, "duplicates": 1}))
    );
    let events = s.events().await;
    assert_eq!(
        (
            count(&events, "tool.invoked", "w1"),
            count(&events, "tool.completed", "w1")
        ),
        (1, 0)
    );
    assert_eq!(
        (
            count(&events, "tool.invoked", "w2"),
            count(&events, "tool.completed", "w2")
        ),
        (1, 1)
    );
    let w1 = events.iter().find(|e| e["request_id"] == "w1").unwrap();
    assert!(
        w1["detail"].as_str().unwrap().contains("\"status\":204"),
        "{w1}"
    );
    for (body, field) in [
        (
            with(call("w3", 1200), json!({"stage": "call", "status": 200})),
            "opened_seq",
        ),
        (whole("w3", 1200, 1200), "opened_seq"),
        (
            with(call("w3", 1200), json!({"opened_seq": 1})),
            "opened_seq",
        ),
        (
            with(whole("w3", 1200, 1), json!({"status": null})),
            "status",
        ),
        (
            with(whole("w3", 1200, 1), json!({"decision": "deny"})),
            "stage",
        ),
    ] {
        let (st, v) = s
            .post(
                "/v1/audit/tool-invocations",
                Some(&proxy),
                &batch(vec![body.clone()]),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("events[0].{field}")),
            "{field}: {msg}"
        );
    }
    let (_, one) = s.get("/v1/secrets/gh-token", Some(&s.root)).await;
    assert!(one["last_used_at"].is_i64(), "{one}");
}

#[tokio::test]
async fn reveal_is_for_reveal_tools_active_tasks_and_is_audited() {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "models", "audience": "https://llm.example", "owner": "platform",
               "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
               "actions": ["complete"], "delivery": {"mode": "reveal"}}),
    )
    .await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "writer", "owner": "platform", "environment": "staging",
               "allowed_tools": ["models", "github"]}),
    )
    .await;
    for (name, tool, value) in [
        ("llm-key", "models", "sk-model-key\nline2"),
        ("gh", "github", "ghp_x"),
    ] {
        let (st, v) = s
            .post(
                "/v1/secrets",
                Some(&s.root),
                &json!({"name": name, "tool": tool, "class": "model", "owner": "platform", "value": value}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let session = s.session("writer").await;
    let (_, task) = s
        .create_task(
            &session,
            json!([{"tool": "models", "actions": ["complete"]}, {"tool": "github", "actions": ["issues:read"]}]),
            None,
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let (_, before) = s.get("/v1/secrets/llm-key", Some(&s.root)).await;
    assert!(before["last_used_at"].is_null(), "{before}");
    let (st, v) = s
        .get(&format!("/v1/tasks/{id}/secrets/llm-key"), Some(&session))
        .await;
    assert_eq!(
        (st, v["value"].as_str()),
        (StatusCode::OK, Some("sk-model-key\nline2")),
        "{v}"
    );
    let (_, after) = s.get("/v1/secrets/llm-key", Some(&s.root)).await;
    assert!(after["last_used_at"].is_i64(), "a reveal is a use: {after}");
    let (st, v) = s
        .get(&format!("/v1/tasks/{id}/secrets/gh"), Some(&session))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "inject tools never reveal: {v}");
    assert!(
        v["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("no-permit"),
        "{v}"
    );
    let (st, _) = s
        .get(&format!("/v1/tasks/{id}/secrets/llm-key"), Some(&s.root))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "only the task's agent");
    let other = s.session("bot").await;
    let (st, _) = s
        .get(&format!("/v1/tasks/{id}/secrets/llm-key"), Some(&other))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another agent's task");
    s.post(
        &format!("/v1/tasks/{id}/complete"),
        Some(&session),
        &json!({}),
    )
    .await;
    let (st, v) = s
        .get(&format!("/v1/tasks/{id}/secrets/llm-key"), Some(&session))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "completed task: {v}");
    let events = s.events().await;
    let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
    assert_eq!((count("secret.retrieved"), count("secret.refused")), (1, 2));
    assert!(!json!(events).to_string().contains("sk-model-key"));
}

#[tokio::test]
async fn secrets_survive_restart_and_a_wrong_master_key_refuses_to_start() {
    let s = with_secret().await;
    let proxy = s.admin_token(&["proxy"]).await;
    let s = s.restart().await;
    let (st, v) = s.get("/v1/proxy/secrets/github", Some(&proxy)).await;
    assert_eq!((st, v["value"].as_str()), (StatusCode::OK, Some(VALUE)));
    let data = s.data_dir.clone();
    let mut s = s;
    s.stop().await;
    let mut cfg = mandate_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data,
        ..Default::default()
    };
    cfg.master_key = Some(
        mandate_token::seal::SealKey::generate()
            .to_base64()
            .to_string()
            .into(),
    );
    let err = match mandate_server::start(cfg.validate().unwrap()).await {
        Ok(_) => panic!("started with the wrong master key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("wrong master key"), "{err}");
}
