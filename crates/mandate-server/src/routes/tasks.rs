//! Tasks (mandates): create under policy, list, show, complete, revoke.

use super::caller::Caller;
use crate::app::{App, AppState, now};
use crate::approvals::{self, Asker};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, RequestId};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, AgentName, Held, RandomId, Scope, Task, TaskId, TaskState};
use mandate_policy::{
    AgentFacts, ApprovalNeed, TaskDecision, TaskFacts, TaskStartRequest, ToolFacts,
};
use mandate_store::TaskFilter;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// Required when an admin creates a task on an agent's behalf.
    agent: Option<AgentName>,
    intent: String,
    scope: Scope,
    ttl_secs: Option<u32>,
    requested_by: Option<String>,
}

/// Run the start policy for every tool in the scope at `now`: any deny
/// wins, then any approval requirement, else allow.
pub(super) fn decide(
    app: &App,
    agent: &mandate_core::Agent,
    task: &Task,
    now: i64,
) -> Result<TaskDecision, ApiError> {
    let policy = app.policy();
    let mut pending: Option<(Vec<String>, Vec<String>)> = None;
    let mut allow_ids = Vec::new();
    for item in task.scope.items() {
        let tool = app
            .directory
            .tool(&item.tool)
            .ok_or_else(|| ApiError::internal(format!("tool {} vanished", item.tool)))?;
        let actions: Vec<String> = item.actions.iter().map(|a| a.to_string()).collect();
        let req = TaskStartRequest {
            agent: AgentFacts::of(agent),
            tool: ToolFacts::of(&tool),
            task: TaskFacts::of(task, now),
            requested_actions: &actions,
            anomaly_score: 0,
            now,
        };
        match policy.decide_task_start(&req) {
            deny @ TaskDecision::Deny { .. } => return Ok(deny),
            TaskDecision::PendingApproval {
                reasons,
                policy_ids,
            } => {
                let p = pending.get_or_insert_with(Default::default);
                p.0.extend(reasons);
                p.1.extend(policy_ids);
            }
            TaskDecision::Allow { policy_ids } => allow_ids.extend(policy_ids),
        }
    }
    Ok(match pending {
        Some((reasons, policy_ids)) => TaskDecision::PendingApproval {
            reasons,
            policy_ids,
        },
        None => {
            allow_ids.sort();
            allow_ids.dedup();
            TaskDecision::Allow {
                policy_ids: allow_ids,
            }
        }
    })
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    ApiJson(body): ApiJson<NewTask>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let agent = match (&caller, &body.agent) {
        (Caller::Agent { agent, .. }, None) => agent.clone(),
        (Caller::Agent { agent, .. }, Some(name)) if &agent.name == name => agent.clone(),
        (Caller::Agent { .. }, Some(_)) => {
            return Err(ApiError::forbidden(
                "agent: an agent can only create tasks for itself",
            ));
        }
        (Caller::Admin(_), None) => {
            return Err(ApiError::bad_request(
                "agent: required when an admin creates a task",
            ));
        }
        (Caller::Admin(_), Some(name)) => {
            caller.require(AdminRight::Tasks)?;
            app.directory.agent(name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_reference",
                    format!("agent: agent `{name}` does not exist"),
                )
            })?
        }
    };
    if !agent.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("agent `{}` is revoked", agent.name),
        ));
    }
    let intent = mandate_core::intent(&body.intent)?;
    if body
        .requested_by
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 256)
    {
        return Err(ApiError::bad_request(
            "requested_by: must be 1 to 256 characters",
        ));
    }
    let raw = &app.settings.raw;
    let ttl = body.ttl_secs.unwrap_or(raw.task_default_ttl_secs);
    if ttl == 0 || ttl > raw.task_max_ttl_secs {
        return Err(ApiError::bad_request(format!(
            "ttl_secs: must be between 1 and {} (the server's task_max_ttl_secs)",
            raw.task_max_ttl_secs
        )));
    }
    app.directory.check_scope(&body.scope, &agent)?;

    let t = now();
    let mut task = Task {
        id: TaskId::from_random(mandate_token::random_bytes()),
        agent: agent.name.clone(),
        intent,
        scope: body.scope,
        environment: agent.environment,
        state: TaskState::Active,
        requested_by: body.requested_by,
        reasons: Vec::new(),
        created_at: t,
        deadline: t + ttl as i64,
        ended_at: None,
        delegation: None,
        // What the task starts under: its agent's session's declaration,
        // or (created by an operator) the agent's record.
        model: match &caller {
            Caller::Agent { model, .. } => model.clone(),
            Caller::Admin(_) => agent.model.clone(),
        },
        approval: None,
        breakglass: None,
    };
    let ev = NewEvent::new(EventKind::TaskCreated, caller.actor())
        .agent(&agent.name)
        .task(&task.id)
        .request_id(Some(rid.0.clone()));
    let scope_json = json!({"scope": task.scope, "intent": task.intent, "deadline": task.deadline});
    match decide(&app, &agent, &task, t)? {
        TaskDecision::Deny {
            reasons,
            policy_ids,
        } => {
            let ev = NewEvent::new(EventKind::TaskDenied, caller.actor())
                .agent(&agent.name)
                .request_id(Some(rid.0))
                .decision("deny")
                .reasons(reasons.clone())
                .detail(json!({"policy_ids": policy_ids, "intent": task.intent}));
            app.store.append_events(vec![ev]).await?;
            Err(ApiError::policy_denied("policy denied this task", reasons))
        }
        TaskDecision::PendingApproval {
            reasons,
            policy_ids,
        } => {
            task.state = TaskState::PendingApproval;
            task.reasons = reasons.clone();
            let need = ApprovalNeed {
                reasons: reasons.clone(),
                policy_ids: policy_ids.clone(),
            };
            let asker = Asker {
                agent: &agent,
                task: &task,
                actor: &caller.actor(),
                request_id: Some(rid.0.clone()),
            };
            let held = Held::Task {
                scope: task.scope.clone(),
            };
            let approval = approvals::candidate(&app, &asker, held, &need, t);
            let approval_ev = approvals::requested_event(&approval, &asker);
            task.approval = Some(approval.id.clone());
            let ev = ev.decision("pending_approval").reasons(reasons).detail(
                json!({"policy_ids": policy_ids, "task": scope_json, "approval": approval.id}),
            );
            app.store
                .create_held_task(task.clone(), ev, approval, approval_ev)
                .await?;
            app.metrics.approval("requested");
            app.directory.put_task(task.clone());
            Ok((StatusCode::ACCEPTED, Json(task)))
        }
        TaskDecision::Allow { policy_ids } => {
            task.reasons = policy_ids.clone();
            let ev = ev
                .decision("allow")
                .detail(json!({"policy_ids": policy_ids, "task": scope_json}));
            app.store.create_task(task.clone(), ev).await?;
            app.directory.put_task(task.clone());
            Ok((StatusCode::CREATED, Json(task)))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    agent: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let agent = q.agent.as_deref().map(AgentName::parse).transpose()?;
    let agent = match &caller {
        Caller::Agent { agent: me, .. } => {
            if agent.as_ref().is_some_and(|a| a != &me.name) {
                return Err(ApiError::forbidden(
                    "agent: an agent can only list its own tasks",
                ));
            }
            Some(me.name.clone())
        }
        Caller::Admin(_) => {
            caller.require(AdminRight::Tasks)?;
            agent
        }
    };
    let filter = TaskFilter {
        agent,
        state: q.state.as_deref().map(TaskState::parse).transpose()?,
        limit: q.limit.unwrap_or(100),
        breakglass: false,
    };
    if filter.limit == 0 || filter.limit > 1000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    Ok(Json(json!({"tasks": app.store.list_tasks(filter).await?})))
}

/// The task if the caller may see it: its own agent, or an admin holding
/// one of `rights`. An admin's rights are checked before the path is
/// looked at, so one without them learns nothing from a 400 about it.
pub(super) async fn visible_task(
    app: &AppState,
    caller: &Caller,
    path: Result<Path<String>, ApiError>,
    rights: &[AdminRight],
) -> Result<Arc<Task>, ApiError> {
    if let Caller::Admin(_) = caller {
        caller.require_any(rights)?;
    }
    let Path(id) = path?;
    let id = TaskId::parse(&id)?;
    let task = app
        .directory
        .task(app.store.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    match caller {
        Caller::Agent { agent, .. } if agent.name != task.agent => {
            Err(ApiError::not_found("task", &id))
        }
        _ => Ok(task),
    }
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    // A proxy reads tasks to give policy the task's context.
    let task = visible_task(&app, &caller, path, &[AdminRight::Tasks, AdminRight::Proxy]).await?;
    Ok(Json(json!(task.as_ref())))
}

/// Move a task along one edge of its state machine (its subtree with it,
/// where the edge ends or suspends it), answering the task as it is now.
async fn move_task(
    app: AppState,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    to: TaskState,
    kind: EventKind,
) -> Result<Json<Value>, ApiError> {
    let task = visible_task(&app, &caller, path, &[AdminRight::Tasks]).await?;
    let ev = NewEvent::new(kind, caller.actor())
        .agent(&task.agent)
        .task(&task.id)
        .request_id(Some(rid.0));
    let moved = app.store.transition_task(&task.id, to, now(), ev).await?;
    let subtree: Vec<String> = moved.subtree.iter().map(|id| id.to_string()).collect();
    let mut body = json!(app.moved(moved));
    // The task's dynamic credentials are gone before the answer (the
    // background revoker retries whatever fails here).
    if let Err(e) = crate::leases::revoke_due(&app).await {
        tracing::error!(error = %e, "could not revoke the task's leases now; the revoker retries");
    }
    if !subtree.is_empty() {
        body["revoked_subtree"] = json!(subtree);
    }
    Ok(Json(body))
}

pub async fn complete(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    move_task(
        app,
        caller,
        rid,
        path,
        TaskState::Completed,
        EventKind::TaskCompleted,
    )
    .await
}

pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    move_task(
        app,
        caller,
        rid,
        path,
        TaskState::Revoked,
        EventKind::TaskRevoked,
    )
    .await
}

/// Pause a task: its tokens are revoked and everything delegated below it
/// ends; an operator may resume it. Its own agent may suspend it too.
pub async fn suspend(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    move_task(
        app,
        caller,
        rid,
        path,
        TaskState::Suspended,
        EventKind::TaskSuspended,
    )
    .await
}

/// Let a suspended task go on: an operator's call only (a task suspended
/// for its token's misuse must not be resumed by the agent that misused
/// it). Its old tokens stay revoked; its agent exchanges for new ones.
pub async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    if let Caller::Agent { .. } = caller {
        return Err(ApiError::forbidden(
            "only an operator (admin right `tasks`) may resume a suspended task",
        ));
    }
    move_task(
        app,
        caller,
        rid,
        path,
        TaskState::Active,
        EventKind::TaskResumed,
    )
    .await
}
