//! Opening the file: pragmas, the migrations, the chain head.

use super::link::Link;
use crate::{StoreError, events, schema};
use mandate_audit::ChainHead;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_secrets.sql"),
    include_str!("../../migrations/sqlite/0003_admin_token_revocation.sql"),
    include_str!("../../migrations/sqlite/0004_ingest_sources.sql"),
    include_str!("../../migrations/sqlite/0005_delegation.sql"),
    include_str!("../../migrations/sqlite/0006_task_ended_at.sql"),
    include_str!("../../migrations/sqlite/0007_approvals.sql"),
    include_str!("../../migrations/sqlite/0008_webhooks.sql"),
    include_str!("../../migrations/sqlite/0009_anomalies.sql"),
    include_str!("../../migrations/sqlite/0010_governance.sql"),
    include_str!("../../migrations/sqlite/0012_leases.sql"),
];

/// The writer's page cache, in KiB (a negative `cache_size`). SQLite's
/// default, 2 MiB, holds about 3,000 tasks: a cascade over a larger
/// subtree read each of its pages back from the OS (a seventh of a
/// 10,000-task revoke) before writing it.
const WRITER_CACHE_KIB: i64 = -65_536;

/// How long a connection waits for a lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each job runs in a savepoint; keep their statement journal in memory
    // rather than in a temporary file that grows for the whole group.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (see `checkpoint`), not in the writer.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

/// The writer's connection, migrated, and where the chain continues.
pub(crate) fn open_writer(path: &Path) -> Result<(Connection, ChainHead), StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    schema::migrate(&mut Link(&conn), MIGRATIONS)?;
    let head = events::chain_head(&mut Link(&conn))?;
    Ok((conn, head))
}

/// A read-only connection for the read pool.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}
