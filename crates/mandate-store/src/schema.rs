//! Versioned migrations, applied in order, each in its own transaction
//! with its version recorded; the same runner for both backends' lists.

use crate::StoreError;
use crate::backend::now_ms;
use crate::sql::{self, Sql, args};

/// Bring the schema up to `migrations` (the index + 1 is the version).
/// A database from a newer binary is refused, never downgraded.
pub(crate) fn migrate(db: &mut dyn Sql, migrations: &[&str]) -> Result<(), StoreError> {
    db.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    let current: i64 = sql::first(
        db,
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
    )?
    .map(|r| r.get(0))
    .transpose()?
    .unwrap_or(0);
    let known = migrations.len() as i64;
    if current > known {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this binary knows ({known})"
        )));
    }
    for (version, ddl) in (1i64..).zip(migrations).skip(current as usize) {
        db.batch("BEGIN")?;
        let applied = db.batch(ddl).and_then(|()| {
            db.exec(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                args![version, now_ms() / 1000],
            )
        });
        if let Err(e) = applied {
            // DDL is transactional on both: a failed migration leaves nothing.
            let _ = db.batch("ROLLBACK");
            return Err(e);
        }
        db.batch("COMMIT")?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
