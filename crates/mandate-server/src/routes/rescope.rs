//! `POST /v1/tasks/{id}/rescope`: a live task's context switch. Narrowing
//! takes effect at once, cutting off every token and delegated child the
//! new scope no longer covers; anything wider is decided by the task-start
//! policy like a new task. Audited as `task.context_changed`.

use super::caller::Caller;
use super::tasks::{decide, visible_task};
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, RequestId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, RescopeRequest, Scope};
use mandate_policy::TaskDecision;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewScope {
    scope: Scope,
    /// `None`: the intent stays.
    intent: Option<String>,
}

pub async fn rescope(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<NewScope>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let task = visible_task(&app, &caller, path, &[AdminRight::Tasks]).await?;
    let ApiJson(body) = body?;
    let intent = body
        .intent
        .as_deref()
        .map(mandate_core::intent)
        .transpose()?;
    let agent = app.directory.agent(&task.agent).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("agent `{}` is not registered", task.agent),
        )
    })?;
    let tools = app.directory.tools_of(&body.scope);
    let t = now();
    let req = RescopeRequest {
        agent: &agent,
        scope: body.scope,
        intent,
    };
    let switched = mandate_core::rescope(
        &task,
        req,
        |name| tools.iter().find(|t| &t.name == name).map(Arc::as_ref),
        t,
    )?;
    let next = switched.task;
    let change = json!({
        "from": {"scope": task.scope, "intent": task.intent},
        "to": {"scope": next.scope, "intent": next.intent},
        "widened": switched.widened,
    });
    let ev = |decision: &str| {
        NewEvent::new(EventKind::TaskContextChanged, caller.actor())
            .agent(&task.agent)
            .task(&task.id)
            .request_id(Some(rid.0.clone()))
            .decision(decision)
    };
    let mut policy_ids = Vec::new();
    if switched.widened {
        match decide(&app, &agent, &next, t)? {
            TaskDecision::Allow { policy_ids: ids } => policy_ids = ids,
            TaskDecision::Deny {
                reasons,
                policy_ids,
            } => {
                let mut detail = change;
                detail["policy_ids"] = json!(policy_ids);
                let ev = ev("deny").reasons(reasons.clone()).detail(detail);
                app.store.append_events(vec![ev]).await?;
                return Err(ApiError::policy_denied(
                    "policy denied the wider scope; the task keeps its scope",
                    reasons,
                ));
            }
            TaskDecision::PendingApproval {
                reasons,
                policy_ids,
            } => {
                // No approval can be taken yet: the switch is not made.
                let mut detail = change;
                detail["policy_ids"] = json!(policy_ids);
                let ev = ev("pending_approval")
                    .reasons(reasons.clone())
                    .detail(detail);
                app.store.append_events(vec![ev]).await?;
                let mut err = ApiError::new(
                    StatusCode::CONFLICT,
                    "approval_required",
                    "the wider scope needs a person's approval, and a rescope is not held for one: open a new task for the wider scope (it waits for approval); this task keeps its scope",
                );
                err.reasons = reasons;
                return Err(err);
            }
        }
    }
    let mut detail = change;
    detail["policy_ids"] = json!(policy_ids);
    let moved = app
        .store
        .rescope_task(next, t, ev("allow").detail(detail))
        .await?;
    let revoked_tokens: Vec<String> = moved
        .revocations
        .iter()
        .filter(|r| r.kind == mandate_core::RevocationKind::Token)
        .map(|r| r.id.clone())
        .collect();
    let subtree: Vec<String> = moved.subtree.iter().map(|id| id.to_string()).collect();
    let mut body = json!(app.moved(moved));
    body["revoked_tokens"] = json!(revoked_tokens);
    body["revoked_subtree"] = json!(subtree);
    Ok(Json(body))
}
