//! Logins at a source with no lease row. An engine that can list its
//! logins is asked while the lease commits (see `leases::issue`), so a
//! crash between the two can leave a login nobody was given and no row
//! names. At start, before serving, each such engine lists what it made;
//! a login of a task this broker knows whose lease is not recorded is
//! destroyed by its role's revocation (`lease.orphan_revoked`). Logins of
//! tasks the broker does not know are left alone: another broker using the
//! same source names its own tasks.

use crate::app::App;
use crate::leases::destroy;
use mandate_audit::{EventKind, NewEvent};
use mandate_engine::{Engine, MadeLogin};
use mandate_store::{LeaseFilter, StoreError};
use serde_json::json;

/// Leases read per task to find a login's row; a task with more is left
/// alone (no row could be ruled out).
const PER_TASK: usize = 1000;

/// Destroy every unrecorded login of every engine that lists its logins;
/// how many were destroyed. An engine that cannot be reached is skipped
/// with a warning (the login's deadline still bounds it).
pub async fn sweep(app: &App) -> Result<usize, StoreError> {
    let mut destroyed = 0;
    for tool in app.store.list_tools().await? {
        if tool.engine.is_none() {
            continue;
        }
        let engine = match async {
            app.engines
                .of(app.store.as_ref(), app.require_keeper()?, &tool)
                .await
        }
        .await
        {
            Ok(e) if e.lists_logins() => e,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(tool = %tool.name, error = %e.message, "could not look for unrecorded logins");
                continue;
            }
        };
        let found = match engine.logins().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(tool = %tool.name, error = %e, "could not look for unrecorded logins");
                continue;
            }
        };
        for made in found {
            if unrecorded(app, &made).await? {
                destroyed += usize::from(settle(app, engine.as_ref(), &tool.name, made).await?);
            }
        }
    }
    Ok(destroyed)
}

/// Whether `made` belongs to a task of this broker and no lease names it.
async fn unrecorded(app: &App, made: &MadeLogin) -> Result<bool, StoreError> {
    let Some(task) = mandate_engine::task_of(&made.login) else {
        return Ok(false);
    };
    if app.store.get_task(&task).await?.is_none() {
        return Ok(false);
    }
    let leases = app
        .store
        .list_leases(LeaseFilter {
            task: Some(task),
            failed: false,
            limit: PER_TASK,
        })
        .await?;
    Ok(leases.len() < PER_TASK && !leases.iter().any(|l| l.login == made.login))
}

/// Destroy one unrecorded login and audit it; whether it is gone.
async fn settle(
    app: &App,
    engine: &dyn Engine,
    tool: &mandate_core::ToolName,
    made: MadeLogin,
) -> Result<bool, StoreError> {
    let Some(role) = made.role else {
        tracing::warn!(login = %made.login, "an unrecorded login names no role; left to its deadline");
        return Ok(false);
    };
    if let Err(e) = destroy(engine, &made.login, &role).await {
        tracing::warn!(login = %made.login, error = %e, "could not destroy an unrecorded login; the next start tries again, its deadline bounds it meanwhile");
        return Ok(false);
    }
    let mut ev = NewEvent::new(EventKind::LeaseOrphanRevoked, "system")
        .tool(tool)
        .detail(json!({"login": made.login, "role": role}));
    if let Some(task) = mandate_engine::task_of(&made.login) {
        ev = ev.task(task.as_str());
    }
    app.store.append_events(vec![ev]).await?;
    app.metrics.lease("orphan_revoked");
    Ok(true)
}
