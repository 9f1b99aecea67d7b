//! The dynamic-credential engine of each tool that has one, built from the
//! tool's engine spec and its sealed admin credential, and rebuilt when
//! that credential is rotated.

use crate::error::ApiError;
use crate::keeper::Keeper;
use axum::http::StatusCode;
use mandate_core::{EngineSpec, Tool, ToolName};
use mandate_engine::Engine;
use mandate_engine::http::HttpEngine;
use mandate_engine::postgres::PostgresEngine;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An engine, and the version of the admin credential it was built with.
type Built = (u32, Arc<dyn Engine>);

#[derive(Default)]
pub struct Engines(Mutex<HashMap<ToolName, Built>>);

fn no_engine(tool: &Tool) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_engine",
        format!(
            "tool: `{}` mints no credentials (it has no engine)",
            tool.name
        ),
    )
}

impl Engines {
    /// The engine for `tool`, with its current admin credential.
    pub async fn of(
        &self,
        store: &dyn mandate_store::Store,
        keeper: &Keeper,
        tool: &Tool,
    ) -> Result<Arc<dyn Engine>, ApiError> {
        let spec = tool.engine.as_ref().ok_or_else(|| no_engine(tool))?;
        let (secret, sealed) = store.secret_for_tool(&tool.name).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                format!(
                    "tool `{}` has no admin credential: store one with `mandate secret put … --tool {}`",
                    tool.name, tool.name
                ),
            )
        })?;
        if let Some((v, e)) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tool.name)
            && *v == secret.version
        {
            return Ok(e.clone());
        }
        let value = keeper
            .open_value(&secret.name, secret.version, &sealed)
            .map_err(ApiError::internal)?;
        let credential = SecretString::from(
            std::str::from_utf8(&value)
                .map_err(|_| ApiError::internal("the engine's credential is not UTF-8"))?,
        );
        let engine: Arc<dyn Engine> = match spec {
            EngineSpec::Postgres { roles, ca_pem } => Arc::new(
                PostgresEngine::new(&credential, roles, ca_pem.as_deref()).map_err(engine_error)?,
            ),
            EngineSpec::Http {
                issue_url,
                revoke_url,
                status_url,
                roles,
            } => Arc::new(
                HttpEngine::new(credential, issue_url, revoke_url, status_url, roles)
                    .map_err(engine_error)?,
            ),
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tool.name.clone(), (secret.version, engine.clone()));
        Ok(engine)
    }
}

/// An engine's failure as the API answers it: its source down is 503, a
/// role the tool does not define 404, anything the source refused 502.
pub fn engine_error(e: mandate_engine::EngineError) -> ApiError {
    use mandate_engine::EngineError as E;
    let (status, code) = match &e {
        E::Unreachable(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable"),
        E::UnknownRole(_) => (StatusCode::NOT_FOUND, "unknown_role"),
        E::Refused(_) | E::Template(_) => (StatusCode::BAD_GATEWAY, "engine_refused"),
        E::Internal(_) => return ApiError::internal(e.to_string()),
    };
    ApiError::new(status, code, e.to_string())
}
