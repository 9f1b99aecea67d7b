//! Grants: the record of each minted token, by `jti`.

use crate::StoreError;
use crate::sql::{self, Sql, Write, args};
use mandate_audit::NewEvent;
use mandate_core::Grant;

pub(crate) fn mint(w: &mut dyn Write, grant: &Grant, ev: NewEvent) -> Result<(), StoreError> {
    w.grant(grant)?;
    w.audit(ev)
}

/// The row of one grant, for a writer that stores grants one at a time:
/// `Conflict` if the `jti` is taken or the task unknown.
pub(crate) fn insert(db: &mut dyn Sql, grant: &Grant) -> Result<(), StoreError> {
    sql::insert(
        db,
        "INSERT INTO grants (jti, task, body, expires_at) VALUES ($1, $2, $3, $4)",
        args![
            grant.jti.as_str(),
            grant.task.as_str(),
            &serde_json::to_string(grant)?,
            grant.expires_at
        ],
        "grant",
        grant.jti.as_str(),
    )
}

pub(crate) fn get(db: &mut dyn Sql, jti: &str) -> Result<Option<Grant>, StoreError> {
    sql::body(db, "SELECT body FROM grants WHERE jti = $1", args![jti])
}
