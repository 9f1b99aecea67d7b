//! `GET /v1/anomalies`: the detector's findings (`anomaly.detected`
//! events), newest first, for an operator (right `audit` or `tasks`).

use super::caller::Caller;
use crate::app::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use mandate_anomaly::AnomalyRule;
use mandate_audit::Event;
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
