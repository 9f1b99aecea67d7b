//! The revocation feed: what relying parties must stop accepting, in the
//! order it was revoked (`seq`), each entry kept until every token it
//! covers has expired anyway.

use crate::sql::{self, Sql, Write, args};
use crate::{StoreError, rules};
use mandate_audit::NewEvent;
use mandate_core::{Revocation, RevocationKind, UnixTime};

/// Append one entry; its `seq` is the feed's next.
pub(crate) fn add(
    db: &mut dyn Sql,
    kind: RevocationKind,
    id: &str,
    now: UnixTime,
    expires_at: UnixTime,
) -> Result<Revocation, StoreError> {
    let row = sql::first(
        db,
        "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING seq",
        args![kind.as_str(), id, now, expires_at],
    )?
    .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?;
    Ok(Revocation {
        seq: row.get::<i64>(0)? as u64,
        kind,
        id: id.to_owned(),
        revoked_at: now,
        expires_at,
    })
}

/// One token (`Token`, by `jti`) or signing key (`Key`, by `kid`); tasks
/// and agents are revoked by their own state change.
pub(crate) fn revoke_by_id(
    w: &mut dyn Write,
    kind: RevocationKind,
    id: &str,
    expires_at: UnixTime,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Revocation, StoreError> {
    rules::check_revocable_by_id(kind)?;
    let entry = add(w, kind, id, now, expires_at)?;
    w.audit(ev)?;
    Ok(entry)
}

/// Up to `limit` entries after `seq` still in force at `now`, by `seq`.
pub(crate) fn since(
    db: &mut dyn Sql,
    seq: u64,
    now: UnixTime,
    limit: u32,
) -> Result<Vec<Revocation>, StoreError> {
    db.query(
        "SELECT seq, kind, id, revoked_at, expires_at FROM revocations
         WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3",
        args![sql::bigint(seq), now, limit],
    )?
    .iter()
    .map(|r| {
        Ok(Revocation {
            seq: r.get::<i64>(0)? as u64,
            kind: kind(r.text(1)?),
            id: r.get(2)?,
            revoked_at: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })
    .collect()
}

fn kind(stored: &str) -> RevocationKind {
    match stored {
        "token" => RevocationKind::Token,
        "task" => RevocationKind::Task,
        "key" => RevocationKind::Key,
        _ => RevocationKind::Agent,
    }
}

/// Forget entries whose tokens have all expired.
pub(crate) fn forget_expired(w: &mut dyn Write, now: UnixTime) -> Result<(), StoreError> {
    w.exec("DELETE FROM revocations WHERE expires_at <= $1", args![now])?;
    Ok(())
}
