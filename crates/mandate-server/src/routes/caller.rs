//! Who is calling: the `Authorization: Bearer` credential (an admin token or
//! an agent's identity session) resolved into a [`Caller`], and the rights
//! checks handlers ask of it.

use crate::app::{App, AppState, now};
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mandate_core::{AdminRight, AdminToken, Agent};
use std::sync::Arc;

/// Who is calling: an admin token or an agent's identity session.
pub enum Caller {
    Admin(Arc<AdminToken>),
    Agent {
        agent: Arc<Agent>,
        /// The model its session declares (at login, or on its record).
        model: Option<mandate_core::Model>,
    },
}

impl Caller {
    /// The calling agent, for what only a task's own agent may do (fetch a
    /// revealed secret, get a dynamic credential): an admin token is
    /// refused before anything in the request is read.
    pub fn task_agent(&self, doing: &str) -> Result<&Arc<Agent>, ApiError> {
        match self {
            Caller::Agent { agent, .. } => Ok(agent),
            Caller::Admin(_) => Err(ApiError::forbidden(format!(
                "only the task's own agent (with its session) may {doing}"
            ))),
        }
    }
    /// The audit `actor` string.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin(t) => format!("admin:{}", t.id),
            Caller::Agent { agent, .. } => format!("agent:{}", agent.name),
        }
    }

    pub fn require(&self, right: AdminRight) -> Result<&AdminToken, ApiError> {
        match self {
            Caller::Admin(t) if t.allows(right, now()) => Ok(t.as_ref()),
            Caller::Admin(_) => Err(ApiError::forbidden(format!(
                "this admin token lacks the `{}` right",
                right.as_str()
            ))),
            Caller::Agent { .. } => Err(ApiError::forbidden("this endpoint needs an admin token")),
        }
    }

    /// Like [`Caller::require`], satisfied by any one of `rights`.
    pub fn require_any(&self, rights: &[AdminRight]) -> Result<&AdminToken, ApiError> {
        match self {
            Caller::Admin(t) if rights.iter().any(|r| t.allows(*r, now())) => Ok(t.as_ref()),
            Caller::Admin(_) => Err(ApiError::forbidden(format!(
                "this admin token lacks the right for this: one of {}",
                rights
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Caller::Agent { .. } => Err(ApiError::forbidden("this endpoint needs an admin token")),
        }
    }
}

pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized(
                "missing `Authorization: Bearer` with an admin token or agent session",
            )
        })?;
        Caller::from_bearer(app, token).await
    }
}

impl Caller {
    pub async fn from_bearer(app: &App, token: &str) -> Result<Self, ApiError> {
        if token.starts_with("mdt_") {
            let hash = mandate_token::sha256_hex(token.as_bytes());
            let t = match app.directory.admin_token(&hash) {
                Ok(t) => t,
                Err(generation) => {
                    let t = app
                        .store
                        .admin_token_by_hash(&hash)
                        .await?
                        .ok_or_else(|| ApiError::unauthorized("admin token is not valid"))?;
                    if t.revoked_at.is_some() {
                        return Err(ApiError::unauthorized("admin token has been revoked"));
                    }
                    let t = Arc::new(t);
                    app.directory.put_admin_token(t.clone(), generation);
                    t
                }
            };
            if t.expires_at.is_some_and(|e| e <= now()) {
                return Err(ApiError::unauthorized("admin token has expired"));
            }
            return Ok(Caller::Admin(t));
        }
        let (session, agent) = app
            .verify_session(token, now())
            .map_err(|e| ApiError::unauthorized(format!("session is not valid: {e}")))?;
        Ok(Caller::Agent {
            agent,
            model: session.model(),
        })
    }
}

/// `agent`'s own task `id`; someone else's is not found.
pub async fn own_task(
    app: &App,
    agent: &Agent,
    id: &str,
) -> Result<Arc<mandate_core::Task>, ApiError> {
    let id = mandate_core::TaskId::parse(id)?;
    app.directory
        .task(app.store.as_ref(), &id)
        .await?
        .filter(|t| t.agent == agent.name)
        .ok_or_else(|| ApiError::not_found("task", &id))
}
