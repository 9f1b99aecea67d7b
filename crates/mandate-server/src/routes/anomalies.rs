//! `GET /v1/anomalies`: the detector's findings (`anomaly.detected`
//! events), newest first, for an operator (right `audit` or `tasks`), and
//! their acknowledgement (`anomaly.acknowledged`), which takes them off the
//! posture report.

use super::caller::Caller;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, RequestId};
use axum::Json;
use axum::extract::{Query, State};
use mandate_anomaly::AnomalyRule;
use mandate_audit::{Event, EventKind, NewEvent};
use mandate_core::{AdminRight, TaskId};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesQuery {
    task: Option<String>,
    rule: Option<String>,
    /// Only findings older than this `seq` (the previous page's `next`).
    before: Option<u64>,
    limit: Option<usize>,
}

/// One finding as listed: the event's facts and its `detail` unpacked.
fn shown(e: &Event) -> Value {
    let d: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
    json!({
        "seq": e.seq, "time_ms": e.time_ms, "rule": d["rule"], "task": e.task,
        "agent": e.agent, "tool": e.tool, "action": d["action"], "outcome": d["outcome"],
        "environment": d["environment"], "evidence": d["evidence"],
    })
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<AnomaliesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[AdminRight::Audit, AdminRight::Tasks])?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let task = q.task.as_deref().map(TaskId::parse).transpose()?;
    let rule = q
        .rule
        .as_deref()
        .map(str::parse::<AnomalyRule>)
        .transpose()?;
    // The rule is in each event's detail: read pages until `limit` match.
    let mut out = Vec::new();
    let mut before = q.before;
    let mut next = None;
    'pages: loop {
        let page = app.store.anomalies(task.clone(), before, 1000).await?;
        let full = page.len() == 1000;
        for e in &page {
            before = Some(e.seq);
            let v = shown(e);
            if rule.is_none_or(|r| v["rule"] == r.as_str()) {
                out.push(v);
                if out.len() == limit {
                    next = before;
                    break 'pages;
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(Json(json!({"anomalies": out, "next": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// What the operator found (kept in the audit event).
    #[serde(default)]
    note: String,
}

/// `POST /v1/anomalies/{seq}/acknowledge`: an operator saw the finding
/// (right `audit` or `tasks`). Once: a second acknowledgement writes
/// nothing and says so.
pub async fn acknowledge(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<ApiPath<u64>, ApiError>,
    body: Result<ApiJson<Acknowledgement>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[AdminRight::Audit, AdminRight::Tasks])?;
    let ApiPath(seq) = path?;
    let ApiJson(Acknowledgement { note }) = body?;
    if note.len() > 1024 {
        return Err(ApiError::bad_request("note: must be at most 1024 bytes"));
    }
    let event = app
        .store
        .events_since(seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.seq == seq && e.kind == EventKind::AnomalyDetected)
        .ok_or_else(|| ApiError::not_found("anomaly", seq))?;
    if app.store.acknowledged_anomalies().await?.contains(&seq) {
        return Ok(Json(
            json!({"seq": seq, "acknowledged": true, "already": true}),
        ));
    }
    let mut ev = NewEvent::new(EventKind::AnomalyAcknowledged, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"anomaly": seq, "note": note}));
    ev.task = event.task.clone();
    ev.agent = event.agent.clone();
    app.store.append_events(vec![ev]).await?;
    Ok(Json(
        json!({"seq": seq, "acknowledged": true, "already": false}),
    ))
}
