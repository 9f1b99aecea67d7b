//! Delegation over HTTP: A hands part of its task to B by RFC 8693 token
//! exchange, B to C by the JSON endpoint; the chain is in every token, the
//! tree is visible, each rule refuses by name and writes nothing, and
//! revoking a task refuses exactly its subtree.

use mandate_testkit::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GITHUB: &str = "https://api.github.com";

struct Team {
    s: TestServer,
    /// Sessions of `lead`, `helper`, `intern`.
    lead: String,
    helper: String,
    intern: String,
    /// The lead's task and a token of it.
    root: String,
    root_token: String,
}

async fn team_with(depth: u32) -> Team {
    let s = TestServer::start_with(move |c| c.max_delegation_depth = depth).await;
    s.seed().await;
    for name in ["lead", "helper", "intern"] {
        s.admin_post(
            "/v1/agents",
            json!({"name": name, "owner": "platform", "environment": "staging",
                   "allowed_tools": ["github"]}),
        )
        .await;
    }
    let (lead, helper, intern) = (
        s.session("lead").await,
        s.session("helper").await,
        s.session("intern").await,
    );
    let (st, task) = s
        .create_task(
            &lead,
            json!([{"tool": "github", "actions": ["issues:read", "issues:write"],
                    "resources": ["repo:acme/*"]}]),
            Some(600),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let root = task["id"].as_str().unwrap().to_owned();
    let (st, v) = s.exchange(&lead, &root, GITHUB, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    Team {
        root_token: v["access_token"].as_str().unwrap().to_owned(),
        s,
        lead,
        helper,
        intern,
        root,
    }
}

impl Team {
    /// `actor`'s session takes part of `subject`'s task by token exchange.
    async fn hand_down(
        &self,
        subject: &str,
        actor: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS),
            ("actor_token", actor),
            ("actor_token_type", JWT),
            ("resource", GITHUB),
        ];
        form.extend_from_slice(extra);
        self.s.form("/oauth/token", None, &form).await
    }

    async fn delegate_api(&self, parent: &str, session: &str, body: Value) -> (StatusCode, Value) {
        self.s
            .post(
                &format!("/v1/tasks/{parent}/delegate"),
                Some(session),
                &body,
            )
            .await
    }

    async fn decision(&self, token: &str) -> String {
        let v = self
            .s
            .authorize(token, "issues:read", "repo:acme/widgets")
            .await;
        if v["decision"] == "allow" {
            "allow".into()
        } else {
            v["code"].as_str().unwrap_or("?").to_owned()
        }
    }

    async fn counts(&self) -> (usize, usize) {
        let (_, tasks) = self.s.get("/v1/tasks?limit=1000", Some(&self.s.root)).await;
        (
            tasks["tasks"].as_array().unwrap().len(),
            self.s.events().await.len(),
        )
    }
}

/// A refused hand-down: what, the subject token, extra form fields, the
/// OAuth error and words its description must have.
type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a str, &'a str);

fn spiffe(agent: &str) -> String {
    format!("spiffe://test.local/agent/{agent}")
}

#[tokio::test]
async fn a_chain_of_three_carries_its_actors_and_is_one_tree() {
    let t = team_with(3).await;
    // A → B, by token exchange: B's first token, read only.
    let (st, v) = t
        .hand_down(
            &t.root_token,
            &t.helper,
            &[("scope", "issues:read"), ("intent", "triage acme")],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let b_token = v["access_token"].as_str().unwrap().to_owned();
    let b = claims(&b_token);
    let b_task = b["txn"].as_str().unwrap().to_owned();
    assert_ne!(b_task, t.root);
    assert_eq!(b["sub"], spiffe("lead"), "the root's agent is the subject");
    assert_eq!(b["client_id"], spiffe("helper"));
    assert_eq!(b["act"], json!({"sub": spiffe("helper"), "txn": b_task}));
    assert_eq!(b["root_txn"], t.root);
    assert_eq!(b["scope"], "issues:read");
    assert_eq!(t.decision(&b_token).await, "allow");

    // B → C, by the JSON endpoint with C's session; C then exchanges.
    let (st, c_task) = t
        .delegate_api(
            &b_task,
            &t.intern,
            json!({"subject_token": b_token, "intent": "label bugs",
                   "scope": [{"tool": "github", "actions": ["issues:read"],
                              "resources": ["repo:acme/widgets"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c_task}");
    let c_id = c_task["id"].as_str().unwrap().to_owned();
    assert_eq!(c_task["delegation"]["parent"], b_task);
    assert_eq!(c_task["delegation"]["root"], t.root);
    assert_eq!(c_task["delegation"]["root_intent"], "test work");
    let (st, v) = t.s.exchange(&t.intern, &c_id, GITHUB, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let c_token = v["access_token"].as_str().unwrap().to_owned();
    let c = claims(&c_token);
    assert_eq!(c["sub"], spiffe("lead"));
    assert_eq!(
        c["act"],
        json!({"sub": spiffe("intern"), "txn": c_id,
               "act": {"sub": spiffe("helper"), "txn": b_task}}),
        "the current actor outermost, the earlier one nested"
    );
    assert_eq!(c["root_txn"], t.root);
    assert_eq!(t.decision(&c_token).await, "allow");
    let v =
        t.s.authorize(&c_token, "issues:read", "repo:acme/other")
            .await;
    assert_eq!(v["decision"], "deny", "C only has acme/widgets: {v}");

    // The tree, and the audit trail naming the chain.
    let (st, tree) =
        t.s.get(&format!("/v1/tasks/{}/tree", t.root), Some(&t.s.root))
            .await;
    assert_eq!(st, StatusCode::OK, "{tree}");
    assert_eq!(tree["agent"], "lead");
    assert_eq!(tree["children"][0]["agent"], "helper");
    assert_eq!(tree["children"][0]["children"][0]["agent"], "intern");
    assert_eq!(tree["children"][0]["children"][0]["id"], c_id);
    let events = t.s.events().await;
    let delegated: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "task.delegated")
        .collect();
    assert_eq!(delegated.len(), 2);
    let detail: Value = serde_json::from_str(delegated[1]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["chain"], json!(["lead", "helper"]));
    assert_eq!(detail["depth"], 2);
    let c_grant = events
        .iter()
        .find(|e| e["kind"] == "grant.minted" && e["task"] == c_id.as_str())
        .unwrap();
    let detail: Value = serde_json::from_str(c_grant["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["chain"], json!(["lead", "helper"]));

    // Revoking B's task refuses B and C, not A.
    let (st, v) =
        t.s.post(
            &format!("/v1/tasks/{b_task}/revoke"),
            Some(&t.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revoked_subtree"], json!([c_id]));
    assert_eq!(t.decision(&b_token).await, "revoked");
    assert_eq!(t.decision(&c_token).await, "revoked");
    assert_eq!(t.decision(&t.root_token).await, "allow");
    let (_, v) =
        t.s.form("/oauth/introspect", Some(&t.s.root), &[("token", &c_token)])
            .await;
    assert_eq!(v["active"], false);
    // Nor can B's dead task hand anything down any more.
    let (st, v) = t.hand_down(&b_token, &t.intern, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
}

#[tokio::test]
async fn each_rule_refuses_by_name_and_writes_nothing() {
    let t = team_with(1).await;
    let (st, v) = t
        .hand_down(&t.root_token, &t.helper, &[("scope", "issues:read")])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let b_token = v["access_token"].as_str().unwrap().to_owned();
    let b_task = claims(&b_token)["txn"].as_str().unwrap().to_owned();
    t.s.admin_post(
        "/v1/agents",
        json!({"name": "prod-bot", "owner": "platform", "environment": "production",
               "allowed_tools": ["vault-prod"]}),
    )
    .await;
    let prod = t.s.session("prod-bot").await;
    let before = t.counts().await;
    let details =
        r#"[{"type":"mandate","tool":"github","actions":["issues:read"],"resources":["repo:*"]}]"#;
    let widen = [("authorization_details", details)];
    let cases: Vec<Case> = vec![
        // (what, subject, extra form, error, words the description has)
        (
            "widening",
            t.root_token.clone(),
            &widen,
            "invalid_scope",
            "scope[0].resources[0]: `repo:*` is outside",
        ),
        (
            "too deep",
            b_token.clone(),
            &[],
            "invalid_grant",
            "depth 2 is above the limit of 1",
        ),
        (
            "to itself",
            t.root_token.clone(),
            &[],
            "invalid_grant",
            "actor_token: an agent cannot delegate to itself",
        ),
        (
            "outliving the parent",
            t.root_token.clone(),
            &[("ttl_secs", "100000")],
            "invalid_request",
            "ttl_secs: 100000s would outlive the parent task",
        ),
        (
            "garbage parent",
            "not-a-token".into(),
            &[],
            "invalid_grant",
            "subject_token",
        ),
    ];
    for (what, subject, extra, error, says) in cases {
        let actor = match what {
            "to itself" => &t.lead,
            "too deep" => &t.intern,
            _ => &t.helper,
        };
        let (st, v) = t.hand_down(&subject, actor, extra).await;
        assert!(st.is_client_error(), "{what}: {st} {v}");
        assert_eq!(v["error"], error, "{what}: {v}");
        assert!(
            v["error_description"].as_str().unwrap().contains(says),
            "{what}: {v}"
        );
    }
    // Another environment: the actor token's agent is in production.
    let (st, v) = t.hand_down(&t.root_token, &prod, &[]).await;
    assert!(st.is_client_error(), "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("environment"),
        "{v}"
    );
    // A malformed actor token, a missing type, a huge scope list.
    let (st, v) = t.hand_down(&t.root_token, "garbage", &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("actor_token"),
        "{v}"
    );
    let huge: Vec<Value> = (0..40)
        .map(|i| json!({"tool": format!("tool-{i}"), "actions": ["a:b"]}))
        .collect();
    let (st, v) = t
        .delegate_api(
            &t.root,
            &t.helper,
            json!({"subject_token": t.root_token, "scope": huge}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("scope"),
        "{v}"
    );
    // The JSON endpoint: a token of another task than the path's.
    let (st, v) = t
        .delegate_api(
            &b_task,
            &t.intern,
            json!({"subject_token": t.root_token,
                   "scope": [{"tool": "github", "actions": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_subject_token");
    // Refused delegations write no task and no event (a refused grant at
    // the token endpoint is audited, as any refused exchange).
    let after = t.counts().await;
    assert_eq!(after.0, before.0, "no task was written");
}

#[tokio::test]
async fn a_dpop_bound_parent_token_is_not_handed_on() {
    let t = team_with(3).await;
    let (st, task) =
        t.s.create_task(
            &t.lead,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let id = task["id"].as_str().unwrap();
    let (key, _) = mandate_token::SigningKey::generate(mandate_token::SigningAlg::Es256).unwrap();
    let proof =
        mandate_token::dpop::sign_proof(&key, "POST", &t.s.url("/oauth/token"), None, now())
            .unwrap();
    let (st, v) = t.s.exchange_dpop(&t.lead, id, GITHUB, &proof).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let bound = v["access_token"].as_str().unwrap();
    let (st, v) = t.hand_down(bound, &t.helper, &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("DPoP-bound"),
        "{v}"
    );
}

#[tokio::test]
async fn a_foreign_actor_token_or_an_expired_parent_is_refused_by_name() {
    let t = team_with(3).await;
    // A session from another broker, of another trust domain: its key is
    // not this broker's.
    let other = TestServer::start_with(|c| c.trust_domain = "other.example".into()).await;
    other.seed().await;
    other
        .admin_post(
            "/v1/agents",
            json!({"name": "helper", "owner": "platform", "environment": "staging",
                   "allowed_tools": ["github"]}),
        )
        .await;
    let foreign = other.session("helper").await;
    assert!(
        claims(&foreign)["sub"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://other.example/")
    );
    let before = t.counts().await.0;
    let (st, v) = t.hand_down(&t.root_token, &foreign, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("actor_token"),
        "{v}"
    );
    let (st, v) = t
        .delegate_api(
            &t.root,
            &foreign,
            json!({"subject_token": t.root_token,
                   "scope": [{"tool": "github", "actions": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");

    // A parent token whose task has run out.
    let (st, task) =
        t.s.create_task(
            &t.lead,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            // Two seconds: at one, a clock tick between creating and
            // exchanging left no token to hand down.
            Some(2),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let (_, v) =
        t.s.exchange(&t.lead, task["id"].as_str().unwrap(), GITHUB, &[])
            .await;
    let short = v["access_token"]
        .as_str()
        .expect("a token while the task lives")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (st, v) = t.hand_down(&short, &t.helper, &[]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{v}"
    );
    let why = v["error_description"].as_str().unwrap();
    assert!(
        why.starts_with("subject_token") && why.contains("expired"),
        "{why}"
    );
    assert_eq!(
        t.counts().await.0,
        before + 1,
        "only the short task was written"
    );
}
