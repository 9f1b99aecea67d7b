//! Relayed tokens cut the task off: a DPoP-bound token that reaches the
//! proxy without its key (as a bearer token, or with another agent's
//! proof) is refused, the proxy reports the misuse with the call's record,
//! and the broker suspends the task where `on_misuse` says so (production
//! by default), which revokes its tokens and everything delegated below
//! it — at the proxy too, through the revocation feed.

use crate::support;

use mandate_testkit::serde_json::{Value, json};
use mandate_token::{SigningAlg, SigningKey, dpop};
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::{World, code, detail, request_id};

const LEDGER: &str = "https://ledger.test";

/// `session`'s new task on `tool`: its id.
async fn task(w: &World, session: &str, tool: &str) -> String {
    let (st, t) =
        w.s.create_task(
            session,
            json!([{"tool": tool, "actions": ["items:read"]}]),
            Some(600),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

/// Wait until the proxy's catalog has `tool` (asked with a good `token`
/// for it: until then the answer is `unknown_tool`).
async fn known_at_proxy(w: &World, tool: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = w
            .call("GET", &format!("/{tool}/items/7"), Some(token))
            .await;
        if code(&body) != "unknown_tool" {
            return;
        }
        assert!(Instant::now() < deadline, "the proxy never saw `{tool}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(v: &Value) -> String {
    v["access_token"].as_str().unwrap().to_owned()
}

/// A token for `task` bound to `key`.
async fn bound(w: &World, session: &str, task: &str, aud: &str, key: &SigningKey) -> String {
    let endpoint = format!("{}/oauth/token", w.s.app().issuer);
    let proof = dpop::sign_proof(key, "POST", &endpoint, None, mandate_testkit::now()).unwrap();
    let (st, v) = w.s.exchange_dpop(session, task, aud, &proof).await;
    assert_eq!(
        (st, v["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP")),
        "{v}"
    );
    token(&v)
}

/// `GET /{tool}/items/7` under the DPoP scheme with a proof by `key`.
async fn dpop_call(
    w: &World,
    tool: &str,
    tok: &str,
    key: &SigningKey,
) -> (StatusCode, String, String) {
    let url = w.url(&format!("/{tool}/items/7"));
    let proof = dpop::sign_proof(key, "GET", &url, Some(tok), mandate_testkit::now()).unwrap();
    let r = w
        .http
        .get(&url)
        .header("authorization", format!("DPoP {tok}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let (st, id) = (r.status(), request_id(r.headers()));
    (st, id, r.text().await.unwrap())
}

#[tokio::test]
async fn a_bound_token_relayed_to_another_agent_suspends_the_task_and_its_subtree() {
    let w = World::new().await;
    let (lead, helper) = w.production().await;
    let lead_key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let t = task(&w, &lead, "ledger").await;
    let (st, v) = w.s.exchange(&lead, &t, LEDGER, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let plain = token(&v);
    known_at_proxy(&w, "ledger", &plain).await;
    let kept = bound(&w, &lead, &t, LEDGER, &lead_key).await;
    // Part of the task handed to `helper` (from the unbound token).
    let child = w.delegate(&plain, &helper, LEDGER).await;
    let child_task = mandate_testkit::claims(&child)["txn"]
        .as_str()
        .unwrap()
        .to_owned();
    for tok in [&plain, &child] {
        let (st, _, body) = w.call("GET", "/ledger/items/7", Some(tok)).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, _, body) = dpop_call(&w, "ledger", &kept, &lead_key).await;
    assert_eq!(st, StatusCode::OK, "its holder, with its key: {body}");

    // `lead` relays its bound token; `helper` sends it as a bearer token.
    let (st, headers, body) = w.call("GET", "/ledger/items/7", Some(&kept)).await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNAUTHORIZED, "dpop_required".into())
    );
    let relayed_at = request_id(&headers);
    // Not `kept` as a bearer again: each such call is fresh evidence, and a
    // report landing after the operator's resume below suspends the task
    // anew (fail closed), which this test would then trip over.
    let took = w.until_refused("ledger", &[&plain, &child]).await;
    eprintln!("relayed request to the whole subtree refused at the proxy: {took:?}");
    let (st, _, body) = dpop_call(&w, "ledger", &kept, &lead_key).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "the bound token, even with its key: {body}"
    );

    assert_eq!(w.task_state(&t).await, "suspended");
    assert_eq!(w.task_state(&child_task).await, "revoked");
    let misuse = w
        .wait_for("token.misuse", std::slice::from_ref(&relayed_at))
        .await;
    let m = misuse
        .iter()
        .find(|e| e["request_id"] == relayed_at.as_str())
        .unwrap();
    assert_eq!(
        (m["agent"].as_str(), m["task"].as_str()),
        (Some("lead"), Some(t.as_str()))
    );
    assert_eq!(m["tool"], "ledger");
    assert!(m["actor"].as_str().unwrap().starts_with("proxy:"), "{m}");
    let d = &detail(m);
    assert_eq!(d["check"], "dpop_as_bearer");
    assert_eq!(d["bound_jkt"], lead_key.public_jwk().thumbprint().unwrap());
    assert_eq!(d["client"], "127.0.0.1");
    let suspended = w.events_of("task.suspended").await;
    let s = suspended
        .iter()
        .find(|e| e["task"] == t.as_str())
        .expect("task.suspended");
    assert_eq!(
        (s["actor"].as_str(), s["request_id"].as_str()),
        (Some("system"), Some(relayed_at.as_str()))
    );
    assert_eq!(s["reasons"], json!(["token misuse: dpop_as_bearer"]));
    // The evidence never holds a token.
    let all = mandate_testkit::serde_json::to_string(&w.s.events().await).unwrap();
    for tok in [&plain, &child, &kept] {
        assert!(!all.contains(tok.as_str()), "a token in the audit log");
    }

    // An operator resumes the task: its old tokens stay dead, new ones work.
    let (st, v) =
        w.s.post(
            &format!("/v1/tasks/{t}/resume"),
            Some(&w.s.root),
            &json!({}),
        )
        .await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("active")),
        "{v}"
    );
    let (st, _, _) = w.call("GET", "/ledger/items/7", Some(&plain)).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a token from before the suspension"
    );
    let (st, v) = w.s.exchange(&lead, &t, LEDGER, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _, body) = w.call("GET", "/ledger/items/7", Some(&token(&v))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The agent itself may not resume (it may be the one misusing).
    let (st, _) =
        w.s.post(&format!("/v1/tasks/{t}/suspend"), Some(&lead), &json!({}))
            .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) =
        w.s.post(&format!("/v1/tasks/{t}/resume"), Some(&lead), &json!({}))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn a_proof_by_another_key_is_misuse_with_both_thumbprints() {
    let w = World::new().await;
    let (lead, _) = w.production().await;
    let (lead_key, thief) = (
        SigningKey::generate(SigningAlg::EdDsa).unwrap().0,
        SigningKey::generate(SigningAlg::EdDsa).unwrap().0,
    );
    let t = task(&w, &lead, "ledger").await;
    let (st, v) = w.s.exchange(&lead, &t, LEDGER, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    known_at_proxy(&w, "ledger", &token(&v)).await;
    let kept = bound(&w, &lead, &t, LEDGER, &lead_key).await;
    let (st, id, body) = dpop_call(&w, "ledger", &kept, &thief).await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );
    let evs = w.wait_for("token.misuse", std::slice::from_ref(&id)).await;
    let d = &detail(evs.iter().find(|e| e["request_id"] == id.as_str()).unwrap());
    assert_eq!(d["check"], "dpop_other_key");
    assert_eq!(d["bound_jkt"], lead_key.public_jwk().thumbprint().unwrap());
    assert_eq!(d["presented_jkt"], thief.public_jwk().thumbprint().unwrap());
    assert!(
        d["proof_jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{d}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.task_state(&t).await != "suspended" {
        assert!(Instant::now() < deadline, "never suspended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, _, _) = dpop_call(&w, "ledger", &kept, &lead_key).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "its own holder is cut off too"
    );
}

#[tokio::test]
async fn outside_production_misuse_is_recorded_and_the_task_goes_on() {
    let w = World::new().await;
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let kept = w.grant_dpop("echo", &["items:read"], &key).await;
    let t = mandate_testkit::claims(&kept)["txn"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, headers, _) = w.call("GET", "/echo/items/7", Some(&kept)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let id = request_id(&headers);
    let evs = w.wait_for("token.misuse", std::slice::from_ref(&id)).await;
    let m = evs.iter().find(|e| e["request_id"] == id.as_str()).unwrap();
    assert_eq!(detail(m)["check"], "dpop_as_bearer");
    // Staging's `on_misuse` is `alert`: nothing more happens.
    assert_eq!(w.task_state(&t).await, "active");
    let (st, _, body) = dpop_call(&w, "echo", &kept, &key).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(w.events_of("task.suspended").await.is_empty());
}
