//! Building Cedar requests from Mandate facts, and reading the answer back
//! as reasons a person can act on. Any evaluation error denies (fail closed).

use crate::{MandateAction, PolicySet};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression,
};
use mandate_core::{Environment, Sensitivity, TaskState};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

pub struct AgentFacts<'a> {
    pub name: &'a str,
    pub environment: Environment,
    pub owner: &'a str,
}

pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub environment: Environment,
    pub sensitivity: Sensitivity,
}

pub struct TaskFacts<'a> {
    pub id: &'a str,
    pub state: TaskState,
    pub intent: &'a str,
    pub environment: Environment,
    pub approved: bool,
    pub delegation_depth: i64,
}

/// One request an agent makes with a grant.
pub struct InvokeRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    pub action: &'a str,
    pub resource: &'a str,
    pub grant_actions: &'a [String],
    pub resource_in_scope: bool,
    /// Defaults to the task's environment.
    pub request_environment: Option<Environment>,
    /// Defaults to `public`.
    pub data_sensitivity: Option<Sensitivity>,
    pub anomaly_score: i64,
    pub now: i64,
}

/// An agent asking for a task that touches one tool.
pub struct TaskStartRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    pub requested_actions: &'a [String],
    pub anomaly_score: i64,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub reasons: Vec<String>,
    pub policy_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDecision {
    Allow {
        policy_ids: Vec<String>,
    },
    Deny {
        reasons: Vec<String>,
        policy_ids: Vec<String>,
    },
    PendingApproval {
        reasons: Vec<String>,
        policy_ids: Vec<String>,
    },
}

fn rank(s: Sensitivity) -> i64 {
    match s {
        Sensitivity::Public => 0,
        Sensitivity::Internal => 1,
        Sensitivity::Confidential => 2,
        Sensitivity::Restricted => 3,
    }
}

fn type_name(name: &'static str, cell: &'static OnceLock<EntityTypeName>) -> EntityTypeName {
    cell.get_or_init(|| EntityTypeName::from_str(name).expect("static type name parses"))
        .clone()
}

fn agent_uid(name: &str) -> EntityUid {
    static T: OnceLock<EntityTypeName> = OnceLock::new();
    EntityUid::from_type_name_and_id(type_name("Mandate::Agent", &T), EntityId::new(name))
}

fn tool_uid(name: &str) -> EntityUid {
    static T: OnceLock<EntityTypeName> = OnceLock::new();
    EntityUid::from_type_name_and_id(type_name("Mandate::Tool", &T), EntityId::new(name))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn entities(agent: &AgentFacts<'_>, tool: &ToolFacts<'_>) -> Result<Entities, String> {
    let a = Entity::new(
        agent_uid(agent.name),
        HashMap::from([
            ("environment".into(), s(agent.environment.as_str())),
            ("owner".into(), s(agent.owner)),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    let t = Entity::new(
        tool_uid(tool.name),
        HashMap::from([
            ("environment".into(), s(tool.environment.as_str())),
            ("sensitivity".into(), s(tool.sensitivity.as_str())),
            (
                "sensitivity_rank".into(),
                RestrictedExpression::new_long(rank(tool.sensitivity)),
            ),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    Entities::from_entities([a, t], None).map_err(|e| e.to_string())
}

fn task_record(t: &TaskFacts<'_>) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record([
        ("id".into(), s(t.id)),
        ("state".into(), s(t.state.as_str())),
        ("intent".into(), s(t.intent)),
        ("environment".into(), s(t.environment.as_str())),
        (
            "approved".into(),
            RestrictedExpression::new_bool(t.approved),
        ),
        (
            "delegation_depth".into(),
            RestrictedExpression::new_long(t.delegation_depth),
        ),
    ])
    .map_err(|e| e.to_string())
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|i| s(i)))
}

fn authorizer() -> &'static Authorizer {
    static A: OnceLock<Authorizer> = OnceLock::new();
    A.get_or_init(Authorizer::new)
}

fn policy_error(e: String) -> Decision {
    Decision {
        allowed: false,
        reasons: vec![format!("policy-error: {e}")],
        policy_ids: Vec::new(),
    }
}

impl PolicySet {
    fn evaluate(
        &self,
        action: MandateAction,
        principal: EntityUid,
        resource: EntityUid,
        context: Result<Context, String>,
        entities: Result<Entities, String>,
    ) -> Decision {
        let (context, entities) = match (context, entities) {
            (Ok(c), Ok(e)) => (c, e),
            (Err(e), _) | (_, Err(e)) => return policy_error(e),
        };
        let request = match Request::new(principal, action.uid(), resource, context, None) {
            Ok(r) => r,
            Err(e) => return policy_error(e.to_string()),
        };
        let Some(slice) = self.0.slices.get(&action) else {
            return policy_error(format!("no policy slice for {action:?}"));
        };
        let response = authorizer().is_authorized(&request, slice, &entities);
        let diag = response.diagnostics();
        let errors: Vec<String> = diag
            .errors()
            .map(|e| format!("policy-error: {e}"))
            .collect();
        let ids: Vec<String> = diag.reason().map(|id| id.to_string()).collect();
        let described = |ids: &[String]| -> Vec<String> {
            ids.iter()
                .map(|id| {
                    let text = self
                        .0
                        .reasons
                        .get(&cedar_policy::PolicyId::new(id))
                        .map(String::as_str)
                        .unwrap_or("");
                    format!("{id}: {text}")
                })
                .collect()
        };
        if !errors.is_empty() {
            // A policy that cannot be evaluated might have been a forbid: deny.
            return Decision {
                allowed: false,
                reasons: errors,
                policy_ids: ids,
            };
        }
        match response.decision() {
            cedar_policy::Decision::Allow => Decision {
                allowed: true,
                reasons: described(&ids),
                policy_ids: ids,
            },
            cedar_policy::Decision::Deny if ids.is_empty() => Decision {
                allowed: false,
                reasons: vec!["no-permit: no policy permits this request".into()],
                policy_ids: Vec::new(),
            },
            cedar_policy::Decision::Deny => Decision {
                allowed: false,
                reasons: described(&ids),
                policy_ids: ids,
            },
        }
    }

    /// May this agent do this action on this resource with this grant, now?
    pub fn decide_invoke(&self, r: &InvokeRequest<'_>) -> Decision {
        let context = (|| {
            let request = RestrictedExpression::new_record([
                ("action".into(), s(r.action)),
                ("resource".into(), s(r.resource)),
                (
                    "environment".into(),
                    s(r.request_environment.unwrap_or(r.task.environment).as_str()),
                ),
                (
                    "data_sensitivity_rank".into(),
                    RestrictedExpression::new_long(r.data_sensitivity.map(rank).unwrap_or(0)),
                ),
            ])
            .map_err(|e| e.to_string())?;
            Context::from_pairs([
                ("task".into(), task_record(&r.task)?),
                ("request".into(), request),
                ("grant_actions".into(), string_set(r.grant_actions)),
                (
                    "resource_in_scope".into(),
                    RestrictedExpression::new_bool(r.resource_in_scope),
                ),
                (
                    "anomaly_score".into(),
                    RestrictedExpression::new_long(r.anomaly_score),
                ),
                ("now".into(), RestrictedExpression::new_long(r.now)),
            ])
            .map_err(|e| e.to_string())
        })();
        self.evaluate(
            MandateAction::Invoke,
            agent_uid(r.agent.name),
            tool_uid(r.tool.name),
            context,
            entities(&r.agent, &r.tool),
        )
    }

    /// May this agent start a task touching this tool, and does it need approval?
    pub fn decide_task_start(&self, r: &TaskStartRequest<'_>) -> TaskDecision {
        let context = || {
            Context::from_pairs([
                ("task".into(), task_record(&r.task)?),
                ("requested_actions".into(), string_set(r.requested_actions)),
                (
                    "anomaly_score".into(),
                    RestrictedExpression::new_long(r.anomaly_score),
                ),
                ("now".into(), RestrictedExpression::new_long(r.now)),
            ])
            .map_err(|e| e.to_string())
        };
        let ents = || entities(&r.agent, &r.tool);
        let start = self.evaluate(
            MandateAction::StartTask,
            agent_uid(r.agent.name),
            tool_uid(r.tool.name),
            context(),
            ents(),
        );
        if !start.allowed {
            return TaskDecision::Deny {
                reasons: start.reasons,
                policy_ids: start.policy_ids,
            };
        }
        let approval = self.evaluate(
            MandateAction::RequireApproval,
            agent_uid(r.agent.name),
            tool_uid(r.tool.name),
            context(),
            ents(),
        );
        if approval.allowed {
            TaskDecision::PendingApproval {
                reasons: approval.reasons,
                policy_ids: approval.policy_ids,
            }
        } else if approval
            .reasons
            .iter()
            .any(|r| r.starts_with("policy-error"))
        {
            // Could not tell whether approval is needed: do not start it unapproved.
            TaskDecision::Deny {
                reasons: approval.reasons,
                policy_ids: approval.policy_ids,
            }
        } else {
            TaskDecision::Allow {
                policy_ids: start.policy_ids,
            }
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
