//! Request-time checks: `/v1/authorize` (Cedar decision for one action),
//! `/oauth/introspect` (RFC 7662) and `/oauth/revoke` (RFC 7009).

use super::{AppState, Caller, bearer};
use crate::app::{App, now};
use crate::error::{ApiError, OAuthError};
use crate::extract::{ApiJson, OAuthForm, RequestId};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    AdminRight, Agent, Environment, RevocationKind, Sensitivity, SpiffeId, Task, Tool,
};
use mandate_policy::{AgentFacts, InvokeRequest, TaskFacts, ToolFacts};
use mandate_token::claims::AccessClaims;
use mandate_token::dpop;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Everything a live access token stands for.
struct Live {
    claims: Arc<AccessClaims>,
    agent: Arc<Agent>,
    task: Arc<Task>,
    tool: Arc<Tool>,
}

/// Signature, expiry, revocation, agent and tool lookups. The task's state
/// is returned, not judged: policy decides what an inactive task means.
async fn resolve(app: &App, token: &str, t: i64) -> Result<Live, String> {
    let claims = app
        .verify_access(token, t)
        .map_err(|e| format!("token: {e}"))?;
    if app.directory.is_token_revoked(&claims.jti) {
        return Err("token: revoked".into());
    }
    let agent = SpiffeId::parse("sub", &claims.sub)
        .ok()
        .and_then(|id| app.directory.agent(&id.agent))
        .ok_or("token: unknown agent")?;
    if !agent.is_active() {
        return Err("agent: revoked".into());
    }
    let tool = app
        .directory
        .tool_by_audience(&claims.aud)
        .ok_or("token: audience is no registered tool")?;
    let task_id = mandate_core::TaskId::parse(&claims.txn).map_err(|_| "token: bad txn")?;
    let task = app
        .directory
        .task(app.store.as_ref(), &task_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "task lookup failed");
            "internal: task lookup failed".to_owned()
        })?
        .ok_or("token: task unknown")?;
    Ok(Live {
        claims,
        agent,
        task,
        tool,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    token: String,
    /// The asking resource server's own audience (its tool URI): a token
    /// minted for another tool is denied here, whatever its scope.
    audience: String,
    action: String,
    resource: String,
    environment: Option<Environment>,
    data_sensitivity: Option<Sensitivity>,
    /// What the resource server received with a DPoP-bound token.
    dpop: Option<DpopEvidence>,
}

/// The DPoP proof a resource server received, and the request it came with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopEvidence {
    proof: String,
    method: String,
    url: String,
}

/// A DPoP-bound token counts only with a good proof for it; an unbound one
/// must not come with one (RFC 9449 §7.1).
fn check_binding(
    app: &App,
    claims: &AccessClaims,
    token: &str,
    evidence: Option<&DpopEvidence>,
    now: i64,
) -> Result<(), String> {
    match (&claims.cnf, evidence) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err("dpop: token is not DPoP-bound, yet a proof came with it".into()),
        (Some(_), None) => {
            Err("dpop: token is DPoP-bound; pass the request's proof as `dpop`".into())
        }
        (Some(cnf), Some(e)) => {
            let expect = dpop::Expect {
                method: &e.method,
                url: &e.url,
                access_token: Some(token),
                now,
            };
            dpop::verify_bound(&cnf.jkt, &e.proof, &expect, &app.dpop_replay)
                .map_err(|e| format!("dpop: {e}"))
        }
    }
}

pub async fn authorize(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    req: Result<ApiJson<AuthorizeRequest>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    // Every decision is a durable audit row: only known verifiers may ask.
    let verifier = caller.require_any(&[AdminRight::Verify, AdminRight::Proxy])?;
    let ApiJson(req) = req?;
    if req.action.is_empty() || req.action.len() > 64 {
        return Err(ApiError::bad_request("action: must be 1 to 64 characters"));
    }
    if req.audience.is_empty() || req.audience.len() > 256 {
        return Err(ApiError::bad_request(
            "audience: must be 1 to 256 characters",
        ));
    }
    if req.resource.is_empty() || req.resource.len() > 256 {
        return Err(ApiError::bad_request(
            "resource: must be 1 to 256 characters",
        ));
    }
    let t = now();
    let mut ev = NewEvent::new(EventKind::Decision, format!("admin:{}", verifier.id))
        .request_id(Some(rid.0))
        .detail(json!({"audience": req.audience, "action": req.action, "resource": req.resource}));
    let (decision, reasons, policy_ids) = match resolve(&app, &req.token, t).await {
        Err(reason) => ("deny", vec![reason], Vec::new()),
        Ok(live) => {
            ev.agent = Some(live.agent.name.to_string());
            ev.task = Some(live.task.id.to_string());
            ev.tool = Some(live.tool.name.to_string());
            ev.jti = Some(live.claims.jti.clone());
            let bound = if live.claims.aud != req.audience {
                Err(format!(
                    "token: minted for audience `{}`, not `{}`",
                    live.claims.aud, req.audience
                ))
            } else {
                check_binding(&app, &live.claims, &req.token, req.dpop.as_ref(), t)
            };
            match bound {
                Err(reason) => ("deny", vec![reason], Vec::new()),
                Ok(()) => decide(&app, &live, &req, t),
            }
        }
    };
    app.metrics.decision(decision);
    let ev = ev.decision(decision).reasons(reasons.clone());
    // The decision is on disk before anyone acts on it.
    app.store.append_events(vec![ev]).await?;
    Ok(Json(
        json!({"decision": decision, "reasons": reasons, "policy_ids": policy_ids}),
    ))
}

/// Cedar's answer for a live token and this request.
fn decide(
    app: &App,
    live: &Live,
    req: &AuthorizeRequest,
    t: i64,
) -> (&'static str, Vec<String>, Vec<String>) {
    let detail = live.claims.detail_for(live.tool.name.as_str());
    let grant_actions: Vec<String> = detail.map(|d| d.actions.clone()).unwrap_or_default();
    let resource_in_scope = detail.is_some_and(|d| d.covers_resource(&req.resource));
    let d = app.policy().decide_invoke(&InvokeRequest {
        agent: AgentFacts::of(&live.agent),
        tool: ToolFacts::of(&live.tool),
        task: TaskFacts::of(&live.task, t),
        action: &req.action,
        resource: &req.resource,
        grant_actions: &grant_actions,
        resource_in_scope,
        request_environment: req.environment,
        data_sensitivity: req.data_sensitivity,
        anomaly_score: 0,
        now: t,
    });
    (
        if d.allowed { "allow" } else { "deny" },
        d.reasons,
        d.policy_ids,
    )
}

/// Introspection and revocation need a caller: an admin token, or the agent's own session.
async fn oauth_caller(app: &App, headers: &HeaderMap) -> Result<Caller, OAuthError> {
    let token = bearer(headers).ok_or_else(|| {
        OAuthError::new(
            "invalid_client",
            "authenticate with `Authorization: Bearer` (admin token or agent session)",
        )
    })?;
    Caller::from_bearer(app, token)
        .await
        .map_err(|e| OAuthError::new("invalid_client", e.message))
}

fn may_see(caller: &Caller, sub: &str) -> bool {
    match caller {
        Caller::Admin(t) => {
            t.allows(AdminRight::Tasks, now()) || t.allows(AdminRight::Audit, now())
        }
        Caller::Agent { agent, .. } => agent.spiffe_id == sub,
    }
}

pub async fn introspect(
    State(app): State<AppState>,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<Value>, OAuthError> {
    let caller = oauth_caller(&app, &headers).await?;
    let token = form.require("token")?;
    let t = now();
    let inactive = Json(json!({"active": false}));
    // Sessions are introspectable too.
    if let Ok((s, _)) = app.verify_session(token, t) {
        if !may_see(&caller, &s.sub) {
            return Ok(inactive);
        }
        return Ok(Json(json!({
            "active": true, "token_type": "session", "iss": s.iss, "sub": s.sub, "aud": s.aud,
            "exp": s.exp, "iat": s.iat, "jti": s.jti, "client_id": s.client_id,
        })));
    }
    let Ok(live) = resolve(&app, token, t).await else {
        return Ok(inactive);
    };
    if !may_see(&caller, &live.claims.sub) || !live.task.is_live(t) {
        return Ok(inactive);
    }
    let c = &live.claims;
    let mut v = json!({
        "active": true, "token_type": "Bearer", "iss": c.iss, "sub": c.sub, "aud": c.aud,
        "exp": c.exp, "iat": c.iat, "nbf": c.nbf, "jti": c.jti, "client_id": c.client_id,
        "txn": c.txn, "scope": c.scope, "authorization_details": c.authorization_details,
    });
    // RFC 9449 §6.2: a resource server must know the token needs a proof.
    if let Some(cnf) = &c.cnf {
        v["token_type"] = json!("DPoP");
        v["cnf"] = json!(cnf);
    }
    Ok(Json(v))
}

pub async fn revoke(
    State(app): State<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<Value>, OAuthError> {
    let caller = oauth_caller(&app, &headers).await?;
    let token = form.require("token")?;
    if let Some(h) = form.get("token_type_hint")
        && !matches!(h, "access_token" | "refresh_token")
    {
        return Err(OAuthError::new(
            "unsupported_token_type",
            "token_type_hint must be access_token",
        ));
    }
    let t = now();
    // Which token is it? Revoke access tokens and sessions alike; an unknown,
    // expired or foreign token is answered 200 with no effect (RFC 7009 §2.2).
    let target = match app.verify_access(token, t) {
        Ok(c) => Some((c.jti.clone(), c.sub.clone(), c.exp, Some(c.txn.clone()))),
        Err(_) => app
            .verify_session(token, t)
            .ok()
            .map(|(s, _)| (s.jti.clone(), s.sub.clone(), s.exp, None)),
    };
    let Some((jti, sub, exp, task)) = target else {
        return Ok(Json(json!({})));
    };
    let allowed = match &caller {
        Caller::Admin(a) => a.allows(AdminRight::Tasks, t),
        Caller::Agent { agent, .. } => agent.spiffe_id == sub,
    };
    if !allowed || app.directory.is_token_revoked(&jti) {
        return Ok(Json(json!({})));
    }
    let mut ev = NewEvent::new(EventKind::TokenRevoked, caller.actor())
        .jti(&jti)
        .request_id(Some(rid.0));
    ev.task = task;
    ev.agent = SpiffeId::parse("sub", &sub)
        .ok()
        .map(|s| s.agent.to_string());
    let r = app
        .store
        .revoke_by_id(RevocationKind::Token, &jti, exp, t, ev)
        .await?;
    app.directory.revoke_token(jti, exp);
    app.publish([r]);
    Ok(Json(json!({})))
}
