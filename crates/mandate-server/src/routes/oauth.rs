//! `POST /oauth/token`: workload login (RFC 7523 JWT bearer from a trusted
//! issuer, or `private_key_jwt` client credentials) and just-in-time grants
//! by token exchange (RFC 8693 + RFC 8707 `resource` + RFC 9396 details).

use super::client_auth::{self, Client};
use super::delegate;
use super::grant::{self, TT_ACCESS, bind_to_proof, dpop_header, no_store, requested, rule_error};
use crate::app::{App, AppState, now};
use crate::approvals::{self, Asker};
use crate::context_change::{self, Stopped};
use crate::error::OAuthError;
use crate::extract::{OAuthForm, RequestId};
use crate::throttle::Verdict;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Agent, Model, Standing, Task, TaskId, TaskState, cap_grant_ttl};
use mandate_store::Resolved;
use serde_json::json;

pub const GT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The failure throttle in front of the token endpoint (see `throttle`):
/// a client address out of allowance gets 429 `slow_down` before anything
/// is verified or audited; a 4xx answer costs it one unit.
pub async fn throttled(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Behind trusted reverse proxies, the client they name.
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| app.settings.trusted_proxies.client(c.0.ip(), req.headers()));
    let (Some(throttle), Some(ip)) = (&app.throttle, ip) else {
        return next.run(req).await;
    };
    let at = std::time::Instant::now();
    if let Verdict::Refuse {
        first,
        retry_after_secs,
    } = throttle.check(ip, at)
    {
        app.metrics.login(false);
        if first {
            let client = crate::throttle::client_key(ip).to_string();
            tracing::warn!(%client, "token endpoint: client refused after too many failures");
            let ev = NewEvent::new(EventKind::ClientThrottled, "system")
                .decision("deny")
                .reasons(vec!["too many failed token requests".into()])
                .detail(json!({"client": client, "retry_after_secs": retry_after_secs}));
            if let Err(e) = app.store.append_events(vec![ev]).await {
                tracing::error!(error = %e, "could not audit a throttled client");
            }
        }
        let mut resp = OAuthError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "slow_down",
            description: format!(
                "too many failed requests from this address; retry in {retry_after_secs} s"
            ),
            approval: None,
        }
        .into_response();
        if let Ok(v) = http::HeaderValue::from_str(&retry_after_secs.to_string()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        return resp;
    }
    let resp = next.run(req).await;
    if resp.status().is_client_error() {
        throttle.failed(ip, at);
    }
    resp
}

pub async fn token(
    State(app): State<AppState>,
    rid: RequestId,
    headers: http::HeaderMap,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    match form.require("grant_type")? {
        GT_TOKEN_EXCHANGE => exchange(&app, &rid.0, &form, &headers).await,
        GT_JWT_BEARER => federated_login(&app, &rid.0, &form).await,
        "client_credentials" => key_login(&app, &rid.0, &form, &headers).await,
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!(
                "grant_type `{}` is not supported",
                other.chars().take(80).collect::<String>()
            ),
        )),
    }
}

/// Record a refused login durably, then answer with `err`.
async fn refuse_login(
    app: &App,
    rid: &str,
    method: &str,
    agent: Option<&str>,
    err: OAuthError,
) -> OAuthError {
    let mut ev = NewEvent::new(EventKind::LoginFailed, "anonymous")
        .request_id(Some(rid.to_owned()))
        .decision("deny")
        .reasons(vec![err.description.clone()])
        .detail(json!({"method": method}));
    ev.agent = agent.map(str::to_owned);
    app.metrics.login(false);
    if let Err(e) = app.store.append_events(vec![ev]).await {
        return OAuthError::server(e);
    }
    err
}

/// A session for `agent`, declaring the model the login names (`model`,
/// `model_version`) or else the one on the agent's record.
async fn issue_session(
    app: &App,
    rid: &str,
    form: &OAuthForm,
    agent: &Agent,
    method: &str,
    assertion: Option<(String, i64)>,
) -> Result<Response, OAuthError> {
    let model = match Model::declared(form.get("model"), form.get("model_version")) {
        Ok(m) => m.or_else(|| agent.model.clone()),
        Err(e) => {
            let err = OAuthError::invalid_request(e.to_string());
            return Err(refuse_login(app, rid, method, Some(agent.name.as_str()), err).await);
        }
    };
    let t = now();
    let (token, claims) = app
        .mint_session(agent, method, model.as_ref(), t)
        .map_err(OAuthError::server)?;
    let ev = NewEvent::new(EventKind::LoginSucceeded, format!("agent:{}", agent.name))
        .agent(&agent.name)
        .jti(&claims.jti)
        .request_id(Some(rid.to_owned()))
        .decision("allow")
        .detail(json!({"method": method, "exp": claims.exp, "model": model}));
    match app.store.record_login(assertion, ev).await {
        Ok(()) => {}
        Err(mandate_store::StoreError::Replay) => {
            let err = OAuthError::invalid_grant("client assertion `jti` was already used (replay)");
            return Err(refuse_login(app, rid, method, Some(agent.name.as_str()), err).await);
        }
        Err(e) => return Err(OAuthError::server(e)),
    }
    app.metrics.login(true);
    Ok(no_store(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": claims.exp - t,
        "issued_token_type": TT_JWT,
    })))
}

/// RFC 7523 §2.1: a workload JWT from a trusted issuer, mapped to an agent by binding.
async fn federated_login(app: &App, rid: &str, form: &OAuthForm) -> Result<Response, OAuthError> {
    const METHOD: &str = "jwt_bearer";
    let assertion = form.require("assertion")?;
    let id = match app.federation.verify(assertion, now()).await {
        Ok(id) => id,
        Err(e) => {
            let err = OAuthError::invalid_grant(format!("workload token rejected: {e}"));
            return Err(refuse_login(app, rid, METHOD, None, err).await);
        }
    };
    let bindings = app.store.bindings_for(&id.issuer, &id.subject).await?;
    let matching: Vec<_> = bindings
        .into_iter()
        .filter(|b| {
            b.claims
                .iter()
                .all(|(k, v)| id.claims.get(k).and_then(|c| c.as_str()) == Some(v.as_str()))
        })
        .collect();
    let agent_name = match matching.as_slice() {
        [one] => one.agent.clone(),
        [] => {
            let err = OAuthError::invalid_grant("no agent is bound to this workload identity");
            return Err(refuse_login(app, rid, METHOD, None, err).await);
        }
        _ => {
            let err = OAuthError::invalid_grant(
                "workload identity matches several agents; make the bindings specific",
            );
            return Err(refuse_login(app, rid, METHOD, None, err).await);
        }
    };
    let agent = app
        .directory
        .agent(&agent_name)
        .filter(|a| a.is_active())
        .ok_or_else(|| OAuthError::invalid_grant("the bound agent is revoked"));
    match agent {
        Ok(agent) => issue_session(app, rid, form, &agent, METHOD, None).await,
        Err(err) => Err(refuse_login(app, rid, METHOD, Some(agent_name.as_str()), err).await),
    }
}

/// RFC 7523 §2.2 `private_key_jwt` with the key enrolled by join token:
/// the `client_credentials` grant needs exactly that client credential.
async fn key_login(
    app: &App,
    rid: &str,
    form: &OAuthForm,
    headers: &http::HeaderMap,
) -> Result<Response, OAuthError> {
    const METHOD: &str = "private_key_jwt";
    let endpoint = format!("{}/oauth/token", app.issuer);
    let refused = match client_auth::authenticate(app, form, headers, &endpoint).await {
        Ok(Client::Key(a)) => {
            return issue_session(
                app,
                rid,
                form,
                &a.agent,
                METHOD,
                Some((a.jti.clone(), a.replay_until)),
            )
            .await;
        }
        Ok(_) => client_auth::AuthFailure {
            agent: None,
            error: OAuthError::new(
                "invalid_client",
                "client_credentials needs a client assertion (private_key_jwt): client_assertion_type and client_assertion",
            ),
        },
        Err(r) => r,
    };
    Err(refuse_login(app, rid, METHOD, refused.agent.as_deref(), refused.error).await)
}

/// A refused exchange: audited, then the RFC error.
async fn refuse_grant(
    app: &App,
    rid: &str,
    agent: &Agent,
    task: Option<&str>,
    err: OAuthError,
) -> OAuthError {
    let mut ev = NewEvent::new(EventKind::GrantRefused, format!("agent:{}", agent.name))
        .agent(&agent.name)
        .request_id(Some(rid.to_owned()))
        .decision("deny")
        .reasons(vec![format!("{}: {}", err.error, err.description)]);
    ev.task = task.map(str::to_owned);
    app.metrics.grant(false);
    if let Err(e) = app.store.append_events(vec![ev]).await {
        return OAuthError::server(e);
    }
    err
}

/// RFC 8693 exchange: session + task + resource → one tool's access token.
/// With a `DPoP` proof the token is sender-constrained (RFC 9449).
async fn exchange(
    app: &App,
    rid: &str,
    form: &OAuthForm,
    headers: &http::HeaderMap,
) -> Result<Response, OAuthError> {
    let subject = form.require("subject_token")?;
    let stt = form.require("subject_token_type")?;
    if stt != TT_JWT && stt != TT_ACCESS {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {TT_JWT}"
        )));
    }
    if let Some(rtt) = form.get("requested_token_type")
        && rtt != TT_ACCESS
        && rtt != TT_JWT
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {TT_ACCESS}"
        )));
    }
    if form.get("actor_token").is_some() {
        return delegate::by_exchange(app, rid, form, headers).await;
    }
    // A client credential, when presented, must verify and be the
    // session's own agent; the session alone suffices without one.
    let endpoint = format!("{}/oauth/token", app.issuer);
    let client = client_auth::authenticate(app, form, headers, &endpoint)
        .await
        .map_err(|r| r.error)?;
    let t = now();
    let (session, agent) = app
        .verify_session(subject, t)
        .map_err(|e| OAuthError::invalid_grant(format!("subject_token: {e}")))?;
    client_auth::require_agent(app, &client, form, &agent, "the subject token's agent")?;
    let task_id = TaskId::parse(form.require("task_id")?)
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let requested_ttl = form
        .get("requested_ttl")
        .map(|s| {
            s.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                OAuthError::invalid_request("requested_ttl: must be a positive number of seconds")
            })
        })
        .transpose()?;

    let task = app.directory.task(app.store.as_ref(), &task_id).await?;
    let Some(task) = task.filter(|t| t.agent == agent.name) else {
        let err = OAuthError::invalid_grant("task_id: no such task for this agent");
        return Err(refuse_grant(app, rid, &agent, None, err).await);
    };
    // The session may declare another model than the task started under.
    let task =
        match context_change::on_model(app, &agent, task, session.model().as_ref(), rid).await {
            Ok(t) => t,
            Err(Stopped(why)) => {
                return Err(OAuthError::invalid_grant(format!("task_id: {why}")));
            }
        };
    if let Some(err) = held_task(app, &task).await? {
        return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await);
    }
    let resource = form.require("resource")?;
    let Some(tool) = app.directory.tool_by_audience(resource) else {
        let err = OAuthError::new("invalid_target", "resource: no tool has this audience");
        return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await);
    };
    let outcome = (|| {
        let req = requested(form, &tool.name)?;
        let item = task
            .scope
            .narrow(&tool.name, req.actions.as_deref(), req.resources.as_deref())
            .map_err(rule_error)?;
        let ttl = cap_grant_ttl(requested_ttl, tool.max_ttl_secs, &task, t).map_err(rule_error)?;
        Ok::<_, OAuthError>((item, ttl))
    })();
    let (item, ttl) = match outcome {
        Ok(x) => x,
        Err(err) => return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await),
    };
    let cnf = match dpop_header(headers)
        .and_then(|h| h.map(|p| bind_to_proof(app, p, t)).transpose())
    {
        Ok(c) => c,
        Err(err) => return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await),
    };

    // A grant policy holds for a person waits for an approval of exactly it.
    let need = match grant::grant_hold(app, &agent, &task, &tool, &item, t) {
        Ok(n) => n,
        Err(err) => return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await),
    };
    if let Some(need) = need {
        let actor = format!("agent:{}", agent.name);
        let asker = Asker {
            agent: &agent,
            task: &task,
            actor: &actor,
            request_id: Some(rid.to_owned()),
        };
        let held = grant::held_grant(&tool, &item);
        let err = match approvals::resolve(app, &asker, held, &need, t).await? {
            Resolved::Allowed(_) => None,
            Resolved::Waiting { approval, .. } => Some(OAuthError::pending(&approval)),
            Resolved::Denied(approval) => Some(OAuthError::denied(&approval)),
        };
        if let Some(err) = err {
            return Err(refuse_grant(app, rid, &agent, Some(task.id.as_str()), err).await);
        }
    }
    let minted = grant::Minted {
        agent: &agent,
        task: &task,
        tool: &tool,
        item,
        ttl,
        cnf,
        session: &session.jti,
    };
    grant::mint(app, rid, minted, t).await
}

/// A task whose start a person has yet to decide, or refused: RFC 8628's
/// `authorization_pending` (with the approval to wait on) and
/// `access_denied`. `None` for any other task.
async fn held_task(app: &App, task: &Task) -> Result<Option<OAuthError>, OAuthError> {
    let Some(id) = &task.approval else {
        return Ok(None);
    };
    if !matches!(task.state, TaskState::PendingApproval | TaskState::Revoked) {
        return Ok(None);
    }
    let Some(a) = app.store.get_approval(id).await? else {
        return Ok(None);
    };
    Ok(match a.standing(now()) {
        Standing::Waits => Some(OAuthError::pending(&a)),
        Standing::Refuses => Some(OAuthError::denied(&a)),
        Standing::Lapsed if task.state == TaskState::PendingApproval => {
            Some(OAuthError::invalid_grant(format!(
                "task_id: nobody decided approval {} before it expired; ask for a new task",
                a.id
            )))
        }
        _ => None,
    })
}
