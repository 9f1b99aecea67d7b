//! Secrets: upstream credentials, one per tool, stored sealed under a
//! data key the store keeps wrapped. Metadata (`body`) and value are
//! written together; when one was last used is a column of its own,
//! overriding whatever the body says.

use crate::sql::{self, Row, Sql, Write, args};
use crate::{SealedValue, StoreError, owners, tools};
use mandate_audit::NewEvent;
use mandate_core::{Secret, SecretClass, SecretName, ToolName, UnixTime};

/// The newest data key, or `wrapped` stored as the first.
pub(crate) fn data_key(
    w: &mut dyn Write,
    wrapped: Vec<u8>,
    now: UnixTime,
) -> Result<(i64, Vec<u8>), StoreError> {
    if let Some(r) = sql::first(
        w,
        "SELECT id, wrapped FROM data_keys ORDER BY id DESC LIMIT 1",
        &[],
    )? {
        return Ok((r.get(0)?, r.get(1)?));
    }
    let id = sql::first(
        w,
        "INSERT INTO data_keys (wrapped, created_at) VALUES ($1, $2) RETURNING id",
        args![&wrapped, now],
    )?
    .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?
    .get(0)?;
    Ok((id, wrapped))
}

/// A new secret for a tool that has none; `Conflict` on its name or tool.
pub(crate) fn put(
    w: &mut dyn Write,
    secret: &Secret,
    value: &SealedValue,
    ev: NewEvent,
) -> Result<(), StoreError> {
    if !tools::exists(w, secret.tool.as_str())? {
        return Err(StoreError::NotFound {
            what: "tool",
            id: secret.tool.to_string(),
        });
    }
    owners::require(w, &secret.owner)?;
    if let Some(other) = sql::first(
        w,
        "SELECT name FROM secrets WHERE tool = $1",
        args![secret.tool.as_str()],
    )? && other.text(0)? != secret.name.as_str()
    {
        return Err(StoreError::Conflict {
            what: "secret for this tool",
            id: other.get(0)?,
        });
    }
    sql::insert(
        w,
        "INSERT INTO secrets (name, tool, body, version, data_key, sealed) VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            secret.name.as_str(),
            secret.tool.as_str(),
            &serde_json::to_string(secret)?,
            secret.version,
            value.data_key,
            &value.bytes
        ],
        "secret",
        secret.name.as_str(),
    )?;
    w.audit(ev)
}

/// Replace the value of the secret at `expected_version`, which becomes
/// `expected_version + 1`; `Conflict` if it is at another version.
pub(crate) fn rotate(
    w: &mut dyn Write,
    name: &SecretName,
    expected_version: u32,
    class: Option<SecretClass>,
    value: &SealedValue,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Secret, StoreError> {
    let (mut secret, _) = by_name(w, name)?.ok_or_else(|| StoreError::NotFound {
        what: "secret",
        id: name.to_string(),
    })?;
    if secret.version != expected_version {
        return Err(StoreError::Conflict {
            what: "secret version (rotated concurrently)",
            id: format!("{name}@{}", secret.version),
        });
    }
    if let Some(class) = class {
        secret.reclassify(class)?;
    }
    secret.version += 1;
    secret.rotated_at = Some(now);
    w.exec(
        "UPDATE secrets SET body = $2, version = $3, data_key = $4, sealed = $5 WHERE name = $1",
        args![
            name.as_str(),
            &serde_json::to_string(&secret)?,
            secret.version,
            value.data_key,
            &value.bytes
        ],
    )?;
    w.audit(ev)?;
    Ok(secret)
}

pub(crate) fn delete(
    w: &mut dyn Write,
    name: &SecretName,
    ev: NewEvent,
) -> Result<Secret, StoreError> {
    let (secret, _) = by_name(w, name)?.ok_or_else(|| StoreError::NotFound {
        what: "secret",
        id: name.to_string(),
    })?;
    w.exec("DELETE FROM secrets WHERE name = $1", args![name.as_str()])?;
    w.audit(ev)?;
    Ok(secret)
}

const SELECT: &str = "SELECT body, last_used_at, data_key, sealed FROM secrets";

fn with_value(r: &Row) -> Result<(Secret, SealedValue), StoreError> {
    Ok((
        metadata(r)?,
        SealedValue {
            data_key: r.get(2)?,
            bytes: r.get(3)?,
        },
    ))
}

/// The body with its `last_used_at` column.
fn metadata(r: &Row) -> Result<Secret, StoreError> {
    let mut secret: Secret = r.json(0)?;
    secret.last_used_at = r.get(1)?;
    Ok(secret)
}

pub(crate) fn by_name(
    db: &mut dyn Sql,
    name: &SecretName,
) -> Result<Option<(Secret, SealedValue)>, StoreError> {
    sql::first(
        db,
        &format!("{SELECT} WHERE name = $1"),
        args![name.as_str()],
    )?
    .map(|r| with_value(&r))
    .transpose()
}

pub(crate) fn for_tool(
    db: &mut dyn Sql,
    tool: &ToolName,
) -> Result<Option<(Secret, SealedValue)>, StoreError> {
    sql::first(
        db,
        &format!("{SELECT} WHERE tool = $1"),
        args![tool.as_str()],
    )?
    .map(|r| with_value(&r))
    .transpose()
}

/// By name, in byte order (see `sql`), without values.
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<Secret>, StoreError> {
    let mut secrets = db
        .query("SELECT body, last_used_at FROM secrets", &[])?
        .iter()
        .map(metadata)
        .collect::<Result<Vec<_>, _>>()?;
    secrets.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(secrets)
}

/// A value handed out: the secret was used at `now` (never moved back).
pub(crate) fn record_use(
    w: &mut dyn Write,
    name: &SecretName,
    now: UnixTime,
    ev: NewEvent,
) -> Result<(), StoreError> {
    w.exec(
        "UPDATE secrets SET last_used_at = $2
         WHERE name = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        args![name.as_str(), now],
    )?;
    w.audit(ev)
}

/// A proxy used the secret of `tool` at `now` (never moved back).
pub(crate) fn mark_used_by_tool(
    w: &mut dyn Write,
    tool: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    w.exec(
        "UPDATE secrets SET last_used_at = $2
         WHERE tool = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        args![tool, now],
    )?;
    Ok(())
}
