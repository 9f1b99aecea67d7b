//! Step-up approval in the one decision path: which requests policy holds
//! for a person, how a looked-up approval settles them, and that no
//! approval ever lets through what `invoke` alone refuses.

use super::*;
use crate::{DEFAULT_POLICIES, DEFAULT_SCHEMA};
use mandate_core::{ApprovalState, Decided, Extent, RandomId, ToolName};
use mandate_token::claims::{AccessClaims, AuthorizationDetail, DETAIL_TYPE};
use proptest::prelude::*;
use serde_json::json;

const NOW: i64 = 1_700_000_000; // a Tuesday, 22:13 UTC
const TASK: &str = "task_0123456789abcdef0123456789abcdef";

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn set(extra: &str) -> Arc<PolicySet> {
    let mut files = vec![("default.cedar".to_owned(), DEFAULT_POLICIES.to_owned())];
    if !extra.is_empty() {
        files.push(("extra.cedar".to_owned(), extra.to_owned()));
    }
    Arc::new(PolicySet::from_sources(DEFAULT_SCHEMA, &files).unwrap_or_else(|e| panic!("{e}")))
}

const EXAMPLES: &str = include_str!("../policies/examples/approvals.cedar");
/// Holds every request `invoke` allows.
const HOLD_ALL: &str = r#"
@id("hold-everything")
@reason("test: every request waits")
permit (principal, action == Mandate::Action::"require_approval", resource)
when { context.stage == "request" };
"#;

/// A request, varied by the property test.
#[derive(Debug, Clone)]
struct Req {
    tool_env: &'static str,
    token_env: &'static str,
    sensitivity: &'static str,
    scope_actions: Vec<&'static str>,
    action: &'static str,
    resource: &'static str,
    approved_task: bool,
    task_state: &'static str,
    amount: Option<i64>,
    breakglass: bool,
}

impl Req {
    fn ok() -> Req {
        Req {
            tool_env: "production",
            token_env: "production",
            sensitivity: "restricted",
            scope_actions: vec!["charges:write", "charges:read"],
            action: "charges:write",
            resource: "acct:1",
            approved_task: true,
            task_state: "active",
            amount: None,
            breakglass: false,
        }
    }

    fn run(&self, policy: &Arc<PolicySet>) -> Result<Allowed, Refused> {
        let tool: Arc<Tool> = from(json!({
            "name": "payments", "audience": "https://pay.example", "owner": "fin",
            "environment": self.tool_env, "sensitivity": self.sensitivity, "max_ttl_secs": 600,
            "actions": ["charges:read", "charges:write", "charges:delete"],
            "description": "", "created_at": 0
        }));
        let agent: Arc<Agent> = from(json!({
            "name": "bot", "spiffe_id": "spiffe://example.org/agent/bot",
            "owner": "platform", "environment": "production", "allowed_tools": ["payments"],
            "description": "", "state": "active", "enrolled_key": null, "created_at": 0
        }));
        let mut task = json!({
            "id": TASK, "agent": "bot", "intent": "refund",
            "scope": [{"tool": "payments", "actions": self.scope_actions, "resources": ["acct:*"]}],
            "environment": "production", "state": self.task_state, "requested_by": null,
            "reasons": [], "created_at": 0, "deadline": NOW + 600, "ended_at": null
        });
        if self.approved_task {
            task["approval"] = json!("apr_0123456789abcdef0123456789abcdef");
        }
        if self.breakglass {
            task["breakglass"] =
                json!({"justification": "INC-1", "opened_by": "admin:o", "opened_at": 0});
        }
        let task: Arc<Task> = from(task);
        let token = Arc::new(VerifiedAccess {
            kid: "k1".into(),
            claims: AccessClaims {
                iss: "https://mandate.example".into(),
                sub: "spiffe://example.org/agent/bot".into(),
                aud: "https://pay.example".into(),
                exp: NOW + 300,
                iat: NOW,
                nbf: NOW,
                jti: "jti-1".into(),
                client_id: "bot".into(),
                txn: TASK.into(),
                scope: self.scope_actions.join(" "),
                authorization_details: vec![AuthorizationDetail {
                    type_: DETAIL_TYPE.into(),
                    tool: "payments".into(),
                    actions: self.scope_actions.iter().map(|a| a.to_string()).collect(),
                    resources: vec!["acct:*".into()],
                    environment: Some(self.token_env.into()),
                    sensitivity: None,
                }],
                cnf: None,
                act: None,
                root_txn: None,
                breakglass: false,
            },
        });
        let recent = RecentDecisions::default();
        let replay = dpop::ReplayGuard::default();
        authorize_request(
            &token,
            &Holder {
                revoked: None,
                agent: Some(&agent),
                task: Some(&task),
            },
            &Asked {
                tool: Ok(&tool),
                operation: Operation::Named {
                    action: self.action,
                    resource: self.resource,
                },
                environment: None,
                data_sensitivity: None,
                amount: self.amount,
                presentation: Presentation::Bearer,
            },
            &Judge {
                policy,
                replay: &replay,
                recent: &recent,
                now: NOW,
            },
        )
    }
}

fn approval(held: Held, state: ApprovalState) -> Approval {
    Approval {
        id: ApprovalId::from_random([9; 16]),
        task: TaskId::parse(TASK).unwrap(),
        agent: AgentName::parse("bot").unwrap(),
        owner: mandate_core::OwnerName::parse("platform").unwrap(),
        environment: Environment::Production,
        chain: vec![],
        held,
        intent: "refund".into(),
        policy_ids: vec![],
        reasons: vec![],
        state,
        requested_at: NOW,
        valid_until: NOW + 600,
        decided: Some(Decided {
            by: "admin:a".into(),
            at: NOW,
            note: None,
            extent: Some(Extent::Once),
        }),
        used_at: None,
    }
}

fn pending_of(r: Result<Allowed, Refused>) -> Refused {
    let refused = r.expect_err("held");
    assert_eq!(refused.refusal, Refusal::ApprovalPending, "{refused:?}");
    assert!(refused.pending.is_some() && refused.approval().is_none());
    refused
}

#[test]
fn a_write_on_a_restricted_tool_is_held_by_default_and_a_read_is_not() {
    let refused = pending_of(Req::ok().run(&set("")));
    assert_eq!(refused.policy_ids, vec!["restricted-write-needs-approval"]);
    let held = &refused.pending.as_ref().unwrap().held;
    assert_eq!(
        held,
        &Held::Request {
            tool: ToolName::parse("payments").unwrap(),
            action: "charges:write".into(),
            resource: "acct:1".into(),
            amount: None
        }
    );
    let read = Req {
        action: "charges:read",
        ..Req::ok()
    };
    assert!(read.run(&set("")).is_ok());
    let internal = Req {
        sensitivity: "internal",
        ..Req::ok()
    };
    assert!(internal.run(&set("")).is_ok(), "only restricted tools");
}

#[test]
fn a_held_request_settles_by_its_approval() {
    let refused = pending_of(Req::ok().run(&set("")));
    let held = refused.pending.as_ref().unwrap().held.clone();

    let granted = approval(held.clone(), ApprovalState::Used);
    let allowed = settle(refused.clone(), Settled::Allowed(&granted)).unwrap();
    assert_eq!(allowed.action, "charges:write");

    let waiting = approval(held.clone(), ApprovalState::Pending);
    let r = settle(refused.clone(), Settled::Waiting(&waiting)).unwrap_err();
    assert_eq!(
        (r.refusal, r.approval()),
        (Refusal::ApprovalPending, Some(&waiting.id))
    );
    assert!(r.message.contains(waiting.id.as_str()), "{}", r.message);

    let denied = approval(held, ApprovalState::Denied);
    let r = settle(refused.clone(), Settled::Denied(&denied)).unwrap_err();
    assert_eq!(r.refusal, Refusal::ApprovalDenied);

    // An approval of another resource never releases this one.
    let other = approval(
        Held::Request {
            tool: ToolName::parse("payments").unwrap(),
            action: "charges:write".into(),
            resource: "acct:2".into(),
            amount: None,
        },
        ApprovalState::Granted,
    );
    let r = settle(refused, Settled::Allowed(&other)).unwrap_err();
    assert_eq!(r.refusal, Refusal::PolicyDenied);
}

#[test]
fn settling_a_refusal_that_holds_nothing_changes_nothing() {
    let denied = Req {
        action: "charges:delete",
        ..Req::ok()
    }
    .run(&set(""))
    .unwrap_err();
    assert_eq!(denied.refusal, Refusal::PolicyDenied);
    let any = approval(
        Held::Request {
            tool: ToolName::parse("payments").unwrap(),
            action: "charges:delete".into(),
            resource: "acct:1".into(),
            amount: None,
        },
        ApprovalState::Granted,
    );
    assert_eq!(
        settle(denied.clone(), Settled::Allowed(&any)).unwrap_err(),
        denied
    );
}

#[test]
fn the_example_rules_hold_off_hours_production_and_large_payments() {
    let examples = set(EXAMPLES);
    let read = Req {
        action: "charges:read",
        ..Req::ok()
    };
    // NOW is 22:13 UTC: outside business hours.
    let r = pending_of(read.run(&examples));
    assert_eq!(r.policy_ids, vec!["production-off-hours-needs-approval"]);
    let staging = Req {
        tool_env: "staging",
        token_env: "staging",
        ..read.clone()
    };
    // A staging tool for a production task is refused outright, never held.
    let r = staging.run(&examples).unwrap_err();
    assert_eq!(r.refusal, Refusal::PolicyDenied);
    assert_eq!(r.policy_ids, vec!["deny-cross-environment"]);

    let big = Req {
        amount: Some(1001),
        ..read.clone()
    };
    let r = pending_of(big.run(&examples));
    assert!(
        r.policy_ids
            .contains(&"large-payment-needs-approval".to_owned())
    );
    let Held::Request { amount, .. } = &r.pending.as_ref().unwrap().held else {
        panic!()
    };
    assert_eq!(
        *amount,
        Some(1001),
        "the amount is part of what is approved"
    );
}

#[test]
fn business_hours_are_read_from_now_in_utc() {
    use crate::decide::hour_and_weekday;
    assert_eq!(hour_and_weekday(0), (0, 3), "1970-01-01 was a Thursday");
    assert_eq!(
        hour_and_weekday(NOW),
        (22, 1),
        "2023-11-14 22:13 was a Tuesday"
    );
    assert_eq!(hour_and_weekday(NOW + 2 * 3600 + 47 * 60), (1, 2));
    assert_eq!(
        hour_and_weekday(-1),
        (23, 2),
        "before the epoch: Wednesday 23:59"
    );
}

fn reqs() -> impl Strategy<Value = Req> {
    let env = prop_oneof![Just("staging"), Just("production")];
    let sens = prop_oneof![Just("internal"), Just("restricted")];
    let action = prop_oneof![
        Just("charges:read"),
        Just("charges:write"),
        Just("charges:delete"),
        Just("refunds:write")
    ];
    let scope = proptest::sample::subsequence(vec!["charges:read", "charges:write"], 1..=2);
    let resource = prop_oneof![Just("acct:1"), Just("user:1")];
    let state = prop_oneof![Just("active"), Just("suspended"), Just("pending_approval")];
    (
        env.clone(),
        env,
        sens,
        scope,
        action,
        resource,
        any::<bool>(),
        state,
        proptest::option::of(0i64..3000),
        any::<bool>(),
    )
        .prop_map(
            |(
                tool_env,
                token_env,
                sensitivity,
                scope_actions,
                action,
                resource,
                approved_task,
                task_state,
                amount,
                breakglass,
            )| Req {
                tool_env,
                token_env,
                sensitivity,
                scope_actions,
                action,
                resource,
                approved_task,
                task_state,
                amount,
                breakglass,
            },
        )
}

proptest! {
    /// An approval or a break-glass only ever releases what `invoke` alone
    /// allows (a break-glass task counts as approved, and is never held):
    /// whatever
    /// the request (other environments, tools, actions, resources, task
    /// states), a held request settled by a granted approval for exactly
    /// it is allowed iff the same request is allowed with no approval
    /// rules at all, and an approval for anything else releases nothing.
    #[test]
    fn no_approval_widens_a_task(req in reqs()) {
        let held_everywhere = set(&format!("{HOLD_ALL}\n{EXAMPLES}"));
        let no_holds = Arc::new(
            PolicySet::from_sources(
                DEFAULT_SCHEMA,
                &[("d.cedar".to_owned(), DEFAULT_POLICIES.replace(
                    "permit (principal, action == Mandate::Action::\"require_approval\"",
                    "forbid (principal, action == Mandate::Action::\"require_approval\"",
                ))],
            )
            .unwrap(),
        );
        // What `invoke` alone says, the task approved by a person.
        let plain = Req { approved_task: req.approved_task || req.breakglass, breakglass: false, ..req.clone() }
            .run(&no_holds);
        let settled = match req.run(&held_everywhere) {
            Err(r) if r.pending.is_some() && req.breakglass => {
                prop_assert!(false, "a break-glass request was held: {:?}", r);
                unreachable!()
            }
            Err(r) if r.pending.is_some() => {
                let held = r.pending.as_ref().unwrap().held.clone();
                let mut other = held.clone();
                if let Held::Request { resource, .. } = &mut other {
                    resource.push('x');
                }
                let wrong = approval(other, ApprovalState::Granted);
                prop_assert!(settle(r.clone(), Settled::Allowed(&wrong)).is_err());
                settle(r, Settled::Allowed(&approval(held, ApprovalState::Granted)))
            }
            other => other,
        };
        prop_assert_eq!(settled.is_ok(), plain.is_ok(), "{:?} vs {:?}", settled, plain);
        if let (Ok(a), Ok(b)) = (&settled, &plain) {
            prop_assert_eq!((&a.action, &a.resource, &a.tool), (&b.action, &b.resource, &b.tool));
        }
    }
}
