//! Delegation: an agent hands part of its task to another agent. Two
//! surfaces, one rule: RFC 8693 token exchange with an `actor_token` (the
//! child's identity session) and a `subject_token` (an access token of the
//! parent task), which answers with the child's first access token; and
//! `POST /v1/tasks/{id}/delegate`, which answers with the child task.
//! The domain rules live in `mandate_core::delegate`; this file gathers
//! the facts, runs the task-start policy, stores the child (only while the
//! parent is live, as the write reads it) and records `task.delegated`.

use super::authorize::{Looked, look_up};
use super::caller::Caller;
use super::client_auth;
use super::grant::{self, bind_to_proof, dpop_header, requested, rule_error};
use super::tasks::decide;
use crate::app::{App, AppState, now};
use crate::error::{ApiError, OAuthError};
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, OAuthForm, RequestId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    Action, Agent, ChildRequest, RandomId, ResourcePattern, RuleViolation, Scope, ScopeItem, Task,
    TaskId, cap_grant_ttl,
};
use mandate_policy::{TaskDecision, check_token};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Why a delegation was refused, before either surface words it.
enum Refusal {
    /// The parent's token does not prove a live task (`subject_token`).
    Subject(String),
    /// A rule of delegation or scope (names its field).
    Rule(RuleViolation),
    /// Policy denied, or wants a person first.
    Policy(String, Vec<String>),
    Store(mandate_store::StoreError),
    Internal(String),
}

impl From<Refusal> for OAuthError {
    fn from(r: Refusal) -> OAuthError {
        match r {
            Refusal::Subject(m) => OAuthError::invalid_grant(format!("subject_token: {m}")),
            Refusal::Rule(RuleViolation::TaskNotActive { state }) => OAuthError::invalid_grant(
                format!("subject_token: the parent task is {state}, not active"),
            ),
            // The tokens themselves cannot be used so: the grant is bad.
            Refusal::Rule(e @ RuleViolation::Delegation { .. }) => match &e {
                RuleViolation::Delegation { field, .. } if field.ends_with("_token") => {
                    OAuthError::invalid_grant(e.to_string())
                }
                RuleViolation::Delegation { field, .. } if !field.starts_with("scope") => {
                    OAuthError::invalid_request(e.to_string())
                }
                _ => rule_error(e),
            },
            Refusal::Rule(e) => rule_error(e),
            Refusal::Policy(m, _) => OAuthError::invalid_grant(m),
            Refusal::Store(e) => e.into(),
            Refusal::Internal(m) => OAuthError::server(m),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::Subject(m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_subject_token",
                format!("subject_token: {m}"),
            ),
            Refusal::Rule(e) => e.into(),
            Refusal::Policy(m, reasons) => ApiError::policy_denied(m, reasons),
            Refusal::Store(e) => e.into(),
            Refusal::Internal(m) => ApiError::internal(m),
        }
    }
}

/// A child task the rules and policy allow, with its `task.delegated`
/// event, not stored yet.
struct Planned {
    child: Task,
    ev: NewEvent,
    at: i64,
}

impl Planned {
    /// Store the child (refused unless its parent is still live as the
    /// write reads it) and, when given, its first grant in the same write.
    async fn store(
        self,
        app: &App,
        first: Option<(mandate_core::Grant, NewEvent)>,
    ) -> Result<Task, Refusal> {
        app.store
            .delegate_task(self.child.clone(), self.at, self.ev, first)
            .await
            .map_err(|e| match e {
                mandate_store::StoreError::Rule(r) => Refusal::Rule(r),
                other => Refusal::Store(other),
            })?;
        app.directory.put_task(self.child.clone());
        Ok(self.child)
    }
}

/// What the child asks for, by either surface.
struct Ask {
    child: Arc<Agent>,
    /// The model the child's session declares.
    model: Option<mandate_core::Model>,
    scope: Scope,
    intent: Option<String>,
    ttl_secs: Option<u32>,
}

/// The parent's token, verified, with what the broker knows of its holder.
async fn parent_of(app: &App, parent_token: &str, t: i64) -> Result<Looked, Refusal> {
    match look_up(app, parent_token, t).await {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(r)) => Err(Refusal::Subject(r.message)),
        Err(e) => Err(Refusal::Store(e)),
    }
}

/// The one delegation: check the parent's token (the one decision path's
/// token stage), apply the domain rules and run the task-start policy for
/// the child. Nothing is stored yet (a refusal by policy is audited):
/// [`Planned::store`] writes the child.
async fn plan(
    app: &App,
    rid: &str,
    looked: Looked,
    expect_parent: Option<&TaskId>,
    ask: Ask,
) -> Result<Planned, Refusal> {
    let t = now();
    let live =
        check_token(&looked.token, &looked.holder(), t).map_err(|r| Refusal::Subject(r.message))?;
    if looked.token.claims.cnf.is_some() {
        return Err(Refusal::Subject(
            "a DPoP-bound token is good only with its own key's proofs and cannot be handed on"
                .into(),
        ));
    }
    let parent = live.task.clone();
    if expect_parent.is_some_and(|id| *id != parent.id) {
        return Err(Refusal::Subject(format!(
            "is a token of task `{}`, not of the task in the path",
            parent.id
        )));
    }
    let intent = match ask.intent.as_deref().map(mandate_core::intent) {
        Some(Err(e)) => {
            return Err(Refusal::Rule(RuleViolation::Delegation {
                field: e.field,
                why: e.message,
            }));
        }
        Some(Ok(i)) => i,
        None => parent.intent.clone(),
    };
    let tools = app.directory.tools_of(&ask.scope);
    let req = ChildRequest {
        agent: &ask.child,
        intent,
        scope: ask.scope,
        ttl_secs: ask.ttl_secs,
        model: ask.model,
    };
    let mut child = mandate_core::delegate(
        &parent,
        req,
        app.settings.raw.max_delegation_depth,
        |name| tools.iter().find(|t| &t.name == name).map(Arc::as_ref),
        TaskId::from_random(mandate_token::random_bytes()),
        t,
    )
    .map_err(Refusal::Rule)?;
    let decision = decide(app, &ask.child, &child, child.created_at)
        .map_err(|e| Refusal::Internal(e.message))?;
    let chain = grant::chain_names(&child);
    let ev = NewEvent::new(
        EventKind::TaskDelegated,
        format!("agent:{}", ask.child.name),
    )
    .agent(&ask.child.name)
    .task(&child.id)
    .request_id(Some(rid.to_owned()));
    match decision {
        TaskDecision::Allow { policy_ids } => {
            child.reasons = policy_ids.clone();
            let d = child.delegation.as_ref().expect("a delegated task");
            let ev = ev.decision("allow").detail(json!({
                "parent": d.parent, "root": d.root, "depth": d.depth(), "chain": chain,
                "scope": child.scope, "intent": child.intent, "deadline": child.deadline,
                "policy_ids": policy_ids,
            }));
            Ok(Planned { child, ev, at: t })
        }
        TaskDecision::Deny {
            reasons,
            policy_ids,
        } => {
            let ev = ev
                .decision("deny")
                .reasons(reasons.clone())
                .detail(json!({"parent": parent.id, "chain": chain, "policy_ids": policy_ids}));
            app.store
                .append_events(vec![ev])
                .await
                .map_err(Refusal::Store)?;
            Err(Refusal::Policy(
                "policy denied the delegated task".into(),
                reasons,
            ))
        }
        TaskDecision::PendingApproval { reasons, .. } => Err(Refusal::Policy(
            "policy wants a person to approve this delegated task; approvals of delegated tasks are not supported yet".into(),
            reasons,
        )),
    }
}

/// RFC 8693 delegation at the token endpoint: `actor_token` is the child
/// agent's identity session, `subject_token` an access token of the parent
/// task, `resource` (+ `scope` or `authorization_details`) the tool the
/// child task gets and its first token is for. Optional `intent` and
/// `ttl_secs` describe the child task (by default the parent's intent and
/// what the parent has left); `requested_ttl` caps the token as in any
/// exchange.
pub async fn by_exchange(
    app: &App,
    rid: &str,
    form: &OAuthForm,
    headers: &http::HeaderMap,
) -> Result<Response, OAuthError> {
    let subject = form.require("subject_token")?;
    let stt = form.require("subject_token_type")?;
    if stt != TT_ACCESS && stt != TT_JWT {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {TT_ACCESS} (an access token of the parent task)"
        )));
    }
    let actor = form.require("actor_token")?;
    if form.require("actor_token_type")? != TT_JWT {
        return Err(OAuthError::invalid_request(format!(
            "actor_token_type must be {TT_JWT} (the child agent's identity session)"
        )));
    }
    let endpoint = format!("{}/oauth/token", app.issuer);
    let client = client_auth::authenticate(app, form, headers, &endpoint)
        .await
        .map_err(|r| r.error)?;
    let t = now();
    let (session, child) = app
        .verify_session(actor, t)
        .map_err(|e| OAuthError::invalid_grant(format!("actor_token: {e}")))?;
    client_auth::require_agent(app, &client, form, &child, "the actor token's agent")?;
    let resource = form.require("resource")?;
    let tool = app
        .directory
        .tool_by_audience(resource)
        .ok_or_else(|| OAuthError::new("invalid_target", "resource: no tool has this audience"))?;
    let number = |key: &str| {
        form.get(key)
            .map(|s| {
                s.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    OAuthError::invalid_request(format!(
                        "{key}: must be a positive number of seconds"
                    ))
                })
            })
            .transpose()
    };
    let (task_ttl, token_ttl) = (number("ttl_secs")?, number("requested_ttl")?);
    // What the child asks of the tool; unnamed actions or resources are
    // the parent's for it, if it has any (the rules refuse it otherwise).
    let asked = requested(form, &tool.name)?;
    // Verified once: the plan below judges this same lookup.
    let parent = parent_of(app, subject, t).await?;
    let inherited = parent.token.claims.detail_for(tool.name.as_str());
    let actions = match (asked.actions, inherited) {
        (Some(a), _) if !a.is_empty() => a,
        (_, Some(d)) => d
            .actions
            .iter()
            .map(|a| Action::parse(a))
            .collect::<Result<_, _>>()
            .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?,
        (_, None) => {
            return Err(OAuthError::new(
                "invalid_scope",
                "scope: required: the subject token grants nothing on this resource to inherit",
            ));
        }
    };
    let resources = match (asked.resources, inherited) {
        (Some(r), _) => r,
        (None, Some(d)) if !d.resources.is_empty() => d
            .resources
            .iter()
            .map(|r| ResourcePattern::parse(r))
            .collect::<Result<_, _>>()
            .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?,
        (None, _) => vec![ResourcePattern::any()],
    };
    let item = ScopeItem {
        tool: tool.name.clone(),
        actions,
        resources,
    };
    let scope =
        Scope::try_from(vec![item]).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    let ask = Ask {
        child: child.clone(),
        model: session.model(),
        scope,
        intent: form.get("intent").map(str::to_owned),
        ttl_secs: task_ttl,
    };
    let planned = plan(app, rid, parent, None, ask).await?;
    let task = &planned.child;
    let item = task.scope.items()[0].clone();
    let ttl = cap_grant_ttl(token_ttl, tool.max_ttl_secs, task, t).map_err(rule_error)?;
    let cnf = dpop_header(headers)?
        .map(|p| bind_to_proof(app, p, t))
        .transpose()?;
    // The child does not exist until this write, so no approval can be
    // opened for its first token: a held grant is refused, never skipped.
    if let Some(need) = grant::grant_hold(app, &child, task, &tool, &item, t)? {
        return Err(OAuthError::new(
            "access_denied",
            format!(
                "policy holds this grant for a person's approval ({}); delegate with POST /v1/tasks/{{id}}/delegate, then exchange the child's session for its token",
                need.policy_ids.join(", ")
            ),
        ));
    }
    let minted = grant::Minted {
        agent: &child,
        task,
        tool: &tool,
        item,
        ttl,
        cnf,
        session: &session.jti,
    };
    // The child and its first token in one write: durable together
    // before the token leaves.
    let signed = grant::sign(app, rid, minted, t)?;
    planned
        .store(app, Some((signed.grant.clone(), signed.event.clone())))
        .await?;
    Ok(signed.answer(app))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChild {
    /// An access token of the parent task: the parent's consent.
    subject_token: String,
    scope: Scope,
    intent: Option<String>,
    ttl_secs: Option<u32>,
}

/// `POST /v1/tasks/{id}/delegate`: the caller is the child agent (its
/// session); the body carries the parent's token. Answers the child task.
pub async fn by_api(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    ApiJson(body): ApiJson<NewChild>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let Caller::Agent { agent, model } = caller else {
        return Err(ApiError::forbidden(
            "the child agent delegates to itself with its own session: an admin token cannot",
        ));
    };
    let Path(id) = path?;
    let id = TaskId::parse(&id)?;
    let ask = Ask {
        child: agent,
        model,
        scope: body.scope,
        intent: body.intent,
        ttl_secs: body.ttl_secs,
    };
    let parent = parent_of(&app, &body.subject_token, now()).await?;
    let task = plan(&app, &rid.0, parent, Some(&id), ask)
        .await?
        .store(&app, None)
        .await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// One node of `GET /v1/tasks/{id}/tree`.
fn node(task: &Task, all: &[Task], t: i64) -> Value {
    let children: Vec<Value> = all
        .iter()
        .filter(|c| c.delegation.as_ref().is_some_and(|d| d.parent == task.id))
        .map(|c| node(c, all, t))
        .collect();
    json!({
        "id": task.id, "agent": task.agent, "state": task.state_at(t), "scope": task.scope,
        "deadline": task.deadline, "intent": task.intent, "children": children,
    })
}

/// `GET /v1/tasks/{id}/tree`: the task and everything delegated below it.
/// For its own agent, or an admin with `tasks`.
pub async fn tree(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let task =
        super::tasks::visible_task(&app, &caller, path, &[mandate_core::AdminRight::Tasks]).await?;
    let below = app.store.task_subtree(&task.id).await?;
    Ok(Json(node(&task, &below, now())))
}
