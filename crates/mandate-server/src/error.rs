//! The two error shapes the server speaks: `{"error":{"code","message"}}` for
//! the Mandate API and RFC 6749 `{"error","error_description"}` for `/oauth/*`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::{Invalid, RuleViolation};
use mandate_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub reasons: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reasons: Vec::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 403 `policy_denied`, with the policy's reasons.
    pub fn policy_denied(message: impl Into<String>, reasons: Vec<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "policy_denied", message);
        e.reasons = reasons;
        e
    }
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} `{id}` not found"),
        )
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see server log",
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<RuleViolation> for ApiError {
    fn from(e: RuleViolation) -> Self {
        let (status, code) = match &e {
            RuleViolation::TaskNotActive { .. } | RuleViolation::IllegalTransition { .. } => {
                (StatusCode::CONFLICT, "invalid_state")
            }
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "scope_violation"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} `{id}` not found"),
            ),
            StoreError::Conflict { what, id } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} `{id}` already exists"),
            ),
            StoreError::Rule(r) => r.into(),
            StoreError::Approval(a) => a.into(),
            StoreError::Invalid(e) => e.into(),
            StoreError::Refused(why) => ApiError::new(StatusCode::CONFLICT, "refused", why),
            StoreError::JoinTokenInvalid => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_join_token",
                StoreError::JoinTokenInvalid.to_string(),
            ),
            other => ApiError::internal(other),
        }
    }
}

impl From<mandate_core::ApprovalError> for ApiError {
    fn from(e: mandate_core::ApprovalError) -> Self {
        use mandate_core::ApprovalError as E;
        let message = e.to_string();
        match e {
            E::Decided { .. } => ApiError::new(StatusCode::CONFLICT, "approval_decided", message),
            E::Expired { .. } => ApiError::new(StatusCode::CONFLICT, "approval_expired", message),
            E::Conflict(_) => ApiError::new(StatusCode::FORBIDDEN, "approver_conflict", message),
            E::Invalid(_) => ApiError::bad_request(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.reasons.is_empty() {
            error["reasons"] = json!(self.reasons);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// RFC 6749 §5.2 error (also RFC 8693 / 8707 / 9396 codes).
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// The approval request an `authorization_pending` or `access_denied`
    /// answer is about.
    pub approval: Option<mandate_core::ApprovalId>,
}

/// Seconds a client waiting on an approval should leave between polls of
/// the token endpoint (RFC 8628 §3.5 `interval`); it can instead wait on
/// `GET /v1/approvals/{id}?wait=`.
pub const APPROVAL_POLL_INTERVAL_SECS: u32 = 5;

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            // RFC 6750 §3.1: authenticated, but without the right for this.
            "insufficient_scope" => StatusCode::FORBIDDEN,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
            approval: None,
        }
    }
    /// RFC 8628 §3.5 `authorization_pending`: a person has not decided yet.
    pub fn pending(a: &mandate_core::Approval) -> Self {
        OAuthError {
            approval: Some(a.id.clone()),
            ..Self::new(
                "authorization_pending",
                format!(
                    "{} waits for a person's approval ({}); wait on GET /v1/approvals/{} or retry after {APPROVAL_POLL_INTERVAL_SECS} s",
                    a.held, a.id, a.id
                ),
            )
        }
    }
    /// RFC 8628 §3.5 `access_denied`: a person said no; final.
    pub fn denied(a: &mandate_core::Approval) -> Self {
        OAuthError {
            approval: Some(a.id.clone()),
            ..Self::new(
                "access_denied",
                format!("a person denied {} (approval {})", a.held, a.id),
            )
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    pub fn server(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error on an OAuth endpoint");
        Self::new("server_error", "internal error; see server log")
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        OAuthError::server(e)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.error, "error_description": self.description});
        if let Some(id) = &self.approval {
            body["approval_id"] = json!(id);
            if self.error == "authorization_pending" {
                body["interval"] = json!(APPROVAL_POLL_INTERVAL_SECS);
            }
        }
        let mut resp = (self.status, Json(body)).into_response();
        // RFC 6749 §5.1: token responses must not be cached; errors neither.
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        resp
    }
}
