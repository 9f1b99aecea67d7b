//! Owners, agents, tools, workload bindings, join tokens, enrolment and
//! admin tokens: the broker's registry.

use super::caller::Caller;
use crate::admin_token::new_admin_token;
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, OptionalJson, RequestId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    AdminRight, AgentName, Binding, NewAgent, NewTool, Owner, OwnerKind, OwnerName, ToolName,
};
use mandate_store::StoreError;
use mandate_token::{Jwk, VerifyingKey};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A missing referenced record in a body is the client's mistake (422), not a missing route.
pub(super) fn reference(e: StoreError, field: &str) -> ApiError {
    match e {
        StoreError::NotFound { what, id } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!("{field}: {what} `{id}` does not exist"),
        ),
        other => other.into(),
    }
}

fn parse_agent(name: &str) -> Result<AgentName, ApiError> {
    Ok(AgentName::parse(name)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOwner {
    name: OwnerName,
    /// `team` (the default), `service` or `person`.
    #[serde(default = "team")]
    kind: OwnerKind,
    #[serde(default)]
    description: String,
}

fn team() -> OwnerKind {
    OwnerKind::Team
}

pub async fn create_owner(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<NewOwner>, ApiError>,
) -> Result<(StatusCode, Json<Owner>), ApiError> {
    caller.require(AdminRight::Agents)?;
    let ApiJson(body) = body?;
    if body.description.len() > 1024 {
        return Err(ApiError::bad_request(
            "description: must be at most 1024 bytes",
        ));
    }
    let owner = Owner {
        name: body.name,
        kind: body.kind,
        description: body.description,
        created_at: now(),
    };
    let ev = NewEvent::new(EventKind::OwnerCreated, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"owner": owner.name, "kind": owner.kind}));
    app.store.create_owner(owner.clone(), ev).await?;
    Ok((StatusCode::CREATED, Json(owner)))
}

pub async fn list_owners(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Agents)?;
    Ok(Json(json!({"owners": app.store.list_owners().await?})))
}

pub async fn create_agent(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<NewAgent>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AdminRight::Agents)?;
    let ApiJson(body) = body?;
    for (i, t) in body.allowed_tools.iter().enumerate() {
        if app.directory.tool(t).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_reference",
                format!("allowed_tools[{i}]: tool `{t}` does not exist"),
            ));
        }
    }
    let agent = body.into_agent(&app.settings.trust_domain, now())?;
    let ev = NewEvent::new(EventKind::AgentCreated, caller.actor())
        .agent(&agent.name)
        .request_id(Some(rid.0))
        .detail(json!({"spiffe_id": agent.spiffe_id, "environment": agent.environment, "owner": agent.owner}));
    app.store
        .create_agent(agent.clone(), ev)
        .await
        .map_err(|e| reference(e, "owner"))?;
    app.directory.put_agent(agent.clone());
    Ok((StatusCode::CREATED, Json(json!(agent))))
}

pub async fn list_agents(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Agents)?;
    Ok(Json(json!({"agents": app.store.list_agents().await?})))
}

pub async fn get_agent(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    // A proxy reads agents to give policy the principal's facts.
    caller.require_any(&[AdminRight::Agents, AdminRight::Proxy])?;
    let Path(name) = path?;
    let name = parse_agent(&name)?;
    let agent = app
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", &name))?;
    Ok(Json(json!(agent)))
}

pub async fn revoke_agent(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Agents)?;
    let Path(name) = path?;
    let name = parse_agent(&name)?;
    let t = now();
    let ev = NewEvent::new(EventKind::AgentRevoked, caller.actor())
        .agent(&name)
        .request_id(Some(rid.0));
    let out = app
        .store
        .revoke_agent(&name, t, t + app.max_token_ttl(), ev)
        .await?;
    app.directory.put_agent(out.agent.clone());
    let tasks: Vec<String> = out
        .tasks
        .iter()
        .map(|t| &t.id)
        .chain(&out.below)
        .map(|id| id.to_string())
        .collect();
    for task in out.tasks {
        app.directory.put_task(task);
    }
    for id in &out.below {
        app.directory.forget_task(id);
    }
    app.publish(out.revocations);
    Ok(Json(json!({"agent": out.agent, "revoked_tasks": tasks})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBinding {
    issuer: String,
    subject: String,
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

pub async fn add_binding(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<NewBinding>, ApiError>,
) -> Result<(StatusCode, Json<Binding>), ApiError> {
    caller.require(AdminRight::Agents)?;
    let Path(name) = path?;
    let ApiJson(body) = body?;
    let name = parse_agent(&name)?;
    app.directory
        .agent(&name)
        .ok_or_else(|| ApiError::not_found("agent", &name))?;
    if body.issuer.is_empty() || body.issuer.len() > 512 {
        return Err(ApiError::bad_request("issuer: must be 1 to 512 characters"));
    }
    if body.subject.is_empty() || body.subject.len() > 512 {
        return Err(ApiError::bad_request(
            "subject: must be 1 to 512 characters",
        ));
    }
    if body.claims.len() > 16
        || body
            .claims
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 512)
    {
        return Err(ApiError::bad_request(
            "claims: at most 16 claims, names 1 to 128 and values up to 512 characters",
        ));
    }
    if !app
        .settings
        .raw
        .issuers
        .iter()
        .any(|i| i.issuer == body.issuer)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!(
                "issuer: `{}` is not a trusted issuer in the server configuration",
                body.issuer
            ),
        ));
    }
    let binding = Binding {
        agent: name.clone(),
        issuer: body.issuer,
        subject: body.subject,
        claims: body.claims,
    };
    let ev = NewEvent::new(EventKind::AgentBindingAdded, caller.actor())
        .agent(&name)
        .request_id(Some(rid.0))
        .detail(
            json!({"issuer": binding.issuer, "subject": binding.subject, "claims": binding.claims}),
        );
    app.store.add_binding(binding.clone(), ev).await?;
    Ok((StatusCode::CREATED, Json(binding)))
}

pub async fn list_bindings(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Agents)?;
    let Path(name) = path?;
    let name = parse_agent(&name)?;
    Ok(Json(
        json!({"bindings": app.store.list_bindings(&name).await?}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    ttl_secs: Option<u32>,
}

pub async fn create_join_token(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    // The body is optional: an empty POST takes the defaults.
    OptionalJson(body): OptionalJson<JoinTokenRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AdminRight::Agents)?;
    let Path(name) = path?;
    let name = parse_agent(&name)?;
    let agent = app
        .directory
        .agent(&name)
        .ok_or_else(|| ApiError::not_found("agent", &name))?;
    if !agent.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("agent `{name}` is revoked"),
        ));
    }
    let ttl = body.ttl_secs.unwrap_or(600);
    if !(1..=3600).contains(&ttl) {
        return Err(ApiError::bad_request(
            "ttl_secs: must be between 1 and 3600",
        ));
    }
    let secret = format!(
        "mjt_{}",
        mandate_token::b64(&mandate_token::random_bytes::<32>())
    );
    let expires_at = now() + ttl as i64;
    let ev = NewEvent::new(EventKind::JoinTokenIssued, caller.actor())
        .agent(&name)
        .request_id(Some(rid.0))
        .detail(json!({"expires_at": expires_at}));
    app.store
        .create_join_token(
            mandate_token::sha256_hex(secret.as_bytes()),
            &name,
            expires_at,
            ev,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"agent": name, "join_token": secret, "expires_at": expires_at})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    join_token: String,
    jwk: Jwk,
}

/// An agent trades a one-time join token for registering its own public
/// key; from then on it logs in with `private_key_jwt`.
pub async fn enroll(
    State(app): State<AppState>,
    rid: RequestId,
    ApiJson(body): ApiJson<Enrolment>,
) -> Result<Json<Value>, ApiError> {
    let key = VerifyingKey::from_jwk(&body.jwk)
        .map_err(|e| ApiError::bad_request(format!("jwk: {e}")))?;
    let thumbprint = body
        .jwk
        .thumbprint()
        .map_err(|e| ApiError::bad_request(format!("jwk: {e}")))?;
    let ev = NewEvent::new(EventKind::AgentKeyEnrolled, "join_token")
        .request_id(Some(rid.0))
        .detail(json!({"jkt": thumbprint, "alg": key.alg.as_str()}));
    let hash = mandate_token::sha256_hex(body.join_token.as_bytes());
    let agent = app
        .store
        .enroll_agent_key(
            hash,
            serde_json::to_value(&body.jwk).map_err(ApiError::internal)?,
            now(),
            ev,
        )
        .await?;
    app.directory.put_agent(agent.clone());
    Ok(Json(json!({
        "agent": agent.name,
        "client_id": agent.spiffe_id,
        "token_endpoint": format!("{}/oauth/token", app.issuer),
        "jkt": thumbprint,
    })))
}

pub async fn create_tool(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<NewTool>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AdminRight::Tools)?;
    let ApiJson(body) = body?;
    let tool = body.into_tool(now())?;
    if tool.engine.is_some() {
        // Its statements run with the engine's admin credential.
        caller.require(AdminRight::Secrets).map_err(|_| {
            ApiError::forbidden(
                "engine: a tool that mints credentials also needs the `secrets` right",
            )
        })?;
        check_engine(&tool)?;
    }
    let ev = NewEvent::new(EventKind::ToolCreated, caller.actor())
        .tool(&tool.name)
        .request_id(Some(rid.0))
        .detail(json!({"audience": tool.audience, "environment": tool.environment, "sensitivity": tool.sensitivity}));
    app.store
        .create_tool(tool.clone(), ev)
        .await
        .map_err(|e| reference(e, "owner"))?;
    app.directory.put_tool(tool.clone());
    Ok((StatusCode::CREATED, Json(json!(tool))))
}

/// Change a tool: routes, upstream, delivery, sensitivity, TTL, description,
/// added actions. Proxies pick it up on their next catalog refresh.
pub async fn update_tool(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<NewTool>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Tools)?;
    let Path(name) = path?;
    let ApiJson(body) = body?;
    let name = ToolName::parse(&name)?;
    if body.name != name {
        return Err(ApiError::bad_request(format!(
            "name: the body names `{}` but the path names `{name}`",
            body.name
        )));
    }
    let current = app
        .directory
        .tool(&name)
        .ok_or_else(|| ApiError::not_found("tool", &name))?;
    let next = current.revise(body.into_tool(current.created_at)?)?;
    check_engine(&next)?;
    let changed = changed_fields(&current, &next);
    // Where the proxy sends the tool's secret, and how, decides who can read
    // it: pointing `upstream` at one's own host would hand over the key. So
    // those two need the `secrets` right as well.
    if changed.iter().any(|f| SECRET_BEARING.contains(f)) {
        caller.require(AdminRight::Secrets).map_err(|_| {
            ApiError::forbidden(
                "upstream, delivery, egress_hosts, engine: changing where or how the tool's \
                 secret is sent or used also needs the `secrets` right",
            )
        })?;
    }
    let mut detail = json!({"changed": changed});
    for f in SECRET_BEARING.iter().filter(|f| changed.contains(f)) {
        detail[*f] = json!({"from": json!(&current)[*f], "to": json!(&next)[*f]});
    }
    let ev = NewEvent::new(EventKind::ToolUpdated, caller.actor())
        .tool(&next.name)
        .request_id(Some(rid.0))
        .detail(detail);
    app.store.update_tool(next.clone(), ev).await?;
    app.directory.put_tool(next.clone());
    tracing::info!(tool = %next.name, "tool updated");
    Ok(Json(json!(next)))
}

/// Tool fields that steer the upstream secret (values only, never the
/// secret): `egress_hosts` says where a revealed one may be taken.
/// An engine's statements run with the tool's secret.
const SECRET_BEARING: [&str; 4] = ["upstream", "delivery", "egress_hosts", "engine"];

/// An engine's templates, checked the way the engine will render them.
fn check_engine(tool: &mandate_core::Tool) -> Result<(), ApiError> {
    if let Some(mandate_core::EngineSpec::Postgres { roles, ca_pem }) = &tool.engine {
        mandate_engine::postgres::check_roles(roles)
            .map_err(|(i, e)| ApiError::bad_request(format!("engine.roles[{i}]: {e}")))?;
        if let Some(pem) = ca_pem {
            mandate_engine::postgres::check_ca(pem)
                .map_err(|e| ApiError::bad_request(format!("engine.ca_pem: {e}")))?;
        }
    }
    Ok(())
}

/// Names of the fields that differ, for the audit record.
fn changed_fields(a: &mandate_core::Tool, b: &mandate_core::Tool) -> Vec<&'static str> {
    let (a, b) = (json!(a), json!(b));
    [
        "sensitivity",
        "max_ttl_secs",
        "actions",
        "description",
        "upstream",
        "routes",
        "delivery",
        "egress_hosts",
        "engine",
    ]
    .into_iter()
    .filter(|f| a[f] != b[f])
    .collect()
}

pub async fn list_tools(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Tools)?;
    Ok(Json(json!({"tools": app.store.list_tools().await?})))
}

pub async fn get_tool(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Tools)?;
    let Path(name) = path?;
    let name = ToolName::parse(&name)?;
    let tool = app
        .directory
        .tool(&name)
        .ok_or_else(|| ApiError::not_found("tool", &name))?;
    Ok(Json(json!(tool.as_ref())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAdminToken {
    rights: Vec<String>,
    #[serde(default)]
    description: String,
    ttl_secs: Option<u32>,
    /// The agent the token is issued to (a supervising agent acting as
    /// approver): it can never approve that agent's requests nor those of
    /// agents with its owner.
    agent: Option<AgentName>,
}

pub async fn create_admin_token(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<NewAdminToken>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AdminRight::Root)?;
    let ApiJson(body) = body?;
    if body.rights.is_empty() {
        let names: Vec<&str> = AdminRight::ALL[1..].iter().map(|r| r.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "rights: list at least one of {}",
            names.join(", ")
        )));
    }
    let mut rights = Vec::new();
    for (i, r) in body.rights.iter().enumerate() {
        let right = AdminRight::parse(r)
            .map_err(|e| ApiError::bad_request(format!("rights[{i}]: {}", e.message)))?;
        if right == AdminRight::Root {
            return Err(ApiError::bad_request(format!(
                "rights[{i}]: `root` cannot be delegated"
            )));
        }
        if !rights.contains(&right) {
            rights.push(right);
        }
    }
    if body.description.len() > 1024 {
        return Err(ApiError::bad_request(
            "description: must be at most 1024 bytes",
        ));
    }
    let expires_at = match body.ttl_secs {
        Some(0) => return Err(ApiError::bad_request("ttl_secs: must be at least 1")),
        Some(s) => Some(now() + s as i64),
        None => None,
    };
    if let Some(a) = &body.agent
        && app.directory.agent(a).is_none()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!("agent: agent `{a}` does not exist"),
        ));
    }
    let (secret, mut token) = new_admin_token(rights, body.description, expires_at);
    token.agent = body.agent;
    let ev = NewEvent::new(EventKind::AdminTokenCreated, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"id": token.id, "rights": token.rights, "expires_at": token.expires_at, "agent": token.agent}));
    app.store.create_admin_token(token.clone(), ev).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": token.id, "token": secret.expose_secret(), "rights": token.rights, "expires_at": token.expires_at, "agent": token.agent}),
        ),
    ))
}

/// Every admin token's metadata (never the token or its hash).
pub async fn list_admin_tokens(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Root)?;
    let t = now();
    let tokens: Vec<Value> = app
        .store
        .list_admin_tokens()
        .await?
        .into_iter()
        .map(|k| {
            let live = k.is_live(t);
            let mut v = json!(k);
            v["live"] = json!(live);
            v
        })
        .collect();
    Ok(Json(json!({ "admin_tokens": tokens })))
}

/// Revoke an admin token: it fails on its very next use.
pub async fn revoke_admin_token(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Root)?;
    let Path(id) = path?;
    if id.is_empty() || id.len() > 64 || !id.starts_with("adm_") {
        return Err(ApiError::bad_request(
            "id: must be an admin token id (`adm_…`)",
        ));
    }
    let ev = NewEvent::new(EventKind::AdminTokenRevoked, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({ "id": id }));
    let revoked = app.store.revoke_admin_token(&id, now(), ev).await?;
    app.directory.forget_admin_tokens();
    tracing::info!(admin_token = %revoked.id, "admin token revoked");
    Ok(Json(json!(revoked)))
}
