//! The revocation feed: poll (`GET /v1/revocations?since=SEQ`) or push
//! (server-sent events). Public like a CRL: entries carry only ids.

use crate::app::{AppState, now};
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use mandate_wire::{REVOCATION_EVENT, Revocation, RevocationPage};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    #[serde(default)]
    since: u64,
}

fn since(
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<u64, ApiError> {
    q.map(|Query(s)| s.since)
        .map_err(|e| ApiError::bad_request(format!("since: {}", e.body_text())))
}

/// Entries per poll response and per backlog read of the stream.
const PAGE: u32 = 1000;

/// One page; `more` says a full page came back, so ask again from `next`.
pub async fn list(
    State(app): State<AppState>,
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RevocationPage>, ApiError> {
    let since = since(q)?;
    let entries = app.store.revocations_since(since, now(), PAGE).await?;
    let next = entries.last().map(|r| r.seq).unwrap_or(since);
    let more = entries.len() == PAGE as usize;
    Ok(Json(RevocationPage {
        entries,
        next,
        more,
    }))
}

fn sse(r: &Revocation) -> Event {
    Event::default()
        .id(r.seq.to_string())
        .event(REVOCATION_EVENT)
        .data(serde_json::to_string(r).unwrap_or_default())
}

/// Backlog after `since`, then live entries. If a slow client falls behind
/// the broadcast buffer, or the server stops, the stream ends; the client
/// reconnects with its last id.
pub async fn stream(
    State(app): State<AppState>,
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let since = since(q)?;
    // Held for as long as the client keeps the stream open.
    let permit = app.feed_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "max_feed_streams revocation streams are open; poll GET /v1/revocations?since=SEQ or retry later",
        )
    })?;
    // Subscribe before reading the backlog so nothing falls in between.
    let live = BroadcastStream::new(app.feed.subscribe());
    // The whole backlog, page by page: stopping at one page would skip
    // whatever lies between it and the first live entry.
    let mut backlog = Vec::new();
    let mut last = since;
    loop {
        let page = app.store.revocations_since(last, now(), PAGE).await?;
        last = page.last().map(|r| r.seq).unwrap_or(last);
        let full = page.len() == PAGE as usize;
        backlog.extend(page.iter().map(|r| Ok(sse(r))));
        if !full {
            break;
        }
    }
    let backlog = stream::iter(backlog);
    let live = live
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(move |r| {
            std::future::ready(r.ok().filter(|r| r.seq > last).map(|r| Ok(sse(&r))))
        });
    let mut stopping = app.stopping.subscribe();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let events = backlog.chain(live).take_until(stopped).map(move |e| {
        let _held = &permit;
        e
    });
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new().interval(Duration::from_secs(app.settings.raw.feed_keepalive_secs)),
    ))
}
