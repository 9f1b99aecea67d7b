//! Admin tokens: who may administer the broker, stored by hash. Revoked
//! ones stay for the record; the last live root token cannot be revoked.

use crate::sql::{self, Row, Sql, Write, args};
use crate::{StoreError, rules};
use mandate_audit::NewEvent;
use mandate_core::{AdminRight, AdminToken, AgentName, UnixTime};

const SELECT: &str = "SELECT id, hash, rights, description, created_at, expires_at, revoked_at, agent FROM admin_tokens";

/// `rights` is stored as a JSON array of right names.
fn token(r: &Row) -> Result<AdminToken, StoreError> {
    let names: Vec<String> = r.json(2)?;
    Ok(AdminToken {
        id: r.get(0)?,
        hash: r.get(1)?,
        rights: names
            .iter()
            .map(|n| AdminRight::parse(n).map_err(StoreError::corrupt))
            .collect::<Result<_, _>>()?,
        description: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        agent: r
            .get::<Option<String>>(7)?
            .map(|a| AgentName::parse(&a).map_err(StoreError::corrupt))
            .transpose()?,
    })
}

/// Unique by id and by hash.
pub(crate) fn create(w: &mut dyn Write, t: &AdminToken, ev: NewEvent) -> Result<(), StoreError> {
    let rights: Vec<&str> = t.rights.iter().map(|r| r.as_str()).collect();
    sql::insert(
        w,
        "INSERT INTO admin_tokens (id, hash, rights, description, created_at, expires_at, agent) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            &t.id,
            &t.hash,
            &serde_json::to_string(&rights)?,
            &t.description,
            t.created_at,
            t.expires_at,
            t.agent.as_ref().map(|a| a.as_str())
        ],
        "admin token",
        &t.id,
    )?;
    w.audit(ev)
}

pub(crate) fn by_hash(db: &mut dyn Sql, hash: &str) -> Result<Option<AdminToken>, StoreError> {
    sql::first(db, &format!("{SELECT} WHERE hash = $1"), args![hash])?
        .map(|r| token(&r))
        .transpose()
}

/// Oldest first, then by id in byte order (see `sql`); revoked ones included.
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<AdminToken>, StoreError> {
    let mut tokens = db
        .query(SELECT, &[])?
        .iter()
        .map(token)
        .collect::<Result<Vec<_>, _>>()?;
    tokens.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
    Ok(tokens)
}

/// Revoke the live token `id` at `at`: `NotFound` if there is no such live
/// token, `Refused` if it is the last live root token.
pub(crate) fn revoke(
    w: &mut dyn Write,
    id: &str,
    at: UnixTime,
    ev: NewEvent,
) -> Result<AdminToken, StoreError> {
    let mut target = rules::revocable_admin_token(&list(w)?, id, at)?;
    w.exec(
        "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2",
        args![at, id],
    )?;
    w.audit(ev)?;
    target.revoked_at = Some(at);
    Ok(target)
}

/// Revoked ones included.
pub(crate) fn count(db: &mut dyn Sql) -> Result<u64, StoreError> {
    let n: i64 = sql::first(db, "SELECT COUNT(*) FROM admin_tokens", &[])?
        .map(|r| r.get(0))
        .transpose()?
        .unwrap_or(0);
    Ok(n as u64)
}
