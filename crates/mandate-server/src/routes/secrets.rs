//! Secrets: stored sealed, listed as metadata only, rotated in place, and —
//! for tools flagged `reveal` only — handed to an active task if policy
//! says so. Values never appear in responses except the reveal itself and
//! the proxy's delivery (`proxy.rs`), and never in errors or audit events.

use super::caller::{Caller, own_task};
use super::registry::reference;
use crate::app::{App, AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, RequestId, parse_json};
use crate::keeper::{Keeper, MAX_VALUE_BYTES};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, DeliveryMode, NewSecret, Secret, SecretClass, SecretName, Tool};
use mandate_policy::{AgentFacts, RevealRequest, TaskFacts, ToolFacts};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub(super) fn keeper(app: &App) -> Result<&Keeper, ApiError> {
    app.require_keeper()
}

/// Checks a value without ever echoing it. Values injected into a header
/// must be header-safe: a CR or LF would let it smuggle other headers.
fn check_value(value: &str, tool: &Tool) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::bad_request(format!(
            "value: must be 1 to {MAX_VALUE_BYTES} bytes"
        )));
    }
    if tool.delivery.mode == DeliveryMode::Inject
        && !value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(ApiError::bad_request(format!(
            "value: tool `{}` injects its secret into requests, so the value must be printable ASCII (no control characters or newlines)",
            tool.name
        )));
    }
    Ok(())
}

/// Takes `value` out of the body before anything else reads it, so no
/// parse error can quote it.
fn take_value(body: &mut Map<String, Value>) -> Result<Zeroizing<String>, ApiError> {
    match body.remove("value") {
        Some(Value::String(s)) => Ok(Zeroizing::new(s)),
        Some(_) => Err(ApiError::bad_request("value: must be a string")),
        None => Err(ApiError::bad_request("value: missing field `value`")),
    }
}

fn tool_of(app: &App, secret: &Secret) -> Result<std::sync::Arc<Tool>, ApiError> {
    app.directory
        .tool(&secret.tool)
        .ok_or_else(|| ApiError::internal(format!("secret {} names unknown tool", secret.name)))
}

/// Metadata plus where the secret is used.
async fn view(app: &App, secret: &Secret) -> Result<Value, ApiError> {
    let agents: Vec<String> = app
        .store
        .list_agents()
        .await?
        .into_iter()
        .filter(|a| a.allowed_tools.contains(&secret.tool))
        .map(|a| a.name.to_string())
        .collect();
    let delivery = app
        .directory
        .tool(&secret.tool)
        .map(|t| t.delivery.mode.as_str());
    let mut v = json!(secret);
    v["delivery"] = json!(delivery);
    v["expired"] = json!(secret.is_expired(now()));
    v["used_by"] = json!({"tools": [secret.tool], "agents": agents});
    Ok(v)
}

pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<Map<String, Value>>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AdminRight::Secrets)?;
    let ApiJson(mut body) = body?;
    let value = take_value(&mut body)?;
    let meta: NewSecret = parse_json(&serde_json::to_vec(&body).map_err(ApiError::internal)?)?;
    let keeper = keeper(&app)?;
    let t = now();
    let secret = meta.into_secret(t)?;
    let tool = app.directory.tool(&secret.tool).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!("tool: tool `{}` does not exist", secret.tool),
        )
    })?;
    check_value(&value, &tool)?;
    let sealed = keeper.seal(&secret.name, secret.version, value.as_bytes());
    let ev = NewEvent::new(EventKind::SecretStored, caller.actor())
        .tool(&secret.tool)
        .request_id(Some(rid.0))
        .detail(
            json!({"secret": secret.name, "version": secret.version, "class": secret.class,
            "human_credential": secret.human_credential, "shared": secret.shared,
            "expires_at": secret.expires_at}),
        );
    app.store
        .put_secret(secret.clone(), sealed, ev)
        .await
        .map_err(|e| reference(e, "owner"))?;
    tracing::info!(secret = %secret.name, tool = %secret.tool, "secret stored");
    Ok((StatusCode::CREATED, Json(view(&app, &secret).await?)))
}

pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Secrets)?;
    let mut out = Vec::new();
    for s in app.store.list_secrets().await? {
        out.push(view(&app, &s).await?);
    }
    Ok(Json(json!({"secrets": out})))
}

fn parse_name(name: &str) -> Result<SecretName, ApiError> {
    Ok(SecretName::parse(name)?)
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Secrets)?;
    let Path(name) = path?;
    let name = parse_name(&name)?;
    let (secret, _) = app
        .store
        .get_secret(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("secret", &name))?;
    Ok(Json(view(&app, &secret).await?))
}

pub async fn rotate(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<Map<String, Value>>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Secrets)?;
    let Path(name) = path?;
    let ApiJson(mut body) = body?;
    let name = parse_name(&name)?;
    let value = take_value(&mut body)?;
    let class = match body.remove("class") {
        None => None,
        Some(Value::String(c)) => Some(c.parse::<SecretClass>()?),
        Some(_) => return Err(ApiError::bad_request("class: must be a string")),
    };
    if let Some(k) = body.keys().next() {
        return Err(ApiError::bad_request(format!(
            "{k}: unknown field, expected only `value` and `class`"
        )));
    }
    let keeper = keeper(&app)?;
    let (current, _) = app
        .store
        .get_secret(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("secret", &name))?;
    check_value(&value, &*tool_of(&app, &current)?)?;
    let next = current.version + 1;
    let sealed = keeper.seal(&name, next, value.as_bytes());
    let ev = NewEvent::new(EventKind::SecretRotated, caller.actor())
        .tool(&current.tool)
        .request_id(Some(rid.0))
        .detail(json!({"secret": name, "version": next, "class": class}));
    let t = now();
    let rotated = app
        .store
        .rotate_secret(&name, current.version, class, sealed, t, ev)
        .await?;
    tracing::info!(secret = %name, version = rotated.version, "secret rotated");
    Ok(Json(view(&app, &rotated).await?))
}

/// `DELETE /v1/secrets/{name}`: forget a secret revoked at its provider.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Secrets)?;
    let Path(name) = path?;
    let name = parse_name(&name)?;
    let ev = NewEvent::new(EventKind::SecretDeleted, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"secret": name}));
    let gone = app.store.delete_secret(&name, ev).await?;
    tracing::info!(secret = %name, tool = %gone.tool, "secret deleted");
    Ok(Json(
        json!({"deleted": gone.name, "tool": gone.tool, "version": gone.version}),
    ))
}

#[derive(Deserialize)]
pub struct RevealPath {
    id: String,
    name: String,
}

/// `GET /v1/tasks/{id}/secrets/{name}`: the `reveal` exception. The task's
/// own agent, an active task whose scope names the secret's tool, a tool
/// configured for `reveal`, and a policy permit — every refusal is audited
/// as `secret.refused`, every hand-out as `secret.retrieved` before the
/// value leaves.
pub async fn reveal(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<RevealPath>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let agent = caller.task_agent("fetch a secret")?;
    let Path(p) = path?;
    let task = own_task(&app, agent, &p.id).await?;
    let name = parse_name(&p.name)?;
    let keeper = keeper(&app)?;
    let (secret, sealed) = app
        .store
        .get_secret(&name)
        .await?
        .filter(|(s, _)| task.scope.item(&s.tool).is_some())
        .ok_or_else(|| ApiError::not_found("secret in this task's scope", &name))?;
    let tool = tool_of(&app, &secret)?;
    let t = now();
    let mut decision = app.policy().decide_reveal(&RevealRequest {
        agent: AgentFacts::of(agent),
        tool: ToolFacts::of(&tool),
        task: TaskFacts::of(&task, t),
        delivery: tool.delivery.mode.as_str(),
        secret_name: secret.name.as_str(),
        secret_class: secret.class.as_str(),
        human_credential: secret.human_credential,
        shared: secret.shared,
        anomaly_score: 0,
        now: t,
    });
    if secret.is_expired(t) {
        decision.allowed = false;
        decision
            .reasons
            .push("secret-expired: the secret is past its expiry date".into());
    }
    let ev = |kind| {
        NewEvent::new(kind, caller.actor())
            .agent(&agent.name)
            .task(&task.id)
            .tool(&tool.name)
            .request_id(Some(rid.0.clone()))
            .detail(json!({"secret": secret.name, "version": secret.version}))
    };
    if !decision.allowed {
        let ev = ev(EventKind::SecretRefused)
            .decision("deny")
            .reasons(decision.reasons.clone());
        app.store.append_events(vec![ev]).await?;
        let mut err = ApiError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!("policy refuses to hand secret `{name}` to this task"),
        );
        err.reasons = decision.reasons;
        return Err(err);
    }
    let value = keeper
        .open_value(&secret.name, secret.version, &sealed)
        .map_err(ApiError::internal)?;
    let value =
        String::from_utf8(value.to_vec()).map_err(|_| ApiError::internal("secret is not UTF-8"))?;
    let ev = ev(EventKind::SecretRetrieved)
        .decision("allow")
        .reasons(decision.reasons);
    // Durable (and the secret marked used) before the value leaves.
    app.store.record_secret_use(&secret.name, now(), ev).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(
            json!({"name": secret.name, "tool": secret.tool, "version": secret.version, "value": value}),
        ),
    ))
}
