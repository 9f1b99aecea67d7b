use super::*;
use crate::{AgentState, Environment, OwnerName, RandomId, ResourcePattern};
use proptest::prelude::*;
use serde_json::json;

fn agent(name: &str, env: Environment, tools: &[&str]) -> Agent {
    Agent {
        name: AgentName::parse(name).unwrap(),
        spiffe_id: format!("spiffe://t/agent/{name}"),
        owner: OwnerName::parse("platform").unwrap(),
        environment: env,
        allowed_tools: tools.iter().map(|t| ToolName::parse(t).unwrap()).collect(),
        description: String::new(),
        state: AgentState::Active,
        enrolled_key: None,
        model: None,
        created_at: 0,
    }
}

fn tool(name: &str, no_delegation: bool) -> Tool {
    serde_json::from_value(json!({
        "name": name, "audience": format!("https://{name}.test"), "owner": "platform",
        "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
        "actions": ["r", "w"], "description": "", "created_at": 0,
        "no_delegation": no_delegation,
    }))
    .unwrap()
}

fn scope(v: serde_json::Value) -> Scope {
    serde_json::from_value(v).unwrap()
}

fn id(n: u8) -> TaskId {
    TaskId::from_random([n; 16])
}

fn root(agent: &str, s: Scope, deadline: UnixTime) -> Task {
    Task {
        id: id(1),
        agent: AgentName::parse(agent).unwrap(),
        intent: "root".into(),
        scope: s,
        environment: Environment::Staging,
        state: TaskState::Active,
        requested_by: None,
        reasons: vec![],
        created_at: 0,
        deadline,
        ended_at: None,
        delegation: None,
        model: None,
        approval: None,
        breakglass: None,
    }
}

struct World {
    tools: Vec<Tool>,
}

impl World {
    fn new() -> World {
        World {
            tools: vec![tool("gh", false), tool("db", false), tool("pay", true)],
        }
    }
    fn child(
        &self,
        parent: &Task,
        to: &Agent,
        s: Scope,
        ttl: Option<u32>,
        max_depth: u32,
        n: u8,
    ) -> Result<Task, RuleViolation> {
        let req = ChildRequest {
            agent: to,
            intent: "sub".into(),
            scope: s,
            ttl_secs: ttl,
            model: None,
        };
        delegate(
            parent,
            req,
            max_depth,
            |name| self.tools.iter().find(|t| &t.name == name),
            id(n),
            100,
        )
    }
}

fn field(e: RuleViolation) -> String {
    match e {
        RuleViolation::Delegation { field, .. } | RuleViolation::OutsideScope { field, .. } => {
            field
        }
        RuleViolation::ToolNotAllowed { field, .. } => field,
        other => format!("{other}"),
    }
}

#[test]
fn a_child_narrows_and_records_its_chain() {
    let w = World::new();
    let parent = root(
        "a",
        scope(json!([{"tool": "gh", "actions": ["r", "w"], "resources": ["repo:acme/*"]}])),
        1000,
    );
    let b = agent("b", Environment::Staging, &["gh"]);
    let s = scope(json!([{"tool": "gh", "actions": ["r"], "resources": ["repo:acme/w*"]}]));
    let child = w.child(&parent, &b, s, Some(60), 3, 2).unwrap();
    assert_eq!(child.deadline, 160);
    let d = child.delegation.as_ref().unwrap();
    assert_eq!(
        (d.parent.clone(), d.root.clone(), d.depth()),
        (id(1), id(1), 1)
    );
    assert_eq!(d.chain[0].agent.as_str(), "a");

    let c = agent("c", Environment::Staging, &["gh"]);
    let s = scope(json!([{"tool": "gh", "actions": ["r"], "resources": ["repo:acme/wx"]}]));
    let grandchild = w.child(&child, &c, s, None, 3, 3).unwrap();
    assert_eq!(
        grandchild.deadline, 160,
        "defaults to what the parent has left"
    );
    let d = grandchild.delegation.unwrap();
    assert_eq!(d.root, id(1));
    assert_eq!(d.parent, id(2));
    let chain: Vec<_> = d.chain.iter().map(|l| l.agent.as_str()).collect();
    assert_eq!(chain, ["a", "b"]);
}

#[test]
fn each_rule_refuses_by_field() {
    let w = World::new();
    let parent = root(
        "a",
        scope(json!([
            {"tool": "gh", "actions": ["r"], "resources": ["repo:acme/*"]},
            {"tool": "pay", "actions": ["r"]}
        ])),
        1000,
    );
    let b = agent("b", Environment::Staging, &["gh", "pay"]);
    let gh = |v: serde_json::Value| scope(json!([v]));
    let cases: Vec<(&str, Result<Task, RuleViolation>)> = vec![
        (
            "scope[0].actions[0]",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "gh", "actions": ["w"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "scope[0].resources[0]",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:*"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "scope[0].tool",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "db", "actions": ["r"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "scope[0].tool",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "pay", "actions": ["r"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "ttl_secs",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:acme/x"]})),
                Some(901),
                3,
                2,
            ),
        ),
        (
            "actor_token",
            w.child(
                &parent,
                &agent("a", Environment::Staging, &["gh"]),
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:acme/x"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "actor_token",
            w.child(
                &parent,
                &agent("p", Environment::Production, &["gh"]),
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:acme/x"]})),
                None,
                3,
                2,
            ),
        ),
        (
            "subject_token",
            w.child(
                &parent,
                &b,
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:acme/x"]})),
                None,
                0,
                2,
            ),
        ),
        (
            // The child agent must itself be allowed the tool.
            "scope[0].tool",
            w.child(
                &parent,
                &agent("n", Environment::Staging, &[]),
                gh(json!({"tool": "gh", "actions": ["r"], "resources": ["repo:acme/x"]})),
                None,
                3,
                2,
            ),
        ),
    ];
    for (want, got) in cases {
        assert_eq!(field(got.unwrap_err()), want);
    }
}

#[test]
fn an_ended_task_delegates_nothing_and_a_chain_cannot_loop_back() {
    let w = World::new();
    let s = || scope(json!([{"tool": "gh", "actions": ["r"]}]));
    let mut parent = root("a", s(), 1000);
    let b = agent("b", Environment::Staging, &["gh"]);
    let child = w.child(&parent, &b, s(), None, 3, 2).unwrap();
    let back = w.child(
        &child,
        &agent("a", Environment::Staging, &["gh"]),
        s(),
        None,
        3,
        3,
    );
    assert_eq!(field(back.unwrap_err()), "actor_token");
    parent.state = TaskState::Revoked;
    assert!(matches!(
        w.child(&parent, &b, s(), None, 3, 2),
        Err(RuleViolation::TaskNotActive { .. })
    ));
    let overdue = root("a", s(), 100);
    assert!(matches!(
        w.child(&overdue, &b, s(), None, 3, 2),
        Err(RuleViolation::TaskNotActive { .. })
    ));
}

/// A random scope over tools `gh` and `db`, actions `r`/`w` and resources
/// under `x:` of random depth.
fn any_scope() -> impl Strategy<Value = Scope> {
    let item = |tool: &'static str| {
        (
            proptest::sample::subsequence(vec!["r", "w"], 1..=2),
            proptest::collection::vec("(x:[ab]{0,3}\\*?)|\\*", 1..3),
        )
            .prop_map(move |(actions, resources)| {
                json!({"tool": tool, "actions": actions, "resources": resources})
            })
    };
    (
        proptest::option::of(item("gh")),
        proptest::option::of(item("db")),
    )
        .prop_filter("at least one tool", |(a, b)| a.is_some() || b.is_some())
        .prop_filter_map("valid scope", |(a, b)| {
            let items: Vec<_> = [a, b].into_iter().flatten().collect();
            serde_json::from_value(json!(items)).ok()
        })
}

proptest! {
    /// Whatever is asked, an accepted child never holds more than its
    /// parent: every action and resource of it is covered, and its
    /// deadline is no later.
    #[test]
    fn no_accepted_child_exceeds_its_parent(
        parent_scope in any_scope(),
        asks in proptest::collection::vec((any_scope(), proptest::option::of(0u32..1200)), 1..6),
    ) {
        let w = World::new();
        let steps = asks.len();
        let mut parent = root("a0", parent_scope, 1000);
        let mut depth = 0;
        for (n, (ask, ttl)) in asks.into_iter().enumerate() {
            let to = agent(&format!("a{}", n + 1), Environment::Staging, &["gh", "db"]);
            // A random ask is often refused; the parent's own scope for
            // what it has left never is, so the chain always grows.
            let child = w
                .child(&parent, &to, ask, ttl, 5, n as u8 + 2)
                .or_else(|_| w.child(&parent, &to, parent.scope.clone(), None, 5, n as u8 + 2))
                .expect("the parent's own scope is always delegable");
            depth += 1;
            prop_assert!(child.deadline <= parent.deadline);
            for item in child.scope.items() {
                let mine = parent.scope.item(&item.tool);
                prop_assert!(mine.is_some(), "tool {} not in parent", item.tool);
                let mine = mine.unwrap();
                prop_assert!(item.actions.iter().all(|a| mine.actions.contains(a)));
                prop_assert!(item.resources.iter().all(|r| mine.resources.iter().any(|m: &ResourcePattern| m.covers(r))));
            }
            prop_assert_eq!(child.delegation.as_ref().unwrap().depth() as usize, depth);
            parent = child;
        }
        prop_assert_eq!(depth, steps);
    }
}

#[test]
fn a_no_delegation_tool_is_flagged_in_json_only_when_set() {
    let t = tool("gh", false);
    assert!(
        serde_json::to_value(&t)
            .unwrap()
            .get("no_delegation")
            .is_none()
    );
    let t = tool("pay", true);
    assert_eq!(serde_json::to_value(&t).unwrap()["no_delegation"], true);
}
