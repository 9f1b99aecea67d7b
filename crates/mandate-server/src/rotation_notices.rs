//! Rotation notices: every `posture.notice_interval_secs`, each secret past
//! its class's maximum age raises `secret.rotation_due` (once per version)
//! and each one idle past its class's period raises `secret.unused` (once
//! per idle spell). They are audit events, so webhooks deliver them.

use crate::app::{App, now};
use mandate_audit::{EventKind, NewEvent};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn watch(app: Arc<App>) {
    let every = Duration::from_secs(app.settings.raw.posture.notice_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = raise(&app).await {
            tracing::error!(error = %e, "rotation notices failed");
        }
    }
}

async fn raise(app: &App) -> Result<(), mandate_store::StoreError> {
    let t = now();
    for s in app.store.list_secrets().await? {
        let status = app.settings.rotation.status(&s, t);
        let policy = app.settings.rotation.of(s.class);
        if status.overdue {
            let ev = NewEvent::new(EventKind::SecretRotationDue, "system")
                .tool(&s.tool)
                .detail(json!({"secret": s.name, "class": s.class, "version": s.version,
                    "rotation_due_at": status.rotation_due_at, "max_age_secs": policy.max_age_secs}));
            if app
                .store
                .notice_secret(s.name.clone(), "rotation_due", i64::from(s.version), t, ev)
                .await?
            {
                tracing::warn!(secret = %s.name, class = %s.class, "secret is due for rotation");
            }
        }
        if status.unused {
            let ev = NewEvent::new(EventKind::SecretUnused, "system")
                .tool(&s.tool)
                .detail(
                    json!({"secret": s.name, "class": s.class, "idle_since": status.idle_since,
                    "unused_after_secs": policy.unused_after_secs}),
                );
            if app
                .store
                .notice_secret(s.name.clone(), "unused", status.idle_since, t, ev)
                .await?
            {
                tracing::warn!(secret = %s.name, class = %s.class, "secret is unused: revoke it");
            }
        }
    }
    Ok(())
}
