//! What a credential-injection proxy needs from the broker (admin right
//! `proxy`): the catalog (tools, secret versions, the exact policy
//! sources), a tool's secret value to inject, and somewhere to send its
//! tool-call records, which are chained exactly once even if resent. The
//! shapes of all three are `mandate_wire`'s, shared with the proxy.

use super::caller::Caller;
use super::secrets::keeper;
use crate::app::{AppState, now};
use crate::error::ApiError;
use crate::extract::ApiPath as Path;
use crate::extract::{ApiJson, RequestId, is_plain_id};
use crate::misuse::{self, Sighting};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, ToolName};
use mandate_store::Invocation;
use mandate_wire::batch::{
    MAX_BATCH, MAX_CHAIN, MAX_FIELD, MAX_ID, MAX_METHOD, MAX_PATH, MAX_REASON, MAX_REASONS,
};
use mandate_wire::{
    Accepted, Batch, CatalogDoc, Mode, PolicyDoc, PolicyFile, SecretMeta, SecretValue, Stage,
    ToolCall,
};
use secrecy::SecretString;
use serde_json::json;

pub async fn catalog(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<CatalogDoc>, ApiError> {
    caller.require(AdminRight::Proxy)?;
    let tools = app.store.list_tools().await?;
    let secrets: Vec<SecretMeta> = app
        .store
        .list_secrets()
        .await?
        .into_iter()
        .map(|s| SecretMeta {
            name: s.name.into(),
            tool: s.tool.into(),
            version: s.version,
            expires_at: s.expires_at,
        })
        .collect();
    let policy = app.policy();
    let sources = policy.sources();
    let policies: Vec<PolicyFile> = sources
        .files
        .iter()
        .map(|(file, text)| PolicyFile {
            file: file.clone(),
            text: text.clone(),
        })
        .collect();
    let hash = mandate_token::sha256_hex(
        serde_json::to_string(sources)
            .map_err(ApiError::internal)?
            .as_bytes(),
    );
    Ok(Json(CatalogDoc {
        issuer: app.issuer.clone(),
        proxy_protocol: mandate_wire::PROXY_PROTOCOL,
        tools,
        secrets,
        policy: PolicyDoc {
            hash,
            schema: sources.schema.clone(),
            policies,
        },
    }))
}

/// The current value of a tool's secret, for injection. Audited as
/// `secret.delivered` (to which proxy, which version) before it leaves.
pub async fn secret(
    State(app): State<AppState>,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<String>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let token = caller.require(AdminRight::Proxy)?;
    let Path(tool) = path?;
    let tool = ToolName::parse(&tool)?;
    let keeper = keeper(&app)?;
    let (secret, sealed) = app
        .store
        .secret_for_tool(&tool)
        .await?
        .ok_or_else(|| ApiError::not_found("secret for tool", &tool))?;
    if secret.is_expired(now()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "secret_expired",
            format!(
                "secret `{}` expired; rotate it or store a new one",
                secret.name
            ),
        ));
    }
    let value = keeper
        .open_value(&secret.name, secret.version, &sealed)
        .map_err(ApiError::internal)?;
    let value = SecretString::from(
        std::str::from_utf8(&value).map_err(|_| ApiError::internal("secret is not UTF-8"))?,
    );
    let ev = NewEvent::new(EventKind::SecretDelivered, format!("proxy:{}", token.id))
        .tool(&tool)
        .request_id(Some(rid.0))
        .detail(json!({"secret": secret.name, "version": secret.version}));
    app.store.append_events(vec![ev]).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(SecretValue {
            name: secret.name.into(),
            tool: secret.tool.into(),
            version: secret.version,
            value,
        }),
    ))
}

fn short(field: &str, i: usize, v: &str, max: usize) -> Result<(), ApiError> {
    if v.len() > max {
        return Err(ApiError::bad_request(format!(
            "events[{i}].{field}: must be at most {max} bytes"
        )));
    }
    Ok(())
}

fn check(i: usize, c: &ToolCall, prev_seq: Option<u64>) -> Result<(), ApiError> {
    if !is_plain_id(&c.id, MAX_ID) {
        return Err(ApiError::bad_request(format!(
            "events[{i}].id: must be 1-{MAX_ID} letters, digits, `-` or `_`"
        )));
    }
    if c.seq > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!(
            "events[{i}].seq: must be at most {}",
            i64::MAX
        )));
    }
    if prev_seq.is_some_and(|p| c.seq <= p) {
        return Err(ApiError::bad_request(format!(
            "events[{i}].seq: must be greater than the record before it (records are sent in spool order)"
        )));
    }
    if !matches!(c.decision.as_ref(), "allow" | "deny") {
        return Err(ApiError::bad_request(format!(
            "events[{i}].decision: must be `allow` or `deny`"
        )));
    }
    match (c.stage, c.opened_seq) {
        (Stage::Call, None) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].opened_seq: required on a `call` record (the seq of the call's `invoked` record)"
            )));
        }
        (Stage::Call, Some(o)) if o >= c.seq => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].opened_seq: must be less than seq (the call was opened before it completed)"
            )));
        }
        (Stage::Invoked | Stage::Completed, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].opened_seq: only on a `call` record"
            )));
        }
        _ => {}
    }
    match (c.stage, c.decision.as_ref(), c.status) {
        (Stage::Invoked, "allow", Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].status: an allowed call's `invoked` record is written before the upstream answers; the status goes in its `completed` record"
            )));
        }
        (Stage::Completed | Stage::Call, "deny", _) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].stage: only an allowed call has a `completed` or `call` record"
            )));
        }
        (Stage::Completed | Stage::Call, _, None) | (Stage::Invoked, "deny", None) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].status: required on this record"
            )));
        }
        (_, _, Some(s)) if !(100..=599).contains(&s) => {
            return Err(ApiError::bad_request(format!(
                "events[{i}].status: must be an HTTP status (100-599)"
            )));
        }
        _ => {}
    }
    if c.reasons.len() > MAX_REASONS {
        return Err(ApiError::bad_request(format!(
            "events[{i}].reasons: at most {MAX_REASONS}"
        )));
    }
    for r in &c.reasons {
        short("reasons", i, r, MAX_REASON)?;
    }
    if c.bytes_up.is_some() && c.mode != Mode::Egress {
        return Err(ApiError::bad_request(format!(
            "events[{i}].bytes_up: only on an egress record"
        )));
    }
    if let Some(client) = &c.client
        && client.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "events[{i}].client: must be an IP address"
        )));
    }
    short("method", i, &c.method, MAX_METHOD)?;
    short("path", i, &c.path, MAX_PATH)?;
    if c.chain.len() > MAX_CHAIN {
        return Err(ApiError::bad_request(format!(
            "events[{i}].chain: at most {MAX_CHAIN} agents"
        )));
    }
    for a in &c.chain {
        short("chain", i, a, MAX_FIELD)?;
    }
    if let Some(m) = &c.misuse {
        if c.decision != "deny" {
            return Err(ApiError::bad_request(format!(
                "events[{i}].misuse: only on a denied call"
            )));
        }
        for (f, v) in [
            ("misuse.bound_jkt", &m.bound_jkt),
            ("misuse.presented_jkt", &m.presented_jkt),
            ("misuse.proof_jti", &m.proof_jti),
        ] {
            if let Some(v) = v {
                short(f, i, v, MAX_FIELD)?;
            }
        }
    }
    for (f, v) in [
        ("agent", &c.agent),
        ("task", &c.task),
        ("tool", &c.tool),
        ("action", &c.action),
        ("jti", &c.jti),
    ] {
        if let Some(v) = v {
            short(f, i, v, MAX_FIELD)?;
        }
    }
    Ok(())
}

pub async fn ingest(
    State(app): State<AppState>,
    caller: Caller,
    batch: Result<ApiJson<Batch>, ApiError>,
) -> Result<Json<Accepted>, ApiError> {
    let token = caller.require(AdminRight::Proxy)?;
    let ApiJson(batch) = batch?;
    if batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "events: at most {MAX_BATCH} per batch"
        )));
    }
    if !is_plain_id(&batch.source, MAX_ID) {
        return Err(ApiError::bad_request(format!(
            "source: must be 1-{MAX_ID} letters, digits, `-` or `_`"
        )));
    }
    // Validate all before writing any: a bad record refuses the whole batch.
    let mut prev_seq = None;
    for (i, c) in batch.events.iter().enumerate() {
        check(i, c, prev_seq)?;
        prev_seq = Some(c.seq);
    }
    let actor = format!("proxy:{}", token.id);
    let invocations: Vec<Invocation> = batch
        .events
        .into_iter()
        .map(|c| {
            // A proxy strips the query; never chain one even if it did not.
            let path = c.path.split('?').next().unwrap_or_default().to_owned();
            // A whole call is one `tool.invoked` event with its outcome
            // (as a denied call's is); the store chains it as
            // `tool.completed` if its opening was chained already.
            let kind = match (c.mode, c.stage, c.decision.as_ref()) {
                (Mode::Inject, Stage::Invoked | Stage::Call, _) => EventKind::ToolInvoked,
                (Mode::Inject, Stage::Completed, _) => EventKind::ToolCompleted,
                (Mode::Egress, Stage::Invoked | Stage::Call, "allow") => EventKind::EgressAllowed,
                (Mode::Egress, Stage::Invoked | Stage::Call, _) => EventKind::EgressDenied,
                (Mode::Egress, Stage::Completed, _) => EventKind::EgressClosed,
            };
            let mut detail = match c.mode {
                Mode::Inject => json!({"at_ms": c.at, "action": c.action, "method": c.method,
                    "path": path, "status": c.status, "latency_ms": c.latency_ms,
                    "bytes": c.bytes}),
                // A tunnel's target is its `path` (the CONNECT request target).
                Mode::Egress => json!({"at_ms": c.at, "method": c.method, "host": c.path,
                    "status": c.status, "duration_ms": c.latency_ms, "bytes_down": c.bytes,
                    "bytes_up": c.bytes_up}),
            };
            if let Some(client) = &c.client {
                detail["client"] = client.as_str().into();
            }
            if !c.chain.is_empty() {
                detail["chain"] = json!(c.chain);
            }
            // The refusal as the agent got it: a denied record's last reason.
            let refusal = c.reasons.last().cloned().unwrap_or_default();
            let misuse = c.misuse.as_ref().map(|m| {
                misuse::event(Sighting {
                    actor: &actor,
                    misuse: m,
                    refusal,
                    agent: c.agent.clone(),
                    task: c.task.clone(),
                    tool: c.tool.clone(),
                    jti: c.jti.clone(),
                    client: c.client.clone(),
                    chain: c.chain.clone(),
                    request_id: Some(c.id.clone()),
                })
            });
            // A break-glass task's call: flagged, and announced on its own.
            let breakglass = c.breakglass.then(|| {
                let mut used = NewEvent::new(EventKind::BreakglassUsed, actor.clone())
                    .decision(c.decision.clone())
                    .request_id(Some(c.id.clone()))
                    .detail(json!({"via": "proxy", "method": c.method, "path": path}));
                used.agent = c.agent.clone();
                used.task = c.task.clone();
                used.tool = c.tool.clone();
                used.jti = c.jti.clone();
                used
            });
            if c.breakglass {
                detail["breakglass"] = json!(true);
            }
            let mut event = NewEvent::new(kind, actor.clone())
                .decision(c.decision)
                .reasons(c.reasons)
                .request_id(Some(c.id.clone()))
                .detail(detail);
            event.agent = c.agent;
            event.task = c.task;
            event.tool = c.tool;
            event.jti = c.jti;
            Invocation {
                seq: c.seq,
                opened: c.opened_seq,
                event,
                also: misuse.into_iter().chain(breakglass).collect(),
            }
        })
        .collect();
    let done = app
        .store
        .ingest_invocations(batch.source, invocations, now())
        .await?;
    misuse::respond(&app, &done.misuse).await;
    Ok(Json(Accepted {
        accepted: done.accepted as u64,
        duplicates: done.duplicates as u64,
    }))
}
