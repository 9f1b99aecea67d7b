//! Background work while the broker runs: the task sweeper (expiry and
//! pruning), policy hot reload, issuer key refresh, audit checkpoints,
//! the webhook sender, the anomaly detector (`anomalies`), rotation
//! notices (`rotation_notices`) and the lease revoker (`leases`).

use crate::app::{App, ReloadError, now};
use mandate_audit::{EventKind, NewEvent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Write a signed checkpoint of the head into the chain, unless the head
/// is the previous checkpoint (nothing new since).
async fn checkpoint_into_chain(app: &App) {
    let signed = match app.signed_head().await {
        Ok(Some((head, _))) if head.kind == EventKind::AuditCheckpoint => return,
        Ok(Some((_, signed))) => signed,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e.message, "could not sign the audit head");
            return;
        }
    };
    let ev = NewEvent::new(EventKind::AuditCheckpoint, "system").detail(serde_json::json!({
        "seq": signed.claims.seq, "hash": signed.claims.hash, "kid": signed.kid,
        "checkpoint": signed.jws,
    }));
    if let Err(e) = app.store.append_events(vec![ev]).await {
        tracing::error!(error = %e, "could not write the audit checkpoint");
    }
}

/// Start the background tasks; `Started::stop` aborts them.
pub fn spawn_background(app: Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    // Sweeper: expire overdue tasks every second, prune once a minute.
    let a = app.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let t = now();
            match a.store.expire_due_tasks(t).await {
                Ok(expired) => {
                    for moved in expired {
                        tracing::info!(task = %moved.task.id, agent = %moved.task.agent, below = moved.subtree.len(), "task expired");
                        // Children revoked with it go on the feed now.
                        a.moved(moved);
                    }
                }
                Err(e) => tracing::error!(error = %e, "task sweeper failed"),
            }
            if n.is_multiple_of(60) {
                a.directory.forget_expired(t);
                a.verified.forget_expired(t);
                a.sessions.forget_expired(t);
                if let Some(th) = &a.throttle {
                    th.forget_idle(std::time::Instant::now());
                }
                if let Err(e) = a.store.prune(t).await {
                    tracing::error!(error = %e, "prune failed");
                }
            }
        }
    });
    // Policy hot reload: poll the policy files' mtimes.
    let a_jwks = app.clone();
    let a_check = app.clone();
    let reloader = tokio::spawn(async move {
        let mut last = policy_stamp(&app.policy_dir);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let stamp = policy_stamp(&app.policy_dir);
            if stamp != last {
                last = stamp;
                if let Err(e) = app.reload_policy("system").await {
                    tracing::error!(error = %e, "policy change rejected; keeping the previous policy set");
                    // Someone changed the files: the log says so, even
                    // though nothing took effect.
                    if let ReloadError::Invalid(why) = e {
                        let ev = NewEvent::new(EventKind::PolicyRejected, "system")
                            .detail(serde_json::json!({"error": why}));
                        if let Err(e) = app.store.append_events(vec![ev]).await {
                            tracing::error!(error = %e, "could not audit the rejected policy change");
                        }
                    }
                }
            }
        }
    });
    // Issuer keys age out, so a key an issuer withdrew stops being trusted.
    let jwks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            a_jwks.federation.refresh_due().await;
        }
    });
    let webhooks = tokio::spawn(crate::webhooks::supervise(a_check.clone()));
    let leases = tokio::spawn(crate::leases::watch(a_check.clone()));
    let mut tasks = vec![sweeper, reloader, jwks, webhooks, leases];
    if a_check.settings.raw.anomaly.enabled {
        tasks.push(tokio::spawn(crate::anomalies::follow(a_check.clone())));
    }
    if a_check.settings.raw.posture.notice_interval_secs > 0 {
        tasks.push(tokio::spawn(crate::rotation_notices::watch(
            a_check.clone(),
        )));
    }
    let every = a_check.settings.raw.audit_checkpoint_secs;
    if every > 0 {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await; // the first tick is immediate: skip it
            loop {
                tick.tick().await;
                checkpoint_into_chain(&a_check).await;
            }
        }));
    }
    tasks
}

fn policy_stamp(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok()?, m.len()))
        })
        .collect();
    v.sort();
    v
}
