//! Building Cedar requests from Mandate facts, and reading the answer back as
//! reasons a person can act on. Fails closed: a request Cedar cannot build or
//! a policy it cannot evaluate denies.

use crate::facts::{
    AgentFacts, ApprovalNeed, ContinueRequest, Decision, Hold, HoldRequest, HoldStage,
    InvokeRequest, RequestFacts, RevealRequest, TaskFacts, TaskStartRequest, ToolFacts,
};
use crate::{MandateAction, PolicySet, TaskDecision};
use cedar_policy::{
    AuthorizationError, Context, Entities, Entity, EntityId, EntityUid, PolicyId, Request,
    RestrictedExpression,
};
use mandate_core::{Environment, Sensitivity};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

const NO_PERMIT: &str = "no-permit: no policy permits this request";

/// `sensitivity_rank` as the schema documents it; Cedar compares Longs, not
/// the words.
fn rank(s: Sensitivity) -> i64 {
    match s {
        Sensitivity::Public => 0,
        Sensitivity::Internal => 1,
        Sensitivity::Confidential => 2,
        Sensitivity::Restricted => 3,
    }
}

fn string(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|i| string(i)))
}

fn task_record(t: &TaskFacts<'_>) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record([
        ("id".into(), string(t.id)),
        ("state".into(), string(t.state.as_str())),
        ("intent".into(), string(t.intent)),
        ("environment".into(), string(t.environment.as_str())),
        (
            "approved".into(),
            RestrictedExpression::new_bool(t.approved),
        ),
        (
            "breakglass".into(),
            RestrictedExpression::new_bool(t.breakglass),
        ),
        (
            "delegation_depth".into(),
            RestrictedExpression::new_long(t.delegation_depth),
        ),
        (
            "delegation_chain".into(),
            RestrictedExpression::new_set(
                t.delegation_chain.iter().map(|l| string(l.agent.as_str())),
            ),
        ),
        ("root_intent".into(), string(t.root_intent)),
    ])
    .map_err(|e| format!("task record: {e}"))
}

/// `context.request`: `amount` only when the asker stated one.
fn request_record(
    action: &str,
    resource: &str,
    environment: Environment,
    data_sensitivity: Option<Sensitivity>,
    amount: Option<i64>,
) -> Result<RestrictedExpression, String> {
    let mut fields = vec![
        ("action".to_owned(), string(action)),
        ("resource".to_owned(), string(resource)),
        ("environment".to_owned(), string(environment.as_str())),
        (
            "data_sensitivity_rank".to_owned(),
            RestrictedExpression::new_long(data_sensitivity.map_or(0, rank)),
        ),
    ];
    if let Some(a) = amount {
        fields.push(("amount".to_owned(), RestrictedExpression::new_long(a)));
    }
    RestrictedExpression::new_record(fields).map_err(|e| format!("request record: {e}"))
}

/// `context` of an `invoke` request.
pub(crate) fn invoke_context(r: &InvokeRequest<'_>) -> Result<Context, String> {
    let environment = r.request_environment.unwrap_or(r.task.environment);
    let request = request_record(
        r.action,
        r.resource,
        environment,
        r.data_sensitivity,
        r.amount,
    )?;
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
    .map_err(|e| format!("context: {e}"))
}

/// The UTC hour (0-23) and weekday (0 = Monday) of a Unix time.
pub(crate) fn hour_and_weekday(now: i64) -> (i64, i64) {
    let days = now.div_euclid(86_400);
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    (now.rem_euclid(86_400) / 3600, (days + 3).rem_euclid(7))
}

/// Principal, resource, and the two entities Cedar needs to read their
/// attributes. Built from code, so no schema conformance check here.
pub(crate) struct Parties {
    pub(crate) agent: EntityUid,
    pub(crate) tool: EntityUid,
    pub(crate) entities: Entities,
}

/// Entries kept before the cache starts over (a miss only costs a build).
const PARTIES_CAPACITY: usize = 10_000;

/// Built [`Parties`] keyed by every attribute that goes into them, so an
/// entry can never be stale: a changed owner or sensitivity is a new key.
#[derive(Default)]
pub(crate) struct PartiesCache(RwLock<HashMap<String, Arc<Parties>>>);

fn parties_key(agent: &AgentFacts<'_>, tool: &ToolFacts<'_>) -> String {
    [
        agent.name,
        agent.environment.as_str(),
        agent.owner,
        tool.name,
        tool.environment.as_str(),
        tool.sensitivity.as_str(),
    ]
    .join("\0")
}

/// A decision plus whether it was forced by an error (fail closed), which
/// callers chaining decisions must not mistake for an ordinary deny.
struct Outcome {
    decision: Decision,
    failed: bool,
}

fn failure(message: String) -> Outcome {
    Outcome {
        decision: Decision {
            allowed: false,
            reasons: vec![format!("policy-error: request: {message}")],
            policy_ids: Vec::new(),
            approval: None,
        },
        failed: true,
    }
}

impl PolicySet {
    pub(crate) fn parties(
        &self,
        agent: &AgentFacts<'_>,
        tool: &ToolFacts<'_>,
    ) -> Result<Arc<Parties>, String> {
        let key = parties_key(agent, tool);
        let cache = &self.0.parties.0;
        if let Some(p) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let built = Arc::new(self.build_parties(agent, tool)?);
        let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PARTIES_CAPACITY {
            map.clear();
        }
        map.insert(key, built.clone());
        Ok(built)
    }

    fn build_parties(
        &self,
        agent: &AgentFacts<'_>,
        tool: &ToolFacts<'_>,
    ) -> Result<Parties, String> {
        let agent_uid =
            EntityUid::from_type_name_and_id(self.0.agent_type.clone(), EntityId::new(agent.name));
        let tool_uid =
            EntityUid::from_type_name_and_id(self.0.tool_type.clone(), EntityId::new(tool.name));
        let a = Entity::new(
            agent_uid.clone(),
            HashMap::from([
                ("environment".into(), string(agent.environment.as_str())),
                ("owner".into(), string(agent.owner)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("agent `{}`: {e}", agent.name))?;
        let t = Entity::new(
            tool_uid.clone(),
            HashMap::from([
                ("environment".into(), string(tool.environment.as_str())),
                ("sensitivity".into(), string(tool.sensitivity.as_str())),
                (
                    "sensitivity_rank".into(),
                    RestrictedExpression::new_long(rank(tool.sensitivity)),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("tool `{}`: {e}", tool.name))?;
        let entities = Entities::from_entities([a, t], None).map_err(|e| e.to_string())?;
        Ok(Parties {
            agent: agent_uid,
            tool: tool_uid,
            entities,
        })
    }

    fn evaluate(
        &self,
        action: MandateAction,
        tool: &str,
        parties: &Parties,
        context: Context,
    ) -> Outcome {
        let slice = self.slice(action);
        let request = match Request::new(
            parties.agent.clone(),
            slice.action.clone(),
            parties.tool.clone(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return failure(e.to_string()),
        };
        let response =
            self.0
                .authorizer
                .is_authorized(&request, slice.for_tool(tool), &parties.entities);
        let diagnostics = response.diagnostics();
        let determining: Vec<&PolicyId> = diagnostics.reason().collect();
        let mut errors = diagnostics.errors().peekable();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        if errors.peek().is_none() {
            let decision = if !allowed && determining.is_empty() {
                Decision {
                    allowed,
                    reasons: vec![NO_PERMIT.to_owned()],
                    policy_ids: Vec::new(),
                    approval: None,
                }
            } else {
                Decision {
                    allowed,
                    reasons: determining.iter().map(|id| self.reason(id)).collect(),
                    policy_ids: determining.iter().map(|id| id.to_string()).collect(),
                    approval: None,
                }
            };
            return Outcome {
                decision,
                failed: false,
            };
        }
        // Cedar skips a policy it cannot evaluate; it might have been a
        // forbid, so deny, keeping any forbids that did match.
        let (mut reasons, mut policy_ids) = if allowed {
            (Vec::new(), Vec::new())
        } else {
            (
                determining.iter().map(|id| self.reason(id)).collect(),
                determining
                    .iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>(),
            )
        };
        for error in errors {
            let AuthorizationError::PolicyEvaluationError(e) = error;
            let id = e.policy_id().to_string();
            tracing::warn!(policy = %id, action = action.name(), "policy evaluation error: {}", e.inner());
            reasons.push(format!("policy-error: {id}: {}", e.inner()));
            if !policy_ids.contains(&id) {
                policy_ids.push(id);
            }
        }
        Outcome {
            decision: Decision {
                allowed: false,
                reasons,
                policy_ids,
                approval: None,
            },
            failed: true,
        }
    }

    fn reason(&self, id: &PolicyId) -> String {
        match self.0.reasons.get(id) {
            Some(r) => r.clone(),
            None => id.to_string(),
        }
    }

    /// May this agent do this action on this resource with this grant, now?
    pub fn decide_invoke(&self, r: &InvokeRequest<'_>) -> Decision {
        let parties = match self.parties(&r.agent, &r.tool) {
            Ok(p) => p,
            Err(e) => return failure(e).decision,
        };
        match invoke_context(r) {
            Ok(c) => {
                self.evaluate(MandateAction::Invoke, r.tool.name, &parties, c)
                    .decision
            }
            Err(e) => failure(e).decision,
        }
    }

    /// May this live task go on after its context changed (for a tool of
    /// its scope)? A deny suspends the task.
    pub fn decide_continue(&self, r: &ContinueRequest<'_>) -> Decision {
        let parties = match self.parties(&r.agent, &r.tool) {
            Ok(p) => p,
            Err(e) => return failure(e).decision,
        };
        let context = (|| {
            let change = RestrictedExpression::new_record([
                ("kind".into(), string(r.change)),
                ("from".into(), string(r.from)),
                ("to".into(), string(r.to)),
            ])
            .map_err(|e| format!("change record: {e}"))?;
            Context::from_pairs([
                ("task".into(), task_record(&r.task)?),
                ("change".into(), change),
                ("anomaly_score".into(), RestrictedExpression::new_long(0)),
                ("now".into(), RestrictedExpression::new_long(r.now)),
            ])
            .map_err(|e| format!("context: {e}"))
        })();
        match context {
            Ok(c) => {
                self.evaluate(MandateAction::ContinueTask, r.tool.name, &parties, c)
                    .decision
            }
            Err(e) => failure(e).decision,
        }
    }

    /// May this task have the tool's secret value handed to it?
    pub fn decide_reveal(&self, r: &RevealRequest<'_>) -> Decision {
        let parties = match self.parties(&r.agent, &r.tool) {
            Ok(p) => p,
            Err(e) => return failure(e).decision,
        };
        let context = (|| {
            let secret = RestrictedExpression::new_record([
                ("name".into(), string(r.secret_name)),
                ("class".into(), string(r.secret_class)),
                (
                    "human_credential".into(),
                    RestrictedExpression::new_bool(r.human_credential),
                ),
                ("shared".into(), RestrictedExpression::new_bool(r.shared)),
            ])
            .map_err(|e| format!("secret record: {e}"))?;
            Context::from_pairs([
                ("task".into(), task_record(&r.task)?),
                ("delivery".into(), string(r.delivery)),
                ("secret".into(), secret),
                (
                    "anomaly_score".into(),
                    RestrictedExpression::new_long(r.anomaly_score),
                ),
                ("now".into(), RestrictedExpression::new_long(r.now)),
            ])
            .map_err(|e| format!("context: {e}"))
        })();
        match context {
            Ok(c) => {
                self.evaluate(MandateAction::RevealSecret, r.tool.name, &parties, c)
                    .decision
            }
            Err(e) => failure(e).decision,
        }
    }

    /// May this agent start a task touching this tool, and must it wait for
    /// a person? `start_task` decides allow or deny; if allowed, any permit
    /// for `require_approval` makes it pending.
    pub fn decide_task_start(&self, r: &TaskStartRequest<'_>) -> TaskDecision {
        let deny = |d: Decision| TaskDecision::Deny {
            reasons: d.reasons,
            policy_ids: d.policy_ids,
        };
        let built = self.parties(&r.agent, &r.tool).and_then(|parties| {
            let context = Context::from_pairs([
                ("task".into(), task_record(&r.task)?),
                ("requested_actions".into(), string_set(r.requested_actions)),
                (
                    "anomaly_score".into(),
                    RestrictedExpression::new_long(r.anomaly_score),
                ),
                ("now".into(), RestrictedExpression::new_long(r.now)),
            ])
            .map_err(|e| format!("context: {e}"))?;
            Ok((parties, context))
        });
        let (parties, context) = match built {
            Ok(b) => b,
            Err(e) => return deny(failure(e).decision),
        };
        let start = self.evaluate(
            MandateAction::StartTask,
            r.tool.name,
            &parties,
            context.clone(),
        );
        if !start.decision.allowed {
            return deny(start.decision);
        }
        let hold = self.decide_hold(&HoldRequest {
            agent: r.agent,
            tool: r.tool,
            task: r.task,
            stage: HoldStage::Task,
            requested_actions: r.requested_actions,
            request: None,
            anomaly_score: r.anomaly_score,
            now: r.now,
        });
        match hold {
            // Cannot tell whether a person must approve: do not start it unapproved.
            Hold::Failed(d) => deny(d),
            Hold::Held(need) => TaskDecision::PendingApproval {
                reasons: need.reasons,
                policy_ids: need.policy_ids,
            },
            Hold::Free => TaskDecision::Allow {
                policy_ids: start.decision.policy_ids,
            },
        }
    }

    /// Must a person approve this task start, grant or request first?
    /// Any permit for `require_approval` holds it; a rule that cannot be
    /// evaluated fails closed.
    pub fn decide_hold(&self, r: &HoldRequest<'_>) -> Hold {
        let built = self.parties(&r.agent, &r.tool).and_then(|parties| {
            let (hour, weekday) = hour_and_weekday(r.now);
            let mut pairs = vec![
                ("task".to_owned(), task_record(&r.task)?),
                ("stage".to_owned(), string(r.stage.as_str())),
                (
                    "requested_actions".to_owned(),
                    string_set(r.requested_actions),
                ),
                ("hour_utc".to_owned(), RestrictedExpression::new_long(hour)),
                (
                    "weekday_utc".to_owned(),
                    RestrictedExpression::new_long(weekday),
                ),
                (
                    "anomaly_score".to_owned(),
                    RestrictedExpression::new_long(r.anomaly_score),
                ),
                ("now".to_owned(), RestrictedExpression::new_long(r.now)),
            ];
            if let Some(q) = r.request {
                pairs.push((
                    "request".to_owned(),
                    request_record(
                        q.action,
                        q.resource,
                        q.environment,
                        q.data_sensitivity,
                        q.amount,
                    )?,
                ));
            }
            let context = Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))?;
            Ok((parties, context))
        });
        let (parties, context) = match built {
            Ok(b) => b,
            Err(e) => return Hold::Failed(failure(e).decision),
        };
        let held = self.evaluate(
            MandateAction::RequireApproval,
            r.tool.name,
            &parties,
            context,
        );
        if held.failed {
            Hold::Failed(held.decision)
        } else if held.decision.allowed {
            Hold::Held(ApprovalNeed {
                reasons: held.decision.reasons,
                policy_ids: held.decision.policy_ids,
            })
        } else {
            Hold::Free
        }
    }

    /// `invoke`, then for an allowed request `require_approval` at stage
    /// `request`: the decision a request with a grant gets. An allowed one
    /// may carry [`Decision::approval`]: a person must approve it first.
    pub fn decide_request(&self, r: &InvokeRequest<'_>) -> Decision {
        let mut decision = self.decide_invoke(r);
        // Break-glass skips approval, and nothing else.
        if !decision.allowed || r.task.breakglass {
            return decision;
        }
        let actions = [r.action.to_owned()];
        let hold = self.decide_hold(&HoldRequest {
            agent: r.agent,
            tool: r.tool,
            task: r.task,
            stage: HoldStage::Request,
            requested_actions: &actions,
            request: Some(RequestFacts {
                action: r.action,
                resource: r.resource,
                environment: r.request_environment.unwrap_or(r.task.environment),
                data_sensitivity: r.data_sensitivity,
                amount: r.amount,
            }),
            anomaly_score: r.anomaly_score,
            now: r.now,
        });
        match hold {
            Hold::Free => {}
            Hold::Held(need) => decision.approval = Some(need),
            Hold::Failed(d) => return d,
        }
        decision
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
