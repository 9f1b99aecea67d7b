//! Dynamic credentials: `POST /v1/tasks/{id}/credentials/{tool}/{role}`
//! makes a login for the task's own agent (a database role valid until
//! the task's deadline), decided by Cedar like any request (`invoke` of the
//! role on the tool, which the task's scope must name); `GET /v1/leases`
//! and `GET /v1/leases/{id}` show what was made and whether it is gone.

use super::caller::{Caller, own_task};
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::RequestId;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, LeaseId, TaskId, TaskState, ToolName, role_name};
use mandate_policy::{AgentFacts, InvokeRequest, TaskFacts, ToolFacts};
use mandate_store::LeaseFilter;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
pub struct CredentialPath {
    id: String,
    tool: String,
    role: String,
}

pub async fn issue(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<CredentialPath>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let agent = caller.task_agent("get a credential for it")?;
    let Path(p) = path?;
    let task = own_task(&app, agent, &p.id).await?;
    let tool_name = ToolName::parse(&p.tool)?;
    let role = role_name(&p.role)?.to_owned();
    let tool = app
        .directory
        .tool(&tool_name)
        .filter(|t| t.engine.is_some())
        .ok_or_else(|| ApiError::not_found("tool with an engine", &tool_name))?;
    if !tool.actions.iter().any(|a| a.as_str() == role) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_role",
            format!("role: tool `{tool_name}` defines no role `{role}`"),
        ));
    }
    let t = now();
    let resource = format!("role:{role}");
    let item = task.scope.item(&tool.name);
    let grant_actions: Vec<String> = item
        .map(|i| i.actions.iter().map(|a| a.as_str().to_owned()).collect())
        .unwrap_or_default();
    let decision = app.policy().decide_invoke(&InvokeRequest {
        agent: AgentFacts::of(agent),
        tool: ToolFacts::of(&tool),
        task: TaskFacts::of(&task, t),
        action: &role,
        resource: &resource,
        grant_actions: &grant_actions,
        resource_in_scope: item.is_some_and(|i| i.resources.iter().any(|r| r.matches(&resource))),
        request_environment: None,
        data_sensitivity: None,
        amount: None,
        anomaly_score: 0,
        now: t,
    });
    let ev = |kind| {
        NewEvent::new(kind, caller.actor())
            .agent(&agent.name)
            .task(&task.id)
            .tool(&tool.name)
            .request_id(Some(rid.0.clone()))
    };
    if !decision.allowed || task.state_at(t) != TaskState::Active {
        let e = ev(EventKind::SecretRefused)
            .decision("deny")
            .reasons(decision.reasons.clone())
            .detail(json!({"role": role}));
        app.store.append_events(vec![e]).await?;
        let mut err = ApiError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!("policy refuses a `{role}` login on `{tool_name}` to this task"),
        );
        err.reasons = decision.reasons;
        return Err(err);
    }
    let retrieved = ev(EventKind::SecretRetrieved)
        .decision("allow")
        .reasons(decision.reasons);
    let (lease, issued) = crate::leases::issue(&app, &task, &tool, &role, retrieved).await?;
    let facts: Map<String, Value> = issued
        .facts
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "lease": lease.id, "tool": tool.name, "role": role, "login": issued.login,
            "password": issued.password.expose_secret(), "url": issued.url.expose_secret(),
            "expires_at": lease.expires_at, "facts": facts,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesQuery {
    task: Option<String>,
    /// Only leases whose revocation failed and is being retried.
    #[serde(default)]
    failed: bool,
    limit: Option<usize>,
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<LeasesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[AdminRight::Audit, AdminRight::Tasks])?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let leases = app
        .store
        .list_leases(LeaseFilter {
            task: q.task.as_deref().map(TaskId::parse).transpose()?,
            failed: q.failed,
            limit,
        })
        .await?;
    Ok(Json(json!({"leases": leases})))
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[AdminRight::Audit, AdminRight::Tasks])?;
    let Path(id) = path?;
    let id = LeaseId::parse(&id)?;
    let lease = app
        .store
        .get_lease(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("lease", &id))?;
    Ok(Json(json!(lease)))
}
