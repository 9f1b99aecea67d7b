//! Break-glass: an operator with the `breakglass` right opens an emergency
//! task for an agent that skips approval and nothing else — the agent's
//! registered tools, its environment, audience-bound tokens — for at most
//! `breakglass_max_secs`, with a justification. Every token carries the
//! `breakglass` claim; its grants, decisions and proxied calls are flagged
//! and announced (`breakglass.used`); it closes by itself at its deadline
//! (`breakglass.closed`, like any ending).

use super::caller::Caller;
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestId};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    AdminRight, AgentName, BreakGlass, Invalid, RandomId, Scope, Task, TaskId, TaskState, ToolName,
};
use mandate_store::TaskFilter;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open {
    agent: AgentName,
    tool: ToolName,
    actions: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    justification: String,
    /// Seconds (a number, so that `-300` reaches the rule that names it).
    duration_secs: i64,
}

pub async fn open(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<Open>, ApiError>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    caller.require(AdminRight::Breakglass)?;
    let ApiJson(b) = body?;
    let justification = mandate_core::justification(&b.justification)?;
    let ttl =
        mandate_core::breakglass_duration(b.duration_secs, app.settings.raw.breakglass_max_secs)?;
    if b.actions.is_empty() {
        return Err(Invalid::new("actions", "list at least one action").into());
    }
    let agent = app.directory.agent(&b.agent).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!("agent: agent `{}` does not exist", b.agent),
        )
    })?;
    if !agent.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("agent `{}` is revoked", agent.name),
        ));
    }
    let mut item = json!({"tool": b.tool, "actions": b.actions});
    if !b.resources.is_empty() {
        item["resources"] = json!(b.resources);
    }
    let scope: Scope = serde_json::from_value(json!([item]))
        .map_err(|e| ApiError::bad_request(format!("actions or resources: {e}")))?;
    // The same rules as any task: the agent's own tools, their actions, one
    // environment. Only approval is skipped.
    app.directory.check_scope(&scope, &agent)?;
    let t = now();
    let actor = caller.actor();
    let task = Task {
        id: TaskId::from_random(mandate_token::random_bytes()),
        agent: agent.name.clone(),
        intent: justification.clone(),
        scope,
        environment: agent.environment,
        state: TaskState::Active,
        requested_by: Some(actor.clone()),
        reasons: vec![format!("break-glass opened by {actor}")],
        created_at: t,
        deadline: t + i64::from(ttl),
        ended_at: None,
        delegation: None,
        model: agent.model.clone(),
        approval: None,
        breakglass: Some(BreakGlass {
            justification: justification.clone(),
            opened_by: actor.clone(),
            opened_at: t,
        }),
    };
    let mut ev = NewEvent::new(EventKind::BreakglassOpened, actor)
        .agent(&agent.name)
        .task(&task.id)
        .decision("allow")
        .reasons(vec![justification])
        .request_id(Some(rid.0))
        .detail(json!({"scope": task.scope, "deadline": task.deadline, "duration_secs": ttl}));
    ev.tool = Some(b.tool.to_string());
    app.store.create_task(task.clone(), ev).await?;
    app.directory.put_task(task.clone());
    Ok((StatusCode::CREATED, Json(task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
}

/// Break-glass tasks, newest first, open or closed.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[AdminRight::Breakglass, AdminRight::Audit, AdminRight::Tasks])?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let tasks = app
        .store
        .list_tasks(TaskFilter {
            breakglass: true,
            limit,
            ..Default::default()
        })
        .await?;
    let t = now();
    let shown: Vec<Value> = tasks
        .iter()
        .map(|task| {
            let mut v = json!(task);
            v["state"] = json!(task.state_at(t));
            v
        })
        .collect();
    Ok(Json(json!({ "breakglass": shown })))
}
