//! One test per default policy rule, plus the fail-closed rules.

use super::*;
use crate::{DEFAULT_POLICIES, DEFAULT_SCHEMA};
use mandate_core::{Environment, Environment::*, Sensitivity::*, TaskState};

fn agent(environment: Environment) -> AgentFacts<'static> {
    AgentFacts {
        name: "bot",
        environment,
        owner: "platform",
    }
}

fn tool(environment: Environment, sensitivity: Sensitivity) -> ToolFacts<'static> {
    ToolFacts {
        name: "github",
        environment,
        sensitivity,
    }
}

fn task(state: TaskState, environment: Environment, approved: bool) -> TaskFacts<'static> {
    TaskFacts {
        id: "task_1",
        state,
        intent: "triage",
        environment,
        approved,
        delegation_depth: 0,
        delegation_chain: &[],
        root_intent: "triage",
        breakglass: false,
    }
}

/// An invoke request the defaults allow; each test changes one fact.
struct Case {
    agent_env: Environment,
    task_env: Environment,
    tool_sens: Sensitivity,
    state: TaskState,
    approved: bool,
    action: &'static str,
    in_scope: bool,
    req_env: Option<Environment>,
    data: Option<Sensitivity>,
    delegation_depth: i64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            agent_env: Staging,
            task_env: Staging,
            tool_sens: Internal,
            state: TaskState::Active,
            approved: false,
            action: "issues:read",
            in_scope: true,
            req_env: None,
            data: None,
            delegation_depth: 0,
        }
    }
}

fn invoke_with(set: &PolicySet, c: Case) -> Decision {
    let grant = vec!["issues:read".to_owned()];
    set.decide_invoke(&InvokeRequest {
        agent: agent(c.agent_env),
        tool: tool(Staging, c.tool_sens),
        task: TaskFacts {
            delegation_depth: c.delegation_depth,
            ..task(c.state, c.task_env, c.approved)
        },
        action: c.action,
        resource: "repo:acme/widgets",
        grant_actions: &grant,
        resource_in_scope: c.in_scope,
        request_environment: c.req_env,
        data_sensitivity: c.data,
        anomaly_score: 0,
        now: 1_700_000_000,
        amount: None,
    })
}

fn invoke(c: Case) -> Decision {
    invoke_with(&PolicySet::defaults(), c)
}

/// Denied by exactly this one forbid, whose reason is shown.
fn denied_only_by(d: &Decision, id: &str) {
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, vec![id], "{d:?}");
    assert_eq!(d.reasons.len(), 1, "{d:?}");
    assert!(d.reasons[0].starts_with(&format!("{id}: ")), "{d:?}");
}

fn custom(policies: &str) -> PolicySet {
    PolicySet::from_sources(DEFAULT_SCHEMA, &[("custom.cedar".into(), policies.into())])
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn allow_in_scope() {
    let d = invoke(Case::default());
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, vec!["allow-in-scope"]);
    assert_eq!(
        d.reasons,
        vec!["allow-in-scope: the action and resource are inside the active task's grant"]
    );
}

/// One set, one agent and tool name: a changed attribute must not be
/// answered from the cached entities of the earlier decision.
#[test]
fn cached_entities_follow_attribute_changes() {
    let set = PolicySet::defaults();
    assert!(invoke_with(&set, Case::default()).allowed);
    let moved = invoke_with(
        &set,
        Case {
            agent_env: Production,
            ..Case::default()
        },
    );
    denied_only_by(&moved, "deny-cross-environment");
    let restricted = invoke_with(
        &set,
        Case {
            tool_sens: Restricted,
            ..Case::default()
        },
    );
    assert!(!restricted.allowed, "{restricted:?}");
    assert!(invoke_with(&set, Case::default()).allowed);
    assert_eq!(set.0.parties.0.read().unwrap().len(), 3);
}

#[test]
fn a_delegated_task_never_reaches_a_restricted_tool() {
    let approved_restricted = |depth| Case {
        tool_sens: Restricted,
        approved: true,
        delegation_depth: depth,
        ..Case::default()
    };
    assert!(invoke(approved_restricted(0)).allowed);
    denied_only_by(&invoke(approved_restricted(1)), "deny-delegated-restricted");
    assert!(
        invoke(Case {
            delegation_depth: 2,
            ..Case::default()
        })
        .allowed,
        "an internal tool stays usable down the chain"
    );
}

#[test]
fn policy_sees_the_chain_and_the_root_intent() {
    let set = custom(
        r#"
        permit (principal, action == Mandate::Action::"invoke", resource)
        when { context.task.delegation_chain.contains("lead") && context.task.root_intent == "release 1.2" };
        "#,
    );
    let link = |agent: &str| mandate_core::Link {
        agent: mandate_core::AgentName::parse(agent).unwrap(),
        task: mandate_core::TaskId::parse("task_0123456789abcdef0123456789abcdef").unwrap(),
    };
    let grant = vec!["issues:read".to_owned()];
    let decide = |chain: &[mandate_core::Link], root_intent: &str| {
        set.decide_invoke(&InvokeRequest {
            agent: agent(Staging),
            tool: tool(Staging, Internal),
            task: TaskFacts {
                delegation_depth: chain.len() as i64,
                delegation_chain: chain,
                root_intent,
                ..task(TaskState::Active, Staging, false)
            },
            action: "issues:read",
            resource: "repo:acme/widgets",
            grant_actions: &grant,
            resource_in_scope: true,
            request_environment: None,
            data_sensitivity: None,
            anomaly_score: 0,
            now: 1_700_000_000,
            amount: None,
        })
        .allowed
    };
    assert!(decide(&[link("lead")], "release 1.2"));
    assert!(!decide(&[link("other")], "release 1.2"));
    assert!(!decide(&[link("lead")], "something else"));
}

#[test]
fn deny_cross_environment_via_agent_environment() {
    let d = invoke(Case {
        agent_env: Production,
        ..Case::default()
    });
    denied_only_by(&d, "deny-cross-environment");
}

#[test]
fn deny_cross_environment_via_request_environment() {
    let d = invoke(Case {
        req_env: Some(Production),
        ..Case::default()
    });
    denied_only_by(&d, "deny-cross-environment");
}

#[test]
fn deny_cross_environment_via_task_environment() {
    let d = invoke(Case {
        task_env: Sandbox,
        ..Case::default()
    });
    denied_only_by(&d, "deny-cross-environment");
}

#[test]
fn deny_inactive_task_for_every_non_active_state() {
    for &state in TaskState::ALL.iter().filter(|s| **s != TaskState::Active) {
        let d = invoke(Case {
            state,
            ..Case::default()
        });
        denied_only_by(&d, "deny-inactive-task");
    }
}

#[test]
fn deny_out_of_scope_when_action_outside_grant() {
    let d = invoke(Case {
        action: "issues:write",
        ..Case::default()
    });
    denied_only_by(&d, "deny-out-of-scope");
}

#[test]
fn deny_out_of_scope_when_resource_not_in_scope() {
    let d = invoke(Case {
        in_scope: false,
        ..Case::default()
    });
    denied_only_by(&d, "deny-out-of-scope");
}

#[test]
fn deny_restricted_without_approval() {
    let d = invoke(Case {
        tool_sens: Restricted,
        ..Case::default()
    });
    denied_only_by(&d, "deny-restricted-without-approval");
}

#[test]
fn restricted_tool_with_approved_task_is_allowed() {
    let d = invoke(Case {
        tool_sens: Restricted,
        approved: true,
        ..Case::default()
    });
    assert!(d.allowed, "{d:?}");
}

#[test]
fn deny_data_above_tool_sensitivity() {
    let d = invoke(Case {
        data: Some(Confidential),
        ..Case::default()
    });
    denied_only_by(&d, "deny-data-above-tool-sensitivity");
}

#[test]
fn data_at_or_below_tool_sensitivity_is_allowed() {
    for data in [Public, Internal] {
        let d = invoke(Case {
            data: Some(data),
            ..Case::default()
        });
        assert!(d.allowed, "{data}: {d:?}");
    }
}

#[test]
fn missing_data_sensitivity_counts_as_public() {
    let d = invoke(Case {
        tool_sens: Public,
        data: None,
        ..Case::default()
    });
    assert!(d.allowed, "{d:?}");
}

#[test]
fn no_permit_means_deny() {
    let only_forbid =
        r#"@id("f") forbid(principal, action, resource) when { context.anomaly_score > 100 };"#;
    let d = invoke_with(&custom(only_forbid), Case::default());
    assert!(!d.allowed);
    assert_eq!(d.reasons, vec!["no-permit: no policy permits this request"]);
    assert!(d.policy_ids.is_empty());
}

// `context.now + big` overflows at evaluation; Cedar would skip that forbid
// and allow, so Mandate must deny instead.
const OVERFLOWING_FORBID: &str = r#"
@id("permit-all") @reason("everything") permit(principal, action, resource);
@id("overflowing-forbid") @reason("broken")
forbid(principal, action, resource) when { context.now + 9223372036854775807 > 0 };
"#;

#[test]
fn evaluation_error_fails_closed() {
    let d = invoke_with(&custom(OVERFLOWING_FORBID), Case::default());
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, vec!["overflowing-forbid"]);
    assert_eq!(d.reasons.len(), 1, "{d:?}");
    assert!(
        d.reasons[0].starts_with("policy-error: overflowing-forbid: "),
        "{d:?}"
    );
}

#[test]
fn evaluation_error_keeps_the_forbids_that_matched() {
    let set = custom(&format!(
        "{OVERFLOWING_FORBID}\n@id(\"deny-all\") @reason(\"no\") forbid(principal, action, resource);"
    ));
    let d = invoke_with(&set, Case::default());
    assert!(!d.allowed);
    assert_eq!(d.policy_ids, vec!["deny-all", "overflowing-forbid"]);
    assert_eq!(d.reasons[0], "deny-all: no");
    assert!(d.reasons[1].starts_with("policy-error: overflowing-forbid: "));
}

#[test]
fn names_cedar_would_not_parse_still_decide() {
    for name in ["", "a\"b", "line\nbreak", "Mandate::Agent::\"x\"", "é\u{0}"] {
        let grant = vec!["issues:read".to_owned()];
        let d = PolicySet::defaults().decide_invoke(&InvokeRequest {
            agent: AgentFacts {
                name,
                ..agent(Staging)
            },
            tool: ToolFacts {
                name,
                ..tool(Staging, Internal)
            },
            task: task(TaskState::Active, Staging, false),
            action: name,
            resource: name,
            grant_actions: &grant,
            resource_in_scope: true,
            request_environment: None,
            data_sensitivity: None,
            anomaly_score: i64::MAX,
            now: i64::MIN,
            amount: None,
        });
        denied_only_by(&d, "deny-out-of-scope");
    }
}

fn start_with(set: &PolicySet, agent_env: Environment, sens: Sensitivity) -> TaskDecision {
    let actions = vec!["issues:read".to_owned()];
    set.decide_task_start(&TaskStartRequest {
        agent: agent(agent_env),
        tool: tool(Staging, sens),
        task: task(TaskState::PendingApproval, agent_env, false),
        requested_actions: &actions,
        anomaly_score: 0,
        now: 1_700_000_000,
    })
}

fn start(agent_env: Environment, sens: Sensitivity) -> TaskDecision {
    start_with(&PolicySet::defaults(), agent_env, sens)
}

#[test]
fn allow_task_start_on_unrestricted_tool() {
    assert_eq!(
        start(Staging, Internal),
        TaskDecision::Allow {
            policy_ids: vec!["allow-task-start".into()]
        }
    );
}

#[test]
fn restricted_needs_approval_at_task_start() {
    match start(Staging, Restricted) {
        TaskDecision::PendingApproval {
            reasons,
            policy_ids,
        } => {
            assert_eq!(policy_ids, vec!["restricted-needs-approval"]);
            assert!(reasons[0].starts_with("restricted-needs-approval: "));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deny_cross_environment_at_task_start() {
    match start(Production, Internal) {
        TaskDecision::Deny {
            reasons,
            policy_ids,
        } => {
            assert_eq!(policy_ids, vec!["deny-cross-environment"]);
            assert!(reasons[0].starts_with("deny-cross-environment: "));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn task_start_is_denied_when_approval_rule_cannot_be_evaluated() {
    let set = custom(
        r#"@id("allow-task-start") permit(principal, action == Mandate::Action::"start_task", resource);
@id("broken-approval")
permit(principal, action == Mandate::Action::"require_approval", resource)
when { context.now + 9223372036854775807 > 0 };"#,
    );
    match start_with(&set, Staging, Internal) {
        TaskDecision::Deny { policy_ids, .. } => assert_eq!(policy_ids, vec!["broken-approval"]),
        other => panic!("{other:?}"),
    }
}

const GITHUB_FREEZE: &str = r#"
@id("allow-all") permit(principal, action, resource);
@id("github-freeze") @reason("github is frozen")
forbid(principal, action == Mandate::Action::"invoke", resource == Mandate::Tool::"github");
"#;

#[test]
fn policy_naming_a_tool_decides_for_that_tool_only() {
    let set = custom(GITHUB_FREEZE);
    let d = invoke_with(&set, Case::default());
    denied_only_by(&d, "github-freeze");
    let grant = vec!["issues:read".to_owned()];
    let other = set.decide_invoke(&InvokeRequest {
        agent: agent(Staging),
        tool: ToolFacts {
            name: "gitlab",
            ..tool(Staging, Internal)
        },
        task: task(TaskState::Active, Staging, false),
        action: "issues:read",
        resource: "repo:x",
        grant_actions: &grant,
        resource_in_scope: true,
        request_environment: None,
        data_sensitivity: None,
        anomaly_score: 0,
        now: 0,
        amount: None,
    });
    assert!(other.allowed, "{other:?}");
}

fn reveal(
    delivery: &'static str,
    state: TaskState,
    human: bool,
    tool_env: Environment,
) -> Decision {
    PolicySet::defaults().decide_reveal(&RevealRequest {
        agent: agent(Staging),
        tool: tool(tool_env, Internal),
        task: task(state, Staging, false),
        delivery,
        secret_name: "gh",
        secret_class: "tool",
        human_credential: human,
        shared: false,
        anomaly_score: 0,
        now: 0,
    })
}

#[test]
fn reveal_only_for_reveal_tools_active_tasks_and_never_human_credentials() {
    let ok = reveal("reveal", TaskState::Active, false, Staging);
    assert!(ok.allowed, "{ok:?}");
    assert_eq!(ok.policy_ids, vec!["allow-reveal-for-reveal-tools"]);
    let inject = reveal("inject", TaskState::Active, false, Staging);
    assert!(
        !inject.allowed && inject.reasons[0].starts_with("no-permit"),
        "{inject:?}"
    );
    assert!(!reveal("reveal", TaskState::Completed, false, Staging).allowed);
    denied_only_by(
        &reveal("reveal", TaskState::Active, true, Staging),
        "deny-reveal-human-credential",
    );
    denied_only_by(
        &reveal("reveal", TaskState::Active, false, Production),
        "deny-cross-environment",
    );
}

#[test]
fn a_model_change_mid_task_is_stopped_by_default_and_a_policy_can_narrow_that() {
    let ask = |set: &PolicySet, from: &str, to: &str| {
        set.decide_continue(&ContinueRequest {
            agent: agent(Staging),
            tool: tool(Staging, Internal),
            task: task(TaskState::Active, Staging, false),
            change: "model",
            from,
            to,
            now: 0,
        })
    };
    let d = ask(
        &PolicySet::defaults(),
        "claude-sonnet-4@1",
        "claude-sonnet-4@2",
    );
    denied_only_by(&d, "suspend-on-model-change");
    assert!(d.reasons[0].contains("model changed"), "{:?}", d.reasons);
    let d = ask(&PolicySet::defaults(), "gpt-5", "gpt-5");
    assert!(d.allowed, "nothing changed: {:?}", d.reasons);
    // A team that accepts a model's new versions says so in Cedar.
    let set = custom(&DEFAULT_POLICIES.replace(
        "context.change.from != context.change.to",
        "!(context.change.from like \"claude-sonnet-4@*\" && context.change.to like \"claude-sonnet-4@*\")",
    ));
    assert!(ask(&set, "claude-sonnet-4@1", "claude-sonnet-4@2").allowed);
    assert!(!ask(&set, "claude-sonnet-4@1", "gpt-5").allowed);
}
