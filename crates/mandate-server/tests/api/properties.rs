//! Property: for random tasks and exchange requests against the real server,
//! every minted token's scope ⊆ its task's scope ⊆ the agent's allowed
//! tools, its `exp` ≤ the task deadline — and every request that fits inside
//! the task is granted (the check is not just refusing everything).

use mandate_core::ResourcePattern;
use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use proptest::prelude::*;
use reqwest::StatusCode;

const TOOLS: &[(&str, &str, &[&str])] = &[
    (
        "github",
        "https://api.github.com",
        &["issues:read", "issues:write", "pulls:read"],
    ),
    (
        "jira",
        "https://jira.example",
        &["tickets:read", "tickets:write"],
    ),
];
const ALLOWED: &[&str] = &["github", "jira"];

fn resource() -> impl Strategy<Value = String> {
    prop_oneof![Just("*".to_owned()), "repo:[ab]{0,2}\\*", "repo:[ab]{1,3}"]
}

#[derive(Debug, Clone)]
struct Item {
    tool: usize,
    actions: Vec<usize>,
    resources: Vec<String>,
}

fn item() -> impl Strategy<Value = Item> {
    (
        0..TOOLS.len(),
        proptest::collection::vec(0usize..3, 1..3),
        proptest::collection::vec(resource(), 1..3),
    )
        .prop_map(|(tool, actions, resources)| {
            let n = TOOLS[tool].2.len();
            let mut actions: Vec<usize> = actions.into_iter().map(|a| a % n).collect();
            actions.sort();
            actions.dedup();
            Item {
                tool,
                actions,
                resources,
            }
        })
}

#[derive(Debug, Clone)]
struct Case {
    task: Vec<Item>,
    task_ttl: u32,
    ask_tool: usize,
    ask_actions: Vec<usize>,
    ask_resources: Vec<String>,
    ask_ttl: Option<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(item(), 1..3),
        1u32..2000,
        0..TOOLS.len(),
        proptest::collection::vec(0usize..3, 0..3),
        proptest::collection::vec(resource(), 0..2),
        proptest::option::of(1u32..3000),
    )
        .prop_map(
            |(mut task, task_ttl, ask_tool, ask_actions, ask_resources, ask_ttl)| {
                task.sort_by_key(|i| i.tool);
                task.dedup_by_key(|i| i.tool);
                let n = TOOLS[ask_tool].2.len();
                let mut ask_actions: Vec<usize> = ask_actions.into_iter().map(|a| a % n).collect();
                ask_actions.dedup();
                Case {
                    task,
                    task_ttl,
                    ask_tool,
                    ask_actions,
                    ask_resources,
                    ask_ttl,
                }
            },
        )
}

#[test]
fn minted_scope_within_task_within_agent_and_exp_within_deadline() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, session) = rt.block_on(async {
        let s = TestServer::start().await;
        s.admin_post("/v1/owners", json!({"name": "platform"})).await;
        for (name, aud, actions) in TOOLS {
            s.admin_post(
                "/v1/tools",
                json!({"name": name, "audience": aud, "owner": "platform", "environment": "staging",
                       "sensitivity": "internal", "max_ttl_secs": 900, "actions": actions}),
            )
            .await;
        }
        s.admin_post("/v1/agents", json!({"name": "prop", "owner": "platform", "environment": "staging", "allowed_tools": ALLOWED}))
            .await;
        let session = s.session("prop").await;
        (s, session)
    });
    let granted = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    proptest!(config, |(c in case())| {
        let scope: Vec<Value> = c.task.iter().map(|i| json!({
            "tool": TOOLS[i.tool].0,
            "actions": i.actions.iter().map(|a| TOOLS[i.tool].2[*a]).collect::<Vec<_>>(),
            "resources": i.resources,
        })).collect();
        let (st, task) = rt.block_on(server.create_task(&session, json!(scope), Some(c.task_ttl)));
        prop_assert_eq!(st, StatusCode::CREATED, "{}", task);
        let (tool, aud, actions) = TOOLS[c.ask_tool];
        let scope_param = c.ask_actions.iter().map(|a| actions[*a]).collect::<Vec<_>>().join(" ");
        let details = json!([{"type": "mandate", "tool": tool,
            "actions": c.ask_actions.iter().map(|a| actions[*a]).collect::<Vec<_>>(), "resources": c.ask_resources}]).to_string();
        let ttl = c.ask_ttl.map(|t| t.to_string());
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if !c.ask_resources.is_empty() && !c.ask_actions.is_empty() {
            extra.push(("authorization_details", &details));
        } else if !c.ask_actions.is_empty() {
            extra.push(("scope", &scope_param));
        }
        if let Some(t) = &ttl { extra.push(("requested_ttl", t)); }
        let (st, v) = rt.block_on(server.exchange(&session, task["id"].as_str().unwrap(), aud, &extra));

        let task_item = c.task.iter().find(|i| i.tool == c.ask_tool);
        let fits = task_item.is_some_and(|ti| {
            c.ask_actions.iter().all(|a| ti.actions.contains(a))
                && (c.ask_actions.is_empty() || c.ask_resources.iter().all(|r| {
                    let r = ResourcePattern::parse(r).unwrap();
                    ti.resources.iter().any(|m| ResourcePattern::parse(m).unwrap().covers(&r))
                }))
        });
        if !fits {
            prop_assert_eq!(st, StatusCode::BAD_REQUEST, "outside the task yet granted: {}", v);
            return Ok(());
        }
        prop_assert_eq!(st, StatusCode::OK, "inside the task yet refused: {}", v);
        granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c2 = claims(v["access_token"].as_str().unwrap());
        let detail = &c2["authorization_details"][0];
        let ti = task_item.unwrap();
        prop_assert!(ALLOWED.contains(&detail["tool"].as_str().unwrap()));
        prop_assert_eq!(detail["tool"].as_str().unwrap(), TOOLS[ti.tool].0);
        for a in detail["actions"].as_array().unwrap() {
            prop_assert!(ti.actions.iter().any(|x| TOOLS[ti.tool].2[*x] == a.as_str().unwrap()), "action {} not in task", a);
        }
        for r in detail["resources"].as_array().unwrap() {
            let r = ResourcePattern::parse(r.as_str().unwrap()).unwrap();
            prop_assert!(ti.resources.iter().any(|m| ResourcePattern::parse(m).unwrap().covers(&r)), "resource {:?} not in task", r);
        }
        prop_assert!(c2["exp"].as_i64().unwrap() <= task["deadline"].as_i64().unwrap());
        prop_assert!(c2["exp"].as_i64().unwrap() - c2["iat"].as_i64().unwrap() <= 900);
    });
    let granted = granted.into_inner();
    assert!(
        granted > 5,
        "the property must exercise real grants, got {granted}"
    );
}
