//! Approval requests over HTTP: list and show them (waiting on one with
//! `?wait=`), approve or deny one, and the proxies' lookup for a request
//! policy held (`/v1/approvals/resolve`).

use super::caller::Caller;
use crate::app::{AppState, now};
use crate::approvals::{self, Asker};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath as Path, RequestId};
use axum::Json;
use axum::extract::{Query, State};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    AdminRight, Approval, ApprovalId, ApprovalState, Approver, Extent, TaskId, Verdict,
};
use mandate_policy::ApprovalNeed;
use mandate_store::{ApprovalFilter, Resolved};
use mandate_wire::{ApprovalAnswer, ApprovalAsk, ApprovalOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Rights that may read approval requests.
const READ_RIGHTS: [AdminRight; 3] = [AdminRight::Approve, AdminRight::Audit, AdminRight::Tasks];
/// The longest a caller may wait on one request in a single call.
const MAX_WAIT_SECS: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    task: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&READ_RIGHTS)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let filter = ApprovalFilter {
        state: q
            .state
            .as_deref()
            .map(str::parse::<ApprovalState>)
            .transpose()?,
        task: q.task.as_deref().map(TaskId::parse).transpose()?,
        now: now(),
        limit,
    };
    let list = app.store.list_approvals(filter).await?;
    let t = now();
    Ok(Json(
        json!({"approvals": list.iter().map(|a| shown(a, t)).collect::<Vec<_>>()}),
    ))
}

/// An approval as the API shows it: its state as of `now`.
fn shown(a: &Approval, t: i64) -> Value {
    let mut v = json!(a);
    v["state"] = json!(a.state_at(t));
    v
}

fn parse_id(path: Result<Path<String>, ApiError>) -> Result<ApprovalId, ApiError> {
    let Path(id) = path?;
    Ok(ApprovalId::parse(&id)?)
}

async fn visible(app: &AppState, caller: &Caller, id: &ApprovalId) -> Result<Approval, ApiError> {
    let a = app.store.get_approval(id).await?;
    match (caller, a) {
        (_, None) => Err(ApiError::not_found("approval", id)),
        (Caller::Agent { agent, .. }, Some(a)) if a.agent == agent.name => Ok(a),
        (Caller::Agent { .. }, Some(_)) => Err(ApiError::not_found("approval", id)),
        (Caller::Admin(_), Some(a)) => Ok(a),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Wait up to this many seconds for a pending request to be decided.
    wait: Option<u64>,
}

/// One request; with `?wait=N` (at most 60) the answer comes as soon as
/// a person decides a pending one, or after N seconds as it stands.
pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
    q: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    if let Caller::Admin(_) = &caller {
        caller.require_any(&READ_RIGHTS)?;
    }
    let id = parse_id(path)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait: must be at most {MAX_WAIT_SECS} seconds"
        )));
    }
    // Subscribe before reading, so a decision in between is not missed.
    let mut decided = app.decided.subscribe();
    let mut a = visible(&app, &caller, &id).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(wait);
    while a.state_at(now()) == ApprovalState::Pending {
        let woke = tokio::time::timeout_at(until, async {
            loop {
                match decided.recv().await {
                    Ok(d) if d == id => return,
                    Ok(_) => {}
                    // Missed some: read it again to be sure.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        })
        .await;
        if woke.is_err() {
            break;
        }
        a = visible(&app, &caller, &id).await?;
    }
    Ok(Json(shown(&a, now())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// A time-box: the approval stands for this many seconds (at most
    /// `approval_max_secs`). Without it, it covers the next use only.
    for_secs: Option<u32>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deny {
    note: Option<String>,
}

pub async fn approve(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<Approve>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Approve)?;
    let id = parse_id(path)?;
    let ApiJson(body) = body?;
    let verdict = Verdict::Approve {
        extent: match body.for_secs {
            Some(_) => Extent::Timebox,
            None => Extent::Once,
        },
        for_secs: body.for_secs,
    };
    decide(app, caller, rid, id, verdict, body.note).await
}

pub async fn deny(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
    body: Result<ApiJson<Deny>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Approve)?;
    let id = parse_id(path)?;
    let ApiJson(body) = body?;
    decide(app, caller, rid, id, Verdict::Deny, body.note).await
}

async fn decide(
    app: AppState,
    caller: Caller,
    rid: RequestId,
    id: ApprovalId,
    verdict: Verdict,
    note: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let Caller::Admin(token) = &caller else {
        return Err(ApiError::forbidden("this endpoint needs an admin token"));
    };
    let a = app
        .store
        .get_approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval", &id))?;
    // A token issued to an agent approves as that agent (and its owner).
    let approver = Approver {
        actor: caller.actor(),
        agent: match &token.agent {
            None => None,
            Some(name) => {
                let agent = app.directory.agent(name).ok_or_else(|| {
                    ApiError::forbidden(format!(
                        "this admin token was issued to agent `{name}`, which no longer exists"
                    ))
                })?;
                Some((agent.name.clone(), agent.owner.clone()))
            }
        },
    };
    let (kind, word) = match verdict {
        Verdict::Approve { .. } => (EventKind::ApprovalGranted, "granted"),
        Verdict::Deny => (EventKind::ApprovalDenied, "denied"),
    };
    let mut ev = NewEvent::new(kind, caller.actor())
        .agent(&a.agent)
        .task(&a.task)
        .decision(word)
        .request_id(Some(rid.0));
    ev.tool = a.held.tool().map(|t| t.to_string());
    let t = now();
    let done = app
        .store
        .decide_approval(
            &id,
            verdict,
            approver,
            note,
            t,
            app.settings.raw.approval_max_secs,
            ev,
        )
        .await?;
    app.metrics.approval(word);
    match done.moved {
        Some(moved) => {
            app.moved(moved);
        }
        None => {
            app.directory.put_task(done.task);
        }
    }
    let _ = app.decided.send(id);
    Ok(Json(shown(&done.approval, t)))
}

/// A proxy's lookup for a request policy held: what stands for it (a
/// `once` approval that lets it through is spent here), opening the
/// request if nothing does.
pub async fn resolve(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<ApprovalAsk>, ApiError>,
) -> Result<Json<ApprovalAnswer>, ApiError> {
    let proxy = caller.require(AdminRight::Proxy)?;
    let ApiJson(ask) = body?;
    if ask.held.tool().is_none() {
        return Err(ApiError::bad_request(
            "held: a proxy asks about a request or grant, not a task's start",
        ));
    }
    let task = app
        .directory
        .task(app.store.as_ref(), &ask.task)
        .await?
        .filter(|t| t.agent == ask.agent)
        .ok_or_else(|| ApiError::not_found("task", &ask.task))?;
    if !task.is_live(now()) {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            "invalid_state",
            format!("task `{}` is {}", task.id, task.state_at(now())),
        ));
    }
    let agent = app
        .directory
        .agent(&ask.agent)
        .ok_or_else(|| ApiError::not_found("agent", &ask.agent))?;
    let actor = format!("proxy:{}", proxy.id);
    let asker = Asker {
        agent: &agent,
        task: &task,
        actor: &actor,
        request_id: ask.request_id.clone(),
    };
    let need = ApprovalNeed {
        reasons: ask.reasons,
        policy_ids: ask.policy_ids,
    };
    let resolved = approvals::resolve(&app, &asker, ask.held, &need, now()).await?;
    Ok(Json(match resolved {
        Resolved::Allowed(approval) => ApprovalAnswer {
            outcome: ApprovalOutcome::Allowed,
            approval,
        },
        Resolved::Waiting { approval, .. } => ApprovalAnswer {
            outcome: ApprovalOutcome::Waiting,
            approval,
        },
        Resolved::Denied(approval) => ApprovalAnswer {
            outcome: ApprovalOutcome::Denied,
            approval,
        },
    }))
}
