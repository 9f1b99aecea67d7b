//! Outbound webhooks: the broker tells a person's systems about audit
//! events. The source is the audit chain itself: requests only write their
//! events, as always, and a sender follows the `events` table behind them
//! with one cursor per endpoint kept in the store. So an endpoint that is
//! down slows no request and loses nothing: its events wait in the chain.
//!
//! One task per endpoint delivers its events in chain order, one at a
//! time, each signed per Standard Webhooks (`message`); a failure is
//! retried with backoff (`backoff`) and holds only that endpoint's queue.
//! The sender wakes on every commit that appended events
//! ([`Store::appended`](mandate_store::Store::appended)) and polls every
//! second besides. Delivery is at least once: a receiver drops repeats by
//! `webhook-id`.

mod backoff;
pub(crate) mod message;

use crate::app::App;
use mandate_audit::{Event, Webhook, WebhookProgress};
use mandate_core::WebhookId;
use mandate_store::{StoreError, StoredWebhook};
use message::SigningSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Events read from the chain at a time.
const PAGE: usize = 256;
/// How often a caught-up sender looks at the chain without being woken.
const POLL: Duration = Duration::from_secs(1);
/// How often the set of endpoints is read again without being told.
const RESCAN: Duration = Duration::from_secs(30);
/// Longest failure reason kept.
const MAX_REASON: usize = 120;

/// The sender's HTTP client: it never follows a redirect (a 3xx is a
/// failed attempt: the signature was made for this URL) and gives up
/// after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("mandate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The running senders; dropping this (the supervisor stopping) stops them.
struct Senders(HashMap<WebhookId, tokio::task::JoinHandle<()>>);

impl Drop for Senders {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.abort();
        }
    }
}

/// Keep one sender per stored endpoint until the broker stops.
pub async fn supervise(app: Arc<App>) {
    let mut senders = Senders(HashMap::new());
    loop {
        match app.store.list_webhooks().await {
            Ok(stored) => {
                senders.0.retain(|id, task| {
                    let keep = stored.iter().any(|s| &s.webhook.id == id) && !task.is_finished();
                    if !keep {
                        task.abort();
                        app.metrics.webhook_gone(id);
                    }
                    keep
                });
                for s in stored {
                    if !senders.0.contains_key(&s.webhook.id) {
                        let id = s.webhook.id.clone();
                        senders.0.insert(id, tokio::spawn(deliver(app.clone(), s)));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read webhook endpoints"),
        }
        let _ = tokio::time::timeout(RESCAN, app.webhooks_changed.notified()).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Deliver the endpoint's events until it is deleted.
async fn deliver(app: Arc<App>, stored: StoredWebhook) {
    let StoredWebhook {
        webhook: hook,
        secret,
        mut progress,
    } = stored;
    let secret = match app
        .keeper
        .as_ref()
        .map(|k| k.open_webhook(&hook.id, &secret))
    {
        Some(Ok(bytes)) => SigningSecret::from_bytes(bytes),
        Some(Err(e)) => {
            tracing::error!(webhook = %hook.id, error = %e, "cannot open the webhook's signing secret; not delivering");
            return;
        }
        None => {
            tracing::error!(webhook = %hook.id, "no master key configured: cannot sign webhooks; not delivering");
            return;
        }
    };
    let mut head = app.store.appended();
    loop {
        let lag = head.borrow().saturating_sub(progress.delivered_seq);
        app.metrics.webhook_lag(&hook.id, lag);
        let page = match app.store.events_since(progress.delivered_seq, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(webhook = %hook.id, error = %e, "cannot read the audit chain for webhooks");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if page.is_empty() {
            let after = progress.delivered_seq;
            let _ = tokio::time::timeout(POLL, head.wait_for(|h| *h > after)).await;
            continue;
        }
        let mut skipped = false;
        for event in &page {
            if hook.kinds.matches(event.kind) {
                // Its progress, saved below, covers the events skipped before it.
                skipped = false;
                if !deliver_one(&app, &hook, &secret, event, &mut progress).await {
                    return;
                }
            } else {
                progress.delivered_seq = event.seq;
                skipped = true;
            }
        }
        if skipped && !save(&app, &hook.id, &progress).await {
            return;
        }
    }
}

/// Send one event until the endpoint takes it; `false` once the endpoint
/// is deleted. Waits out a retry time already set (also one stored before
/// a restart).
async fn deliver_one(
    app: &App,
    hook: &Webhook,
    secret: &SigningSecret,
    event: &Event,
    progress: &mut WebhookProgress,
) -> bool {
    let id = message::message_id(&hook.id, event.seq);
    let body = message::body(event);
    loop {
        if let Some(due) = progress.next_attempt_ms {
            let wait = due.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        match send(app, hook, secret, &id, &body).await {
            Ok(()) => {
                *progress = WebhookProgress {
                    delivered_seq: event.seq,
                    ..Default::default()
                };
                app.metrics.webhook_delivered(&hook.id);
                return save(app, &hook.id, progress).await;
            }
            Err(why) => {
                progress.attempts = progress.attempts.saturating_add(1);
                let random = u32::from_le_bytes(mandate_token::random_bytes::<4>());
                let wait = backoff::jittered(progress.attempts, random);
                progress.next_attempt_ms = Some(now_ms() + wait.as_millis() as i64);
                tracing::warn!(
                    webhook = %hook.id, seq = event.seq, attempts = progress.attempts,
                    error = %why, retry_in_ms = wait.as_millis() as u64,
                    "webhook delivery failed"
                );
                progress.last_error = Some(why);
                app.metrics.webhook_failed(&hook.id);
                if !save(app, &hook.id, progress).await {
                    return false;
                }
            }
        }
    }
}

/// One attempt: `Err` with a short reason (a status, a timeout, a refused
/// connection), never the endpoint's answer and never the URL, which may
/// carry a token of the receiver's.
async fn send(
    app: &App,
    hook: &Webhook,
    secret: &SigningSecret,
    id: &str,
    body: &str,
) -> Result<(), String> {
    let timestamp = crate::app::now();
    let signature = secret.sign(id, timestamp, body);
    let sent = app
        .webhook_http
        .post(&hook.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("cannot connect".into()),
        Err(e) => {
            let mut why = e.without_url().to_string();
            why.truncate(MAX_REASON);
            Err(why)
        }
    }
}

/// Store the progress; `false` if the endpoint is gone (stop sending).
/// Other failures are logged and delivery goes on: the cursor only
/// decides where a restarted broker resumes, and resending is allowed.
async fn save(app: &App, id: &WebhookId, progress: &WebhookProgress) -> bool {
    match app.store.save_webhook_progress(id, progress.clone()).await {
        Ok(()) => true,
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => {
            tracing::warn!(webhook = %id, error = %e, "cannot record webhook progress");
            true
        }
    }
}
