//! Request-time checks: `/v1/authorize` (Cedar decision for one action),
//! `/oauth/introspect` (RFC 7662) and `/oauth/revoke` (RFC 7009).

use super::caller::Caller;
use super::client_auth::{self, Client};
use crate::app::{App, AppState, now};
use crate::approvals::{self, Asker};
use crate::error::{ApiError, OAuthError};
use crate::extract::{ApiJson, OAuthForm, RequestId};
use crate::misuse::{self, Sighting};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, Agent, Environment, RevocationKind, Sensitivity, SpiffeId, Task};
use mandate_policy::{
    Asked, DpopProof, Holder, Judge, Operation, Presentation, Refused, Subject, authorize_request,
    check_claims, check_token, settle,
};
use mandate_token::claims::VerifiedAccess;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The broker's view of a token: verified, and what its directory and
/// store know about the holder. Judging it is `mandate_policy`'s.
pub(super) struct Looked {
    pub token: Arc<VerifiedAccess>,
    revoked: Option<RevocationKind>,
    agent: Option<Arc<Agent>>,
    pub task: Option<Arc<Task>>,
}

impl Looked {
    pub fn holder(&self) -> Holder<'_> {
        Holder {
            revoked: self.revoked,
            agent: self.agent.as_ref(),
            task: self.task.as_ref(),
        }
    }
}

/// Verify `raw` and look up its holder. `Ok(Err)`: the token does not
/// verify; `Err`: the store failed.
pub(super) async fn look_up(
    app: &App,
    raw: &str,
    t: i64,
) -> Result<Result<Looked, Refused>, mandate_store::StoreError> {
    let token = match app.verify_access(raw, t) {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    let revoked = app
        .directory
        .is_token_revoked(&token.claims.jti)
        .then_some(RevocationKind::Token);
    let (mut agent, mut task) = (None, None);
    // Nothing to look up for a token already dead by its claims.
    if let Ok(subject) = check_claims(&token, revoked, t) {
        agent = app.directory.agent(&subject.agent);
        task = app
            .directory
            .task(app.store.as_ref(), &subject.task)
            .await?;
    }
    Ok(Ok(Looked {
        token,
        revoked,
        agent,
        task,
    }))
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
    /// The presenting client's address as the resource server saw it:
    /// evidence if the token turns out to be misused.
    client: Option<std::net::IpAddr>,
    /// Facts about the request that policy may weigh.
    #[serde(default)]
    context: RequestContext,
}

/// What the resource server knows about the request beyond its action
/// and resource (Cedar `context.request.amount`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// A payment's (or transfer's) amount, in the tool's unit.
    amount: Option<i64>,
}

/// The DPoP proof a resource server received, and the request it came with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopEvidence {
    proof: String,
    method: String,
    url: String,
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
    let actor = format!("admin:{}", verifier.id);
    let mut ev = NewEvent::new(EventKind::Decision, actor.clone()).request_id(Some(rid.0.clone()));
    let mut chain = Vec::new();
    let mut breakglass = false;
    let verdict = match look_up(&app, &req.token, t).await? {
        Err(refused) => Err(refused),
        Ok(looked) => {
            if let Ok(s) = Subject::of(&looked.token) {
                ev.agent = Some(s.agent.to_string());
                ev.task = Some(s.task.to_string());
                chain = s.chain_names();
            }
            ev.jti = Some(looked.token.claims.jti.clone());
            breakglass = looked.token.claims.breakglass;
            let tool = app.directory.tool_by_audience(&req.audience);
            ev.tool = tool.as_ref().map(|t| t.name.to_string());
            let presentation = match &req.dpop {
                None => Presentation::Bearer,
                Some(e) => Presentation::Dpop(Ok(DpopProof {
                    proof: &e.proof,
                    method: &e.method,
                    url: &e.url,
                    token: &req.token,
                })),
            };
            let asked = Asked {
                tool: tool.as_ref().ok_or(req.audience.as_str()),
                operation: Operation::Named {
                    action: &req.action,
                    resource: &req.resource,
                },
                environment: req.environment,
                data_sensitivity: req.data_sensitivity,
                presentation,
                amount: req.context.amount,
            };
            let policy = app.policy();
            let judge = Judge {
                policy: &policy,
                replay: &app.dpop_replay,
                recent: &app.recent,
                now: t,
            };
            let verdict = authorize_request(&looked.token, &looked.holder(), &asked, &judge);
            match (verdict, &looked.agent, &looked.task) {
                (Err(held), Some(agent), Some(task)) if held.pending.is_some() => {
                    let pending = held.pending.as_deref().expect("checked");
                    let asker = Asker {
                        agent,
                        task,
                        actor: &actor,
                        request_id: Some(rid.0.clone()),
                    };
                    let resolved =
                        approvals::resolve(&app, &asker, pending.held.clone(), &pending.need, t)
                            .await?;
                    settle(held, approvals::settled(&resolved))
                }
                (verdict, _, _) => verdict,
            }
        }
    };
    let (decision, reasons) = match &verdict {
        Ok(a) => ("allow", a.decision.reasons.clone()),
        Err(r) => ("deny", r.reasons()),
    };
    let body = match &verdict {
        Ok(a) => json!({
            "decision": decision, "reasons": reasons, "policy_ids": a.decision.policy_ids,
        }),
        Err(r) => {
            let mut body = json!({
                "decision": decision, "code": r.refusal.as_str(), "reasons": reasons,
                "policy_ids": r.policy_ids,
            });
            if let Some(id) = r.approval() {
                body["approval_id"] = json!(id);
            }
            body
        }
    };
    app.metrics.decision(decision);
    let mut events = Vec::with_capacity(2);
    if let Err(r) = &verdict
        && let Some(m) = &r.misuse
    {
        events.push(misuse::event(Sighting {
            actor: &actor,
            misuse: m,
            refusal: format!("{}: {}", r.refusal, r.message),
            agent: ev.agent.clone(),
            task: ev.task.clone(),
            tool: ev.tool.clone(),
            jti: ev.jti.clone(),
            client: req.client.map(|ip| ip.to_canonical().to_string()),
            chain: chain.clone(),
            request_id: Some(rid.0.clone()),
        }));
    }
    let mut detail =
        json!({"audience": req.audience, "action": req.action, "resource": req.resource});
    if let Some(ip) = req.client {
        // For the anomaly detector: one token from two addresses.
        detail["client"] = json!(ip.to_canonical().to_string());
    }
    if !chain.is_empty() {
        detail["chain"] = json!(chain);
    }
    if let Some(a) = req.context.amount {
        detail["amount"] = json!(a);
    }
    if breakglass {
        detail["breakglass"] = json!(true);
        if verdict.is_ok() {
            let mut used = NewEvent::new(EventKind::BreakglassUsed, actor.clone())
                .decision("allow")
                .request_id(Some(rid.0.clone()))
                .detail(
                    json!({"via": "authorize", "action": req.action, "resource": req.resource}),
                );
            used.agent = ev.agent.clone();
            used.task = ev.task.clone();
            used.tool = ev.tool.clone();
            used.jti = ev.jti.clone();
            events.push(used);
        }
    }
    if let Some(id) = verdict.as_ref().err().and_then(Refused::approval) {
        detail["approval"] = json!(id);
    }
    events.insert(0, ev.decision(decision).reasons(reasons).detail(detail));
    // The decision is on disk before anyone acts on it.
    app.store.append_events(events.clone()).await?;
    misuse::respond(&app, &events[1..]).await;
    Ok(Json(body))
}

/// Introspection and revocation authenticate their caller by the one
/// client-authentication rule: an agent by `private_key_jwt` or its
/// session, an operator or gateway by its admin token.
async fn oauth_caller(
    app: &App,
    form: &OAuthForm,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Caller, OAuthError> {
    let url = format!("{}{endpoint}", app.issuer);
    match client_auth::authenticate(app, form, headers, &url).await {
        Ok(Client::Key(a)) => {
            app.assertion_seen(&a)?;
            Ok(Caller::Agent {
                model: a.agent.model.clone(),
                agent: a.agent,
            })
        }
        Ok(Client::Bearer(c)) => Ok(c),
        Ok(Client::Anonymous) => Err(OAuthError::new(
            "invalid_client",
            "authenticate: an agent with private_key_jwt (client_assertion) or its session, an operator or gateway with `Authorization: Bearer <admin token>`",
        )),
        Err(r) => Err(r.error),
    }
}

/// Admin rights that may introspect any token: what gateways hold
/// (`verify`), and operators who see tasks or the audit log.
const INTROSPECT_RIGHTS: [AdminRight; 3] =
    [AdminRight::Verify, AdminRight::Tasks, AdminRight::Audit];

/// An admin token without an introspection right is told so (403): a
/// silent `active: false` would tell a gateway every token is dead. An
/// agent session sees only its own tokens.
fn may_introspect(caller: &Caller) -> Result<(), OAuthError> {
    match caller {
        Caller::Agent { .. } => Ok(()),
        Caller::Admin(_) => caller
            .require_any(&INTROSPECT_RIGHTS)
            .map(|_| ())
            .map_err(|e| OAuthError::new("insufficient_scope", e.message)),
    }
}

fn may_see(caller: &Caller, sub: &str) -> bool {
    match caller {
        Caller::Admin(_) => true,
        Caller::Agent { agent, .. } => agent.spiffe_id == sub,
    }
}

pub async fn introspect(
    State(app): State<AppState>,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Json<Value>, OAuthError> {
    let caller = oauth_caller(&app, &form, &headers, "/oauth/introspect").await?;
    may_introspect(&caller)?;
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
    // `active` is the token stage of the one decision path: alive, its
    // agent and task known, active and its own.
    let looked = match look_up(&app, token, t).await {
        Ok(Ok(l)) => l,
        Ok(Err(_)) => return Ok(inactive),
        Err(e) => {
            tracing::error!(error = %e, "introspection: task lookup failed");
            return Ok(inactive);
        }
    };
    if check_token(&looked.token, &looked.holder(), t).is_err()
        || !may_see(&caller, &looked.token.claims.sub)
    {
        return Ok(inactive);
    }
    let c = &looked.token.claims;
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
    let caller = oauth_caller(&app, &form, &headers, "/oauth/revoke").await?;
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
        Ok(v) if t < v.claims.exp => {
            let c = &v.claims;
            Some((c.jti.clone(), c.sub.clone(), c.exp, Some(c.txn.clone())))
        }
        Ok(_) => None,
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
    app.publish([r]);
    Ok(Json(json!({})))
}
