//! One decision path: for generated tokens and requests, the broker's
//! `/v1/authorize`, its RFC 7662 introspection and the proxy (real servers
//! over HTTP, a real upstream) give the same answer.
//!
//! - `/v1/authorize` and the proxy: the same decision and refusal code.
//! - Introspection: `active: false` exactly when that code is one of the
//!   token stage (the token itself is dead), whatever the request.

use crate::support;

use mandate_policy::{Refusal, Stage};
use mandate_testkit::serde_json::{Value, json};
use mandate_token::{SigningAlg, SigningKey, dpop, jwt};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::{World, code};

/// How a test token is made or spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    Expired,
    NotYetValid,
    RevokedTask,
    CompletedTask,
    RevokedToken,
    /// Minted for `echo-header`; requests go to `echo` or `echo-basic`.
    WrongAudience,
    /// Its scope entry names `production`; the tools are in `staging`.
    WrongEnvironment,
    /// Agent `ci`'s token naming agent `bot`'s task.
    OtherAgentsTask,
    UnknownTask,
    DpopBoundAsBearer,
    DpopBoundWithProof,
    UnboundUnderDpop,
}

const KINDS: [Kind; 13] = [
    Kind::Valid,
    Kind::Expired,
    Kind::NotYetValid,
    Kind::RevokedTask,
    Kind::CompletedTask,
    Kind::RevokedToken,
    Kind::WrongAudience,
    Kind::WrongEnvironment,
    Kind::OtherAgentsTask,
    Kind::UnknownTask,
    Kind::DpopBoundAsBearer,
    Kind::DpopBoundWithProof,
    Kind::UnboundUnderDpop,
];

/// A generated request: which tool, and read item `n` or create one.
#[derive(Debug, Clone)]
struct Req {
    tool: &'static str,
    read: Option<u32>,
}

impl Req {
    fn method(&self) -> &'static str {
        if self.read.is_some() { "GET" } else { "POST" }
    }
    fn path(&self) -> String {
        match self.read {
            Some(n) => format!("/{}/items/{n}", self.tool),
            None => format!("/{}/items", self.tool),
        }
    }
    /// What the tool's routes make of it (see `support::tool_json`).
    fn action_resource(&self) -> (&'static str, String) {
        match self.read {
            Some(n) => ("items:read", format!("item:{n}")),
            None => ("items:write", "item:new".to_owned()),
        }
    }
}

fn requests() -> impl Strategy<Value = Req> {
    (
        proptest::sample::select(vec!["echo", "echo-basic"]),
        proptest::option::weighted(0.75, 0u32..10_000),
    )
        .prop_map(|(tool, read)| Req { tool, read })
}

/// A token under test and how it is presented.
struct Presented {
    token: String,
    /// The key a DPoP proof is signed with, when one is sent.
    proof_key: Option<SigningKey>,
}

/// Re-sign a token the broker minted with changed claims, with the
/// broker's own key: what a forged-but-validly-signed token looks like.
fn resign(w: &World, token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = mandate_testkit::claims(token);
    edit(&mut claims);
    let key = w.s.app().keys.current();
    jwt::encode(&key, jwt::TYP_ACCESS, &claims).unwrap()
}

async fn make(w: &World, kind: Kind, bot_task: &str) -> Presented {
    let bearer = |token: String| Presented {
        token,
        proof_key: None,
    };
    let now = mandate_testkit::now();
    match kind {
        Kind::Valid => bearer(w.grant("echo", &["items:read"]).await.1),
        Kind::Expired | Kind::NotYetValid => {
            let (_, t) = w.grant("echo", &["items:read"]).await;
            bearer(resign(w, &t, |c| {
                let (nbf, exp) = match kind {
                    Kind::Expired => (now - 120, now - 30),
                    _ => (now + 120, now + 300),
                };
                c["nbf"] = json!(nbf);
                c["iat"] = json!(nbf);
                c["exp"] = json!(exp);
                c["jti"] = json!(format!("forged-{nbf}-{}", rand_hex()));
            }))
        }
        Kind::RevokedTask | Kind::CompletedTask => {
            let (id, t) = w.grant("echo", &["items:read"]).await;
            let verb = if kind == Kind::RevokedTask {
                "revoke"
            } else {
                "complete"
            };
            let (st, v) =
                w.s.post(
                    &format!("/v1/tasks/{id}/{verb}"),
                    Some(&w.session),
                    &json!({}),
                )
                .await;
            assert!(st.is_success(), "{verb}: {st} {v}");
            bearer(t)
        }
        Kind::RevokedToken => {
            let (_, t) = w.grant("echo", &["items:read"]).await;
            let (st, _) =
                w.s.form("/oauth/revoke", Some(&w.session), &[("token", &t)])
                    .await;
            assert_eq!(st, StatusCode::OK);
            bearer(t)
        }
        Kind::WrongAudience => bearer(w.grant("echo-header", &["items:read"]).await.1),
        Kind::WrongEnvironment => {
            let (_, t) = w.grant("echo", &["items:read"]).await;
            bearer(resign(w, &t, |c| {
                c["authorization_details"][0]["environment"] = json!("production");
            }))
        }
        Kind::OtherAgentsTask => {
            let (_, t) = w.grant("echo", &["items:read"]).await;
            bearer(resign(w, &t, |c| c["txn"] = json!(bot_task)))
        }
        Kind::UnknownTask => {
            let (_, t) = w.grant("echo", &["items:read"]).await;
            bearer(resign(w, &t, |c| {
                c["txn"] = json!(format!("task_{}", rand_hex()))
            }))
        }
        Kind::DpopBoundAsBearer | Kind::DpopBoundWithProof => {
            let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
            let token = w.grant_dpop("echo", &["items:read"], &key).await;
            Presented {
                token,
                proof_key: (kind == Kind::DpopBoundWithProof).then_some(key),
            }
        }
        Kind::UnboundUnderDpop => Presented {
            token: w.grant("echo", &["items:read"]).await.1,
            proof_key: Some(SigningKey::generate(SigningAlg::EdDsa).unwrap().0),
        },
    }
}

fn rand_hex() -> String {
    mandate_token::random_bytes::<16>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// What an entry point answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Allow,
    Deny(String),
}

async fn via_proxy(w: &World, p: &Presented, r: &Req) -> Answer {
    let url = w.url(&r.path());
    let mut q = w.http.request(r.method().parse().unwrap(), &url);
    match &p.proof_key {
        None => q = q.bearer_auth(&p.token),
        Some(k) => {
            let now = mandate_testkit::now();
            let proof = dpop::sign_proof(k, r.method(), &url, Some(&p.token), now).unwrap();
            q = q
                .header("authorization", format!("DPoP {}", p.token))
                .header("dpop", proof);
        }
    }
    if r.read.is_none() {
        q = q.body("{}");
    }
    let resp = q.send().await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    if status.is_success() {
        Answer::Allow
    } else {
        let c = code(&body);
        assert!(!c.is_empty(), "{status} without a code: {body}");
        Answer::Deny(c)
    }
}

async fn via_authorize(w: &World, p: &Presented, r: &Req) -> Answer {
    let (action, resource) = r.action_resource();
    let mut body = json!({
        "token": p.token, "audience": format!("https://{}.test", r.tool),
        "action": action, "resource": resource,
    });
    if let Some(k) = &p.proof_key {
        // The resource server passes on what it received.
        let url = w.url(&r.path());
        let now = mandate_testkit::now();
        let proof = dpop::sign_proof(k, r.method(), &url, Some(&p.token), now).unwrap();
        body["dpop"] = json!({"proof": proof, "method": r.method(), "url": url});
    }
    let (st, v) = w.s.post("/v1/authorize", Some(&w.s.root), &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    match v["decision"].as_str() {
        Some("allow") => {
            assert!(v.get("code").is_none(), "{v}");
            Answer::Allow
        }
        Some("deny") => Answer::Deny(v["code"].as_str().expect("a code").to_owned()),
        _ => panic!("{v}"),
    }
}

async fn introspect(w: &World, token: &str) -> bool {
    let (st, v) =
        w.s.form("/oauth/introspect", Some(&w.s.root), &[("token", token)])
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["active"].as_bool().expect("active")
}

fn stage_of(code: &str) -> Stage {
    Refusal::ALL
        .iter()
        .find(|r| r.as_str() == code)
        .unwrap_or_else(|| panic!("`{code}` is not a decision code"))
        .stage()
}

/// All three answers for one case; a revocation reaches the proxy by its
/// feed, so the two decisions are compared until they agree or 5 s pass.
async fn answers(w: &World, p: &Presented, r: &Req) -> (Answer, Answer, bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let broker = via_authorize(w, p, r).await;
        let proxy = via_proxy(w, p, r).await;
        if broker == proxy || Instant::now() > deadline {
            return (broker, proxy, introspect(w, &p.token).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Agent `bot`'s own task, for tokens that name it.
async fn bot_task(w: &World) -> String {
    let session = w.s.session("bot").await;
    let (st, t) =
        w.s.create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_introspection_and_proxy_decide_every_token_alike() {
    let w = World::new().await;
    let bot_task = bot_task(&w).await;
    let mut runner = TestRunner::deterministic();
    let strategy = requests();
    let mut seen_codes = std::collections::BTreeSet::new();
    let mut allowed = 0;
    for kind in KINDS {
        // Two fixed requests on the token's own tool (a read in scope, a
        // write out of it), then generated ones.
        let fixed = [
            Req {
                tool: "echo",
                read: Some(1),
            },
            Req {
                tool: "echo",
                read: None,
            },
        ];
        let generated = (0..6).map(|_| strategy.new_tree(&mut runner).unwrap().current());
        for r in fixed.into_iter().chain(generated) {
            let p = make(&w, kind, &bot_task).await;
            let (broker, proxy, active) = answers(&w, &p, &r).await;
            assert_eq!(broker, proxy, "{kind:?} {r:?}: broker vs proxy");
            let dead = match &broker {
                Answer::Allow => {
                    allowed += 1;
                    false
                }
                Answer::Deny(c) => {
                    seen_codes.insert(c.clone());
                    stage_of(c) == Stage::Token
                }
            };
            assert_eq!(active, !dead, "{kind:?} {r:?}: introspection vs {broker:?}");
        }
    }
    // The cases reach every stage: not a test that agrees on one answer.
    assert!(allowed > 0, "nothing was allowed");
    for c in [
        "token_expired",
        "token_not_yet_valid",
        "revoked",
        "task_not_active",
        "wrong_audience",
        "wrong_environment",
        "invalid_token",
        "unknown_task",
        "dpop_required",
        "not_dpop_bound",
        "policy_denied",
    ] {
        assert!(seen_codes.contains(c), "no case gave `{c}`: {seen_codes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_task_belongs_to_another_agent_is_refused_everywhere() {
    let w = World::new().await;
    let bot_task = bot_task(&w).await;
    let p = make(&w, Kind::OtherAgentsTask, &bot_task).await;
    let r = Req {
        tool: "echo",
        read: Some(1),
    };
    let want = Answer::Deny("invalid_token".into());
    assert_eq!(via_authorize(&w, &p, &r).await, want);
    assert_eq!(via_proxy(&w, &p, &r).await, want);
    assert!(!introspect(&w, &p.token).await);
    // The same token naming its own agent's task is fine: the task is what differs.
    let own = make(&w, Kind::Valid, &bot_task).await;
    assert_eq!(via_authorize(&w, &own, &r).await, Answer::Allow);
}
