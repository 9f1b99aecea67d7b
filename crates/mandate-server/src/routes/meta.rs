//! Discovery, keys, health, audit reads and operator actions.

use super::caller::Caller;
use crate::app::{AppState, ReloadError, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::RequestId;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, RevocationKind};
use mandate_token::TokenError;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.store.count_admin_tokens().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus metrics: counts and latencies by route template and outcome
/// (no ids, no tokens in any label). A scraper needs an admin token with
/// the `metrics` right unless `unauthenticated_metrics_access` is set.
pub async fn metrics(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    if !app.settings.raw.unauthenticated_metrics_access {
        caller?.require(AdminRight::Metrics)?;
    }
    Ok((
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    ))
}

/// RFC 8414 authorization server metadata.
pub async fn metadata(State(app): State<AppState>) -> Json<Value> {
    let i = &app.issuer;
    Json(json!({
        "issuer": i,
        "token_endpoint": format!("{i}/oauth/token"),
        "jwks_uri": format!("{i}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{i}/oauth/introspect"),
        "revocation_endpoint": format!("{i}/oauth/revoke"),
        "grant_types_supported": [
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "client_credentials"
        ],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": mandate_token::ACCEPTED_ALG_NAMES,
        // Registered method names only (RFC 8414 §2). Operators and
        // gateways use their admin bearer token, which is no client
        // authentication method: documented in the OpenAPI description.
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": mandate_token::ACCEPTED_ALG_NAMES,
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_signing_alg_values_supported": mandate_token::ACCEPTED_ALG_NAMES,
        "authorization_details_types_supported": [mandate_token::claims::DETAIL_TYPE],
        "dpop_signing_alg_values_supported": mandate_token::ACCEPTED_ALG_NAMES,
        "response_types_supported": [],
        "scopes_supported": [],
        "mandate_authorize_endpoint": format!("{i}/v1/authorize"),
        "mandate_revocation_feed": format!("{i}/v1/revocations"),
    }))
}

pub async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(http::header::CACHE_CONTROL, "public, max-age=60")],
        Json(json!(app.keys.jwks(now()))),
    )
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

pub async fn audit_events(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Audit)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 10000"));
    }
    let events = app.store.events_since(q.since, limit).await?;
    let next = events.last().map(|e| e.seq).unwrap_or(q.since);
    Ok(Json(json!({"events": events, "next": next})))
}

/// The chain's head signed by the current signing key (a JWS of `typ`
/// `mandate-audit-checkpoint+jwt`): kept outside the broker, it later
/// shows whether the log still holds that record unchanged (`mandate
/// audit verify --checkpoint`), and proves the broker said so.
pub async fn audit_checkpoint(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Audit)?;
    let (_, signed) = app.signed_head().await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "empty_log",
            "the audit log has no record to checkpoint yet",
        )
    })?;
    let c = signed.claims;
    Ok(Json(json!({
        "seq": c.seq, "hash": c.hash, "iat": c.iat, "kid": signed.kid,
        "checkpoint": signed.jws,
    })))
}

pub async fn rotate_keys(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Root)?;
    let old = app.keys.current().kid.clone();
    let key = app
        .keys
        .new_key(app.settings.signing_alg)
        .map_err(ApiError::internal)?;
    // Audited before the key signs anything.
    let ev = NewEvent::new(EventKind::KeyRotated, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"new_kid": key.kid, "old_kid": old, "alg": key.alg.as_str()}));
    if let Err(e) = app.store.append_events(vec![ev]).await {
        app.keys.discard(&key);
        return Err(e.into());
    }
    app.keys
        .install(key.clone(), app.max_token_ttl(), now())
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"kid": key.kid, "alg": key.alg.as_str(), "previous_kid": old}),
    ))
}

/// Withdraw a retired signing key at once (it leaked): out of the JWKS,
/// private key deleted, and a feed entry so verifiers drop it too. Every
/// token it signed stops verifying. The current key cannot be withdrawn:
/// rotate first.
pub async fn revoke_key(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Root)?;
    let Path(kid) = path?;
    if !crate::extract::is_plain_id(&kid, 128) {
        return Err(ApiError::bad_request(
            "kid: must be 1-128 letters, digits, `-` or `_`",
        ));
    }
    let t = now();
    let expires_at = app.keys.withdrawable(&kid, t).map_err(|e| match e {
        TokenError::KeyInUse(_) => ApiError::new(
            http::StatusCode::CONFLICT,
            "key_in_use",
            format!("kid: `{kid}` is the current signing key; run `mandate keys rotate` first, then withdraw it"),
        ),
        _ => ApiError::not_found("published signing key", &kid),
    })?;
    // The feed entry and its event are durable before the key goes, so a
    // crash in between withdraws it again at the next start.
    let ev = NewEvent::new(EventKind::KeyRevoked, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"kid": kid, "tokens_expire_by": expires_at}));
    let r = app
        .store
        .revoke_by_id(RevocationKind::Key, &kid, expires_at, t, ev)
        .await?;
    app.directory.revoke_key(kid.clone(), expires_at);
    app.withdraw_key(&kid).map_err(ApiError::internal)?;
    app.publish([r.clone()]);
    Ok(Json(
        json!({"kid": kid, "revoked_at": r.revoked_at, "feed_seq": r.seq, "tokens_expire_by": expires_at}),
    ))
}

pub async fn policy_info(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Policy)?;
    let p = app.policy();
    Ok(Json(
        json!({"policy_dir": app.policy_dir, "policies": p.policy_count(), "policy_ids": p.policy_ids()}),
    ))
}

pub async fn reload_policy(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Policy)?;
    let n = app
        .reload_policy(&caller.actor())
        .await
        .map_err(|e| match e {
            ReloadError::Invalid(e) => ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                e,
            ),
            ReloadError::Store(e) => e.into(),
        })?;
    Ok(Json(json!({"policies": n})))
}
