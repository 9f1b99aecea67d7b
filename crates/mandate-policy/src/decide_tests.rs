use super::*;
use crate::{DEFAULT_SCHEMA, PolicyError};
use mandate_core::{Environment::*, Sensitivity::*, TaskState};

fn agent(env: Environment) -> AgentFacts<'static> {
    AgentFacts {
        name: "bot",
        environment: env,
        owner: "platform",
    }
}
fn tool(env: Environment, sensitivity: Sensitivity) -> ToolFacts<'static> {
    ToolFacts {
        name: "github",
        environment: env,
        sensitivity,
    }
}
fn task(state: TaskState, approved: bool) -> TaskFacts<'static> {
    TaskFacts {
        id: "task_1",
        state,
        intent: "triage",
        environment: Staging,
        approved,
        delegation_depth: 0,
    }
}

struct Case {
    agent_env: Environment,
    tool_sens: Sensitivity,
    state: TaskState,
    approved: bool,
    action: &'static str,
    in_scope: bool,
    req_env: Option<Environment>,
    data: Option<Sensitivity>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            agent_env: Staging,
            tool_sens: Internal,
            state: TaskState::Active,
            approved: false,
            action: "issues:read",
            in_scope: true,
            req_env: None,
            data: None,
        }
    }
}

fn run(c: Case) -> Decision {
    let grant = vec!["issues:read".to_owned()];
    PolicySet::defaults().decide_invoke(&InvokeRequest {
        agent: agent(c.agent_env),
        tool: tool(Staging, c.tool_sens),
        task: task(c.state, c.approved),
        action: c.action,
        resource: "repo:acme/widgets",
        grant_actions: &grant,
        resource_in_scope: c.in_scope,
        request_environment: c.req_env,
        data_sensitivity: c.data,
        anomaly_score: 0,
        now: 0,
    })
}

fn denied_by(d: &Decision, id: &str) {
    assert!(!d.allowed, "{d:?}");
    assert!(d.policy_ids.iter().any(|p| p == id), "expected {id}: {d:?}");
    assert!(
        d.reasons.iter().any(|r| r.starts_with(id)),
        "reason should name {id}: {d:?}"
    );
}

#[test]
fn allow_in_scope() {
    let d = run(Case::default());
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, vec!["allow-in-scope"]);
}

#[test]
fn deny_cross_environment_by_agent() {
    denied_by(
        &run(Case {
            agent_env: Production,
            ..Case::default()
        }),
        "deny-cross-environment",
    );
}

#[test]
fn deny_cross_environment_by_request() {
    denied_by(
        &run(Case {
            req_env: Some(Production),
            ..Case::default()
        }),
        "deny-cross-environment",
    );
}

#[test]
fn deny_inactive_task_for_every_non_active_state() {
    for &state in TaskState::ALL.iter().filter(|s| **s != TaskState::Active) {
        denied_by(
            &run(Case {
                state,
                ..Case::default()
            }),
            "deny-inactive-task",
        );
    }
}

#[test]
fn deny_action_outside_grant() {
    denied_by(
        &run(Case {
            action: "issues:write",
            ..Case::default()
        }),
        "deny-out-of-scope",
    );
}

#[test]
fn deny_resource_outside_grant() {
    denied_by(
        &run(Case {
            in_scope: false,
            ..Case::default()
        }),
        "deny-out-of-scope",
    );
}

#[test]
fn restricted_tool_needs_approval() {
    denied_by(
        &run(Case {
            tool_sens: Restricted,
            ..Case::default()
        }),
        "deny-restricted-without-approval",
    );
    assert!(
        run(Case {
            tool_sens: Restricted,
            approved: true,
            ..Case::default()
        })
        .allowed
    );
}

#[test]
fn deny_data_above_tool_sensitivity() {
    denied_by(
        &run(Case {
            data: Some(Confidential),
            ..Case::default()
        }),
        "deny-data-above-tool-sensitivity",
    );
    assert!(
        run(Case {
            data: Some(Internal),
            ..Case::default()
        })
        .allowed
    );
}

#[test]
fn no_permit_means_deny() {
    let only_forbid =
        r#"@id("f") forbid(principal, action, resource) when { context.anomaly_score > 100 };"#;
    let set =
        PolicySet::from_sources(DEFAULT_SCHEMA, &[("f.cedar".into(), only_forbid.into())]).unwrap();
    let grant = vec!["issues:read".to_owned()];
    let d = set.decide_invoke(&InvokeRequest {
        agent: agent(Staging),
        tool: tool(Staging, Internal),
        task: task(TaskState::Active, false),
        action: "issues:read",
        resource: "r",
        grant_actions: &grant,
        resource_in_scope: true,
        request_environment: None,
        data_sensitivity: None,
        anomaly_score: 0,
        now: 0,
    });
    assert!(!d.allowed);
    assert_eq!(d.reasons, vec!["no-permit: no policy permits this request"]);
}

fn start(agent_env: Environment, sens: Sensitivity) -> TaskDecision {
    let actions = vec!["issues:read".to_owned()];
    PolicySet::defaults().decide_task_start(&TaskStartRequest {
        agent: agent(agent_env),
        tool: tool(Staging, sens),
        task: TaskFacts {
            environment: agent_env,
            ..task(TaskState::Active, false)
        },
        requested_actions: &actions,
        anomaly_score: 0,
        now: 0,
    })
}

#[test]
fn task_start_allowed_pending_or_denied() {
    assert!(matches!(
        start(Staging, Internal),
        TaskDecision::Allow { .. }
    ));
    match start(Staging, Restricted) {
        TaskDecision::PendingApproval { policy_ids, .. } => {
            assert_eq!(policy_ids, vec!["restricted-needs-approval"])
        }
        other => panic!("{other:?}"),
    }
    match start(Production, Internal) {
        TaskDecision::Deny { policy_ids, .. } => {
            assert_eq!(policy_ids, vec!["deny-cross-environment-task-start"])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn syntax_error_names_the_file() {
    let err = PolicySet::from_sources(
        DEFAULT_SCHEMA,
        &[("broken.cedar".into(), "permit(principal".into())],
    )
    .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Parse { file, .. } if file == "broken.cedar"),
        "{err}"
    );
}

#[test]
fn undeclared_attribute_fails_validation_naming_the_policy() {
    let src = r#"@id("colourful") permit(principal, action == Mandate::Action::"invoke", resource) when { principal.colour == "red" };"#;
    let err =
        PolicySet::from_sources(DEFAULT_SCHEMA, &[("c.cedar".into(), src.into())]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("colourful") && msg.contains("c.cedar"),
        "{msg}"
    );
}

#[test]
fn duplicate_ids_across_files_are_refused() {
    let p = r#"@id("same") permit(principal, action, resource);"#;
    let err = PolicySet::from_sources(
        DEFAULT_SCHEMA,
        &[("a.cedar".into(), p.into()), ("b.cedar".into(), p.into())],
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::DuplicateId { .. }), "{err}");
}

#[test]
fn load_dir_reads_schema_and_policies() {
    let dir = std::env::temp_dir().join(format!("mandate-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schema.cedarschema"), DEFAULT_SCHEMA).unwrap();
    std::fs::write(dir.join("default.cedar"), crate::DEFAULT_POLICIES).unwrap();
    let set = PolicySet::load_dir(&dir).unwrap();
    assert_eq!(set.policy_count(), PolicySet::defaults().policy_count());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn slices_hold_only_policies_for_their_action() {
    let set = PolicySet::defaults();
    let invoke = set.0.slices[&MandateAction::Invoke].policies().count();
    let start = set.0.slices[&MandateAction::StartTask].policies().count();
    assert_eq!(invoke, 6);
    assert_eq!(start, 2);
}
