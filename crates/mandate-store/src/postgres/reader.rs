//! Offline reading of the audit chain, for `mandate audit verify` and
//! `export` against the database itself rather than through a broker that
//! might be down or not trusted. No writer lock, no migrations, and the
//! session is read-only: an auditor's tool cannot change the evidence.

use super::connect;
use super::db::Conn;
use crate::{StoreError, events};
use mandate_audit::Event;
use mandate_pg_connect::PostgresTls;
use secrecy::SecretString;

/// A read-only connection to a Mandate PostgreSQL database's audit events.
/// Blocking: use it from a thread of its own, never an async worker (the
/// synchronous client runs its own runtime), and drop it there too.
pub struct PostgresAuditReader {
    conn: Conn,
}

impl PostgresAuditReader {
    pub fn connect(url: &SecretString, settings: PostgresTls) -> Result<Self, StoreError> {
        let target = connect::describe(url)?;
        let mut client = connect::client(url, &connect::tls(settings)?)?;
        client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
        tracing::debug!(database = %target, "reading audit events");
        Ok(PostgresAuditReader {
            conn: Conn::new(client),
        })
    }

    /// Up to `limit` events after `after`, in chain order.
    pub fn events_since(&mut self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        events::since(&mut self.conn.db(), after, limit)
    }
}
