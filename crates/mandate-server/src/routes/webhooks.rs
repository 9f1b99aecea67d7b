//! Webhook endpoints (admin right `webhooks`): add one (its signing secret
//! is in that answer only), list them with their delivery state, delete
//! one. Delivery itself is the sender's (`crate::webhooks`).

use super::caller::Caller;
use super::secrets::keeper;
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, RequestId};
use crate::webhooks::message::SigningSecret;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use mandate_audit::{EventKind, NewEvent, NewWebhook, Webhook};
use mandate_core::{AdminRight, RandomId, WebhookId};
use mandate_store::StoredWebhook;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// An endpoint and how delivery to it stands; `head` is the chain's last
/// `seq`. Never the secret.
fn view(s: &StoredWebhook, head: u64) -> Value {
    let mut v = json!(s.webhook);
    let p = &s.progress;
    v["delivery"] = json!({
        "delivered_seq": p.delivered_seq,
        "pending_events": head.saturating_sub(p.delivered_seq),
        "attempts": p.attempts,
        "next_attempt_ms": p.next_attempt_ms,
        "last_error": p.last_error,
    });
    v
}

/// Scheme, host and port only: the path or query of a receiver's URL may
/// be a credential of its own (chat "incoming webhook" URLs are), and the
/// audit log is read by more people than the webhook list.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

fn parse_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id)
        .map_err(|_| ApiError::not_found("webhook", id.chars().take(40).collect::<String>()))
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    body: Result<ApiJson<NewWebhook>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(AdminRight::Webhooks)?;
    let ApiJson(body) = body?;
    let id = WebhookId::from_random(mandate_token::random_bytes::<16>());
    let hook: Webhook = body.into_webhook(id, now())?;
    // The domain rule passed; the client must be able to use it too.
    let url = reqwest::Url::parse(&hook.url)
        .map_err(|e| ApiError::bad_request(format!("url: not a usable URL ({e})")))?;
    let keeper = keeper(&app)?;
    let secret = SigningSecret::generate();
    let sealed = keeper.seal_webhook(&hook.id, secret.bytes());
    // Delivery starts with what is chained after this.
    let after = app.store.last_event().await?.map_or(0, |e| e.seq);
    let ev = NewEvent::new(EventKind::WebhookCreated, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({"webhook": hook.id, "origin": origin(&url), "kinds": hook.kinds}));
    app.store
        .create_webhook(hook.clone(), sealed.clone(), after, ev)
        .await?;
    app.webhooks_changed.notify_one();
    tracing::info!(webhook = %hook.id, origin = %origin(&url), "webhook endpoint created");
    let stored = StoredWebhook {
        webhook: hook,
        secret: sealed,
        progress: mandate_audit::WebhookProgress {
            delivered_seq: after,
            ..Default::default()
        },
    };
    let mut v = view(&stored, after);
    v["secret"] = json!(secret.to_whsec().expose_secret());
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(v),
    ))
}

pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Webhooks)?;
    let head = *app.store.appended().borrow();
    let hooks: Vec<Value> = app
        .store
        .list_webhooks()
        .await?
        .iter()
        .map(|s| view(s, head))
        .collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Webhooks)?;
    let Path(id) = path?;
    let id = parse_id(&id)?;
    let head = *app.store.appended().borrow();
    let stored = app
        .store
        .get_webhook(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", &id))?;
    Ok(Json(view(&stored, head)))
}

pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AdminRight::Webhooks)?;
    let Path(id) = path?;
    let id = parse_id(&id)?;
    let ev = NewEvent::new(EventKind::WebhookDeleted, caller.actor())
        .request_id(Some(rid.0))
        .detail(json!({ "webhook": id }));
    let hook = app.store.delete_webhook(&id, ev).await?;
    app.webhooks_changed.notify_one();
    tracing::info!(webhook = %id, "webhook endpoint deleted");
    let mut v = json!(hook);
    v["deleted"] = json!(true);
    Ok(Json(v))
}
