//! `GET /v1/inventory`: every stored secret, live grant and agent, per
//! class and owner, with what the audit log says about their use (right
//! `audit`). Never a secret's value.

use super::caller::Caller;
use crate::app::AppState;
use crate::error::ApiError;
use crate::estate;
use axum::Json;
use axum::extract::{Query, State};
use mandate_core::{AdminRight, OwnerName, SecretClass};
use mandate_governance::{Filter, Inventory};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryQuery {
    class: Option<String>,
    owner: Option<String>,
    /// Days of audit log to count use over (1–365; default `posture.period_days`).
    days: Option<u32>,
}

/// `days` as asked, or the configured period.
pub(super) fn period(app: &crate::app::App, days: Option<u32>) -> Result<u32, ApiError> {
    match days {
        None => Ok(app.settings.raw.posture.period_days),
        Some(d) if (1..=365).contains(&d) => Ok(d),
        Some(_) => Err(ApiError::bad_request("days: must be between 1 and 365")),
    }
}

pub async fn inventory(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<InventoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Inventory>, ApiError> {
    caller.require(AdminRight::Audit)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let filter = Filter {
        class: q
            .class
            .as_deref()
            .map(str::parse::<SecretClass>)
            .transpose()?,
        owner: q.owner.as_deref().map(OwnerName::parse).transpose()?,
    };
    let days = period(&app, q.days)?;
    let facts = estate::facts(&app, days).await?;
    Ok(Json(Inventory::of(&facts).filtered(&filter)))
}
