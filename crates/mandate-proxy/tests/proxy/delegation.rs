//! Delegation trees through the real proxy: for random trees (depth ≤ 5,
//! fan-out ≤ 5), revoking any node refuses exactly its subtree at the
//! broker's `/v1/authorize`, its introspection and the proxy, and every
//! token outside it is still good. One feed entry carries the whole
//! subtree to the proxy: a delegated token names every ancestor task.

use crate::support;

use mandate_testkit::serde_json::{Value, json};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::{World, code};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A node: its parent's index (the root has none).
fn trees() -> impl Strategy<Value = Vec<Option<usize>>> {
    // Each new node hangs under an earlier one; depth and fan-out are
    // checked while building, so the shape stays within the limits.
    proptest::collection::vec(proptest::num::usize::ANY, 1..14).prop_map(|picks| {
        let mut parents: Vec<Option<usize>> = vec![None];
        let depth = |p: &[Option<usize>], mut i: usize| {
            let mut d = 0;
            while let Some(up) = p[i] {
                d += 1;
                i = up;
            }
            d
        };
        for pick in picks {
            let candidates: Vec<usize> = (0..parents.len())
                .filter(|&i| depth(&parents, i) < 5)
                .filter(|&i| parents.iter().filter(|p| **p == Some(i)).count() < 5)
                .collect();
            let parent = candidates[pick % candidates.len()];
            parents.push(Some(parent));
        }
        parents
    })
}

struct Node {
    task: String,
    token: String,
}

/// Build the tree: node `i` is agent `n{i}`'s task, handed down from its
/// parent's token by RFC 8693 exchange.
async fn build(w: &World, run: usize, parents: &[Option<usize>]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (i, parent) in parents.iter().enumerate() {
        let name = format!("n{run}x{i}");
        w.s.admin_post(
            "/v1/agents",
            json!({"name": name, "owner": "platform", "environment": "staging",
                   "allowed_tools": ["echo"]}),
        )
        .await;
        let session = w.s.session(&name).await;
        let v = match parent {
            None => {
                let (st, task) =
                    w.s.create_task(
                        &session,
                        json!([{"tool": "echo", "actions": ["items:read"]}]),
                        Some(600),
                    )
                    .await;
                assert_eq!(st, StatusCode::CREATED, "{task}");
                let id = task["id"].as_str().unwrap();
                let (st, v) = w.s.exchange(&session, id, "https://echo.test", &[]).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                v
            }
            Some(p) => {
                let (st, v) =
                    w.s.form(
                        "/oauth/token",
                        None,
                        &[
                            ("grant_type", EXCHANGE),
                            ("subject_token", &nodes[*p].token),
                            (
                                "subject_token_type",
                                "urn:ietf:params:oauth:token-type:access_token",
                            ),
                            ("actor_token", &session),
                            ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                            ("resource", "https://echo.test"),
                        ],
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "node {i} under {p}: {v}");
                v
            }
        };
        let token = v["access_token"].as_str().unwrap().to_owned();
        let task = mandate_testkit::claims(&token)["txn"]
            .as_str()
            .unwrap()
            .to_owned();
        nodes.push(Node { task, token });
    }
    nodes
}

fn in_subtree(parents: &[Option<usize>], node: usize, top: usize) -> bool {
    let mut i = node;
    loop {
        if i == top {
            return true;
        }
        match parents[i] {
            Some(up) => i = up,
            None => return false,
        }
    }
}

/// What the broker and the proxy say of `token`: `/v1/authorize`'s code
/// (or `allow`), introspection's `active`, the proxy's code (or `200`).
async fn answers(w: &World, token: &str) -> (String, bool, String) {
    let v = w.s.authorize(token, "items:read", "item:7").await;
    let authorize = match v["decision"].as_str() {
        Some("allow") => "allow".to_owned(),
        _ => v["code"].as_str().unwrap_or("?").to_owned(),
    };
    let (_, i) =
        w.s.form("/oauth/introspect", Some(&w.s.root), &[("token", token)])
            .await;
    let (st, _, body) = w.call("GET", "/echo/items/7", Some(token)).await;
    let proxy = if st == StatusCode::OK {
        "200".to_owned()
    } else {
        code(&body)
    };
    (authorize, i["active"] == true, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_any_node_refuses_exactly_its_subtree_everywhere() {
    let w = World::new().await;
    let mut runner = TestRunner::deterministic();
    let strategy = (trees(), proptest::num::usize::ANY);
    let mut deepest = 0;
    for run in 0..8 {
        let (parents, pick) = strategy.new_tree(&mut runner).unwrap().current();
        let nodes = build(&w, run, &parents).await;
        eprintln!(
            "run {run}: {} nodes, parents {parents:?}, revoke {}",
            nodes.len(),
            pick % nodes.len()
        );
        for n in &nodes {
            assert_eq!(
                answers(&w, &n.token).await,
                ("allow".into(), true, "200".into())
            );
        }
        let top = pick % nodes.len();
        let (st, v) =
            w.s.post(
                &format!("/v1/tasks/{}/revoke", nodes[top].task),
                Some(&w.s.root),
                &json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let inside: Vec<usize> = (0..nodes.len())
            .filter(|&i| in_subtree(&parents, i, top))
            .collect();
        let below: Vec<Value> = inside
            .iter()
            .filter(|&&i| i != top)
            .map(|&i| json!(nodes[i].task))
            .collect();
        let mut listed: Vec<Value> = v["revoked_subtree"].as_array().cloned().unwrap_or_default();
        listed.sort_by_key(|x| x.to_string());
        let mut want = below.clone();
        want.sort_by_key(|x| x.to_string());
        assert_eq!(listed, want, "the broker names the subtree it revoked");
        for (i, n) in nodes.iter().enumerate() {
            let expect = if inside.contains(&i) {
                ("revoked".to_owned(), false, "revoked".to_owned())
            } else {
                ("allow".to_owned(), true, "200".to_owned())
            };
            // The proxy learns by its revocation feed: allow it a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            let got = loop {
                let got = answers(&w, &n.token).await;
                if got == expect || Instant::now() > deadline {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(
                got, expect,
                "run {run}: node {i} (revoked {top}) in {parents:?}"
            );
        }
        let depth = |mut i: usize| {
            let mut d = 0;
            while let Some(up) = parents[i] {
                d += 1;
                i = up;
            }
            d
        };
        deepest = deepest.max((0..nodes.len()).map(depth).max().unwrap());
    }
    assert!(
        deepest >= 2,
        "the generated trees were too shallow to mean much"
    );
}

#[tokio::test]
async fn a_call_by_the_third_agent_of_a_chain_names_all_three() {
    let w = World::new().await;
    let nodes = build(&w, 99, &[None, Some(0), Some(1)]).await;
    let c = mandate_testkit::claims(&nodes[2].token);
    let spiffe = |i: usize| format!("spiffe://test.local/agent/n99x{i}");
    // RFC 8693 §4.1: the root agent is `sub`, the current actor outermost.
    assert_eq!(c["sub"], spiffe(0));
    assert_eq!(c["act"]["sub"], spiffe(2));
    assert_eq!(c["act"]["txn"], nodes[2].task.as_str());
    assert_eq!(c["act"]["act"]["sub"], spiffe(1));
    assert_eq!(c["act"]["act"]["txn"], nodes[1].task.as_str());
    assert!(c["act"]["act"]["act"].is_null(), "{c}");
    assert_eq!(c["root_txn"], nodes[0].task.as_str());

    let (st, headers, body) = w.call("GET", "/echo/items/7", Some(&nodes[2].token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = support::request_id(&headers);
    let (event, detail) = w.outcome(&id).await;
    assert_eq!(
        (event["agent"].as_str(), event["task"].as_str()),
        (Some("n99x2"), Some(nodes[2].task.as_str()))
    );
    assert_eq!(detail["chain"], json!(["n99x0", "n99x1"]));
    // The broker's own decisions name it the same way.
    let v = w.s.authorize(&nodes[2].token, "items:read", "item:7").await;
    assert_eq!(v["decision"], "allow", "{v}");
    let decision = w
        .events_of("decision")
        .await
        .into_iter()
        .rfind(|e| e["task"] == nodes[2].task.as_str())
        .unwrap();
    let d: Value =
        mandate_testkit::serde_json::from_str(decision["detail"].as_str().unwrap()).unwrap();
    assert_eq!(d["chain"], json!(["n99x0", "n99x1"]));
}
