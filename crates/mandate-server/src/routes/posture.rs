//! `GET /v1/posture`: the posture report, every finding with its evidence,
//! fix and framework mapping (right `audit`). The CLI renders it as
//! Markdown, HTML or SARIF.

use super::caller::Caller;
use super::inventory::period;
use crate::app::AppState;
use crate::error::ApiError;
use crate::estate;
use axum::Json;
use axum::extract::{Query, State};
use mandate_core::AdminRight;
use mandate_governance::Report;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureQuery {
    /// Days of audit log to count use over (1–365; default `posture.period_days`).
    days: Option<u32>,
}

pub async fn posture(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<PostureQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    caller.require(AdminRight::Audit)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let days = period(&app, q.days)?;
    let facts = estate::facts(&app, days).await?;
    Ok(Json(Report::of(&facts)))
}
