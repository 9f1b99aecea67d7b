//! Webhook endpoints: the endpoint (`body`), its signing secret sealed
//! like an upstream secret, and how far delivery to it has got. Creating
//! and deleting one is audited; delivery progress is not (it would be an
//! event about delivering events, and wake the sender for itself).

use crate::sql::{self, Row, Sql, Write, args};
use crate::{SealedValue, StoreError, StoredWebhook};
use mandate_audit::{NewEvent, Webhook, WebhookProgress};
use mandate_core::WebhookId;

const SELECT: &str = "SELECT body, data_key, sealed, delivered_seq, attempts, next_attempt_ms, last_error FROM webhooks";

fn stored(r: &Row) -> Result<StoredWebhook, StoreError> {
    Ok(StoredWebhook {
        webhook: r.json(0)?,
        secret: SealedValue {
            data_key: r.get(1)?,
            bytes: r.get(2)?,
        },
        progress: WebhookProgress {
            delivered_seq: r.get::<i64>(3)?.max(0) as u64,
            attempts: u32::try_from(r.get::<i64>(4)?).unwrap_or(u32::MAX),
            next_attempt_ms: r.get(5)?,
            last_error: r.get(6)?,
        },
    })
}

/// A new endpoint whose delivery starts after event `after`; `Conflict`
/// on its id (or an unknown data key).
pub(crate) fn create(
    w: &mut dyn Write,
    hook: &Webhook,
    secret: &SealedValue,
    after: u64,
    ev: NewEvent,
) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO webhooks (id, body, created_at, data_key, sealed, delivered_seq) VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            hook.id.as_str(),
            &serde_json::to_string(hook)?,
            hook.created_at,
            secret.data_key,
            &secret.bytes,
            sql::bigint(after)
        ],
        "webhook",
        hook.id.as_str(),
    )?;
    w.audit(ev)
}

pub(crate) fn get(db: &mut dyn Sql, id: &WebhookId) -> Result<Option<StoredWebhook>, StoreError> {
    sql::first(db, &format!("{SELECT} WHERE id = $1"), args![id.as_str()])?
        .map(|r| stored(&r))
        .transpose()
}

/// Oldest first, then by id in byte order (see `sql`).
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<StoredWebhook>, StoreError> {
    let mut hooks = db
        .query(SELECT, &[])?
        .iter()
        .map(stored)
        .collect::<Result<Vec<_>, _>>()?;
    hooks.sort_by(|a, b| {
        (a.webhook.created_at, a.webhook.id.as_str())
            .cmp(&(b.webhook.created_at, b.webhook.id.as_str()))
    });
    Ok(hooks)
}

/// Remove the endpoint (and its secret and progress); `NotFound` if there
/// is none.
pub(crate) fn delete(
    w: &mut dyn Write,
    id: &WebhookId,
    ev: NewEvent,
) -> Result<Webhook, StoreError> {
    let hook = get(w, id)?.ok_or_else(|| StoreError::NotFound {
        what: "webhook",
        id: id.to_string(),
    })?;
    w.exec("DELETE FROM webhooks WHERE id = $1", args![id.as_str()])?;
    w.audit(ev)?;
    Ok(hook.webhook)
}

/// Record delivery progress; the cursor never moves back. `NotFound` once
/// the endpoint is deleted.
pub(crate) fn save_progress(
    w: &mut dyn Write,
    id: &WebhookId,
    p: &WebhookProgress,
) -> Result<(), StoreError> {
    let changed = w.exec(
        "UPDATE webhooks SET
           delivered_seq = CASE WHEN delivered_seq > $2 THEN delivered_seq ELSE $2 END,
           attempts = $3, next_attempt_ms = $4, last_error = $5
         WHERE id = $1",
        args![
            id.as_str(),
            sql::bigint(p.delivered_seq),
            i64::from(p.attempts),
            p.next_attempt_ms,
            p.last_error.as_deref()
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: "webhook",
            id: id.to_string(),
        });
    }
    Ok(())
}
