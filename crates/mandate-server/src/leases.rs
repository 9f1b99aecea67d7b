//! Dynamic credentials for tasks. Issuing records the lease durably before
//! the credential is handed out (see [`issue`]); the revoker destroys every due lease at its
//! source (every way a task ends makes its leases due), confirms it gone,
//! and retries failures with backoff. It runs at start before the broker
//! serves (orphans of a crash), after each task transition, and every
//! second.

use crate::app::{App, now};
use crate::engines::engine_error;
use crate::error::ApiError;
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Lease, LeaseId, LeaseState, RandomId, Task, Tool, lease_backoff};
use mandate_engine::{Engine, EngineError, IssueRequest, Issued};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Due leases read per pass.
const BATCH: usize = 1000;

/// Record a lease for `task` on `tool`'s `role`, with `lease.created` and
/// the decision to hand it out (`retrieved`, given the lease and login in
/// its detail) in one commit, and make the credential. An engine that can
/// list its logins is asked while the lease commits (a crash in between
/// leaves a login without a row, destroyed at the next start: see
/// `orphans`); any other only once the row is durable. Nothing is handed
/// out before the row is durable. On the engine's failure the lease is
/// marked for the revoker (the source may hold part of it if the answer
/// was lost) and `lease.failed` says why; on the store's, a login already
/// made is destroyed at once.
pub async fn issue(
    app: &App,
    task: &Task,
    tool: &Tool,
    role: &str,
    retrieved: NewEvent,
) -> Result<(Lease, Issued), ApiError> {
    let engine = app
        .engines
        .of(app.store.as_ref(), app.require_keeper()?, tool)
        .await?;
    let t = now();
    let lease = Lease {
        id: LeaseId::from_random(mandate_token::random_bytes()),
        task: task.id.clone(),
        agent: task.agent.clone(),
        tool: tool.name.clone(),
        role: role.to_owned(),
        login: engine.login_name(&task.id, mandate_token::random_bytes()),
        state: LeaseState::Active,
        created_at: t,
        expires_at: task.deadline,
        revoked_at: None,
        attempts: 0,
        last_error: None,
        next_attempt_at: None,
    };
    // Same actor, agent, task, tool and request as the decision.
    let created = NewEvent {
        kind: EventKind::LeaseCreated,
        decision: None,
        reasons: Vec::new(),
        ..retrieved.clone()
    }
    .detail(
        json!({"lease": lease.id, "login": lease.login, "role": role,
        "engine": engine.kind(), "expires_at": lease.expires_at}),
    );
    let retrieved =
        retrieved.detail(json!({"lease": lease.id, "login": lease.login, "role": role}));
    let _in_flight = app.issuing.hold(&lease.id, &app.leases_due);
    let record = app
        .store
        .create_lease(lease.clone(), t, vec![created, retrieved]);
    let make = async {
        let asked = IssueRequest {
            login: &lease.login,
            role,
            valid_until: task.deadline,
            prepared: Some(engine.prepare().await?),
        };
        engine.issue(&asked).await
    };
    let outcome = if engine.lists_logins() {
        let (recorded, made) = tokio::join!(record, make);
        if let Err(se) = recorded {
            app.metrics.lease("issue_failed");
            // Idempotent: also right when the engine failed after making it.
            if let Err(e) = destroy(engine.as_ref(), &lease.login, role).await {
                tracing::error!(login = %lease.login, error = %e,
                    "a login made without its lease could not be destroyed; the next start destroys it, and its deadline bounds it meanwhile");
            }
            drop(made);
            return Err(se.into());
        }
        made
    } else {
        record.await?;
        make.await
    };
    match outcome {
        Ok(issued) => {
            app.metrics.lease("issued");
            Ok((lease, issued))
        }
        Err(e) => {
            app.metrics.lease("issue_failed");
            let mut marked = lease;
            marked.state = LeaseState::Revoking;
            let reason = format!("issue failed: {e}");
            let failed = NewEvent::new(EventKind::LeaseFailed, "system")
                .agent(&marked.agent)
                .task(&marked.task)
                .tool(&marked.tool)
                .detail(json!({"lease": marked.id, "login": marked.login,
                    "attempts": 0, "reason": reason}));
            marked.last_error = Some(reason);
            if let Err(se) = app.store.update_lease(marked, Some(failed)).await {
                tracing::error!(error = %se, "could not mark a failed lease for the revoker");
            }
            app.leases_due.notify_one();
            Err(engine_error(e))
        }
    }
}

/// Destroy a login at its source and confirm it gone.
pub(crate) async fn destroy(
    engine: &dyn Engine,
    login: &str,
    role: &str,
) -> Result<(), EngineError> {
    engine.revoke(login, role).await?;
    if engine.verify_gone(login).await? {
        Ok(())
    } else {
        Err(EngineError::Refused(
            "the login is still there after revocation".into(),
        ))
    }
}

/// Leases destroyed at once by a pass (each its own connection to the
/// source): a restart after a crash clears hundreds without a long wait.
const PARALLEL: usize = 8;

/// Destroy one due lease and record the outcome; whether it is gone.
async fn settle(app: &App, mut lease: Lease) -> Result<bool, mandate_store::StoreError> {
    let t = now();
    let outcome = match app.store.get_tool(&lease.tool).await? {
        None => Err(format!("tool `{}` no longer exists", lease.tool)),
        Some(tool) => match async {
            app.engines
                .of(app.store.as_ref(), app.require_keeper()?, &tool)
                .await
        }
        .await
        {
            Err(e) => Err(e.message),
            Ok(engine) => destroy(engine.as_ref(), &lease.login, &lease.role)
                .await
                .map_err(|e| e.to_string()),
        },
    };
    let ev = |kind: EventKind, detail: serde_json::Value| {
        NewEvent::new(kind, "system")
            .agent(&lease.agent)
            .task(&lease.task)
            .tool(&lease.tool)
            .detail(detail)
    };
    match outcome {
        Ok(()) => {
            let e = ev(
                EventKind::LeaseRevoked,
                json!({"lease": lease.id, "login": lease.login, "attempts": lease.attempts + 1}),
            );
            lease.state = LeaseState::Revoked;
            lease.revoked_at = Some(t);
            lease.next_attempt_at = None;
            app.store.update_lease(lease, Some(e)).await?;
            app.metrics.lease("revoked");
            Ok(true)
        }
        Err(reason) => {
            lease.attempts += 1;
            // The first failure and every tenth are audited; each one is counted.
            let e = (lease.attempts == 1 || lease.attempts.is_multiple_of(10)).then(|| {
                ev(
                    EventKind::LeaseFailed,
                    json!({"lease": lease.id, "login": lease.login,
                        "attempts": lease.attempts, "reason": reason}),
                )
            });
            tracing::warn!(lease = %lease.id, login = %lease.login, attempts = lease.attempts, %reason, "lease revocation failed; retrying");
            lease.state = LeaseState::Failed;
            lease.last_error = Some(reason);
            lease.next_attempt_at = Some(t + lease_backoff(lease.attempts));
            app.store.update_lease(lease, e).await?;
            app.metrics.lease("revoke_failed");
            Ok(false)
        }
    }
}

/// Destroy every due lease now; how many were confirmed gone. One pass at
/// a time (a pass from a route and the background one never race).
pub async fn revoke_due(app: &App) -> Result<usize, mandate_store::StoreError> {
    use futures::StreamExt;
    let _one_pass = app.lease_pass.lock().await;
    let (mut gone, mut touched) = (0, 0);
    loop {
        let due = app.store.due_leases(now(), BATCH).await?;
        let full = due.len() == BATCH;
        let before = touched;
        let due: Vec<Lease> = due
            .into_iter()
            .filter(|l| !app.issuing.skip(&l.id))
            .collect();
        let mut settled = futures::stream::iter(due)
            .map(|lease| settle(app, lease))
            .buffer_unordered(PARALLEL);
        while let Some(r) = settled.next().await {
            gone += usize::from(r?);
            touched += 1;
        }
        // A full batch of leases still in flight would be read again as is.
        if !full || touched == before {
            break;
        }
    }
    // Only a settled lease changes how many are failing: a task's end with
    // nothing due costs one query, not two.
    if touched > 0 {
        count_failing(app).await?;
    }
    Ok(gone)
}

/// Set the `leases_failing` alarm from the store.
pub async fn count_failing(app: &App) -> Result<(), mandate_store::StoreError> {
    let n = app.store.count_failed_leases().await?;
    app.metrics.leases_failing.set(n as i64);
    Ok(())
}

/// The background revoker: woken by task transitions, every second besides.
pub async fn watch(app: Arc<App>) {
    loop {
        tokio::select! {
            _ = app.leases_due.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = revoke_due(&app).await {
            tracing::error!(error = %e, "lease revoker failed");
        }
    }
}
