//! Secrets (sealed values, data keys) and proxy audit ingestion for SQLite.
//! Called from the `Store` impl in `ops.rs`.

use super::SqliteStore;
use super::ops::{insert, query_bodies};
use crate::{Invocation, SealedValue, StoreError};
use mandate_audit::NewEvent;
use mandate_core::{Secret, SecretName, ToolName, UnixTime};
use rusqlite::{Connection, OptionalExtension, params};

const SELECT: &str = "SELECT body, last_used_at, data_key, sealed FROM secrets";

fn load(
    conn: &Connection,
    filter: &str,
    key: &str,
) -> Result<Option<(Secret, SealedValue)>, StoreError> {
    let row = conn
        .prepare_cached(&format!("{SELECT} WHERE {filter} = ?1"))?
        .query_row([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    let Some((body, last_used_at, data_key, bytes)) = row else {
        return Ok(None);
    };
    let mut secret: Secret = serde_json::from_str(&body)?;
    secret.last_used_at = last_used_at;
    Ok(Some((secret, SealedValue { data_key, bytes })))
}

impl SqliteStore {
    pub(super) async fn data_key_impl(
        &self,
        wrapped: Vec<u8>,
        now: UnixTime,
    ) -> Result<(i64, Vec<u8>), StoreError> {
        self.write(move |t| {
            let existing = t
                .conn
                .query_row(
                    "SELECT id, wrapped FROM data_keys ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?;
            if let Some(k) = existing {
                return Ok(k);
            }
            t.conn.execute(
                "INSERT INTO data_keys (wrapped, created_at) VALUES (?1, ?2)",
                params![wrapped, now],
            )?;
            Ok((t.conn.last_insert_rowid(), wrapped))
        })
        .await
    }

    pub(super) async fn put_secret_impl(
        &self,
        secret: Secret,
        value: SealedValue,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |t| {
            let tool_exists = t
                .conn
                .prepare_cached("SELECT 1 FROM tools WHERE name = ?1")?
                .exists([secret.tool.as_str()])?;
            if !tool_exists {
                return Err(StoreError::NotFound {
                    what: "tool",
                    id: secret.tool.to_string(),
                });
            }
            let owner_exists = t
                .conn
                .prepare_cached("SELECT 1 FROM owners WHERE name = ?1")?
                .exists([secret.owner.as_str()])?;
            if !owner_exists {
                return Err(StoreError::NotFound {
                    what: "owner",
                    id: secret.owner.to_string(),
                });
            }
            let taken: Option<String> = t
                .conn
                .prepare_cached("SELECT name FROM secrets WHERE tool = ?1")?
                .query_row([secret.tool.as_str()], |r| r.get(0))
                .optional()?;
            if let Some(other) = taken.filter(|n| n != secret.name.as_str()) {
                return Err(StoreError::Conflict {
                    what: "secret for this tool",
                    id: other,
                });
            }
            insert(
                t.conn,
                "INSERT INTO secrets (name, tool, body, version, data_key, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    secret.name.as_str(),
                    secret.tool.as_str(),
                    serde_json::to_string(&secret)?,
                    secret.version,
                    value.data_key,
                    value.bytes
                ],
                "secret",
                secret.name.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn rotate_secret_impl(
        &self,
        name: &SecretName,
        expected_version: u32,
        value: SealedValue,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Secret, StoreError> {
        let name = name.to_string();
        self.write(move |t| {
            let (mut secret, _) =
                load(t.conn, "name", &name)?.ok_or_else(|| StoreError::NotFound {
                    what: "secret",
                    id: name.clone(),
                })?;
            if secret.version != expected_version {
                return Err(StoreError::Conflict {
                    what: "secret version (rotated concurrently)",
                    id: format!("{name}@{}", secret.version),
                });
            }
            secret.version += 1;
            secret.rotated_at = Some(now);
            t.conn
                .prepare_cached(
                    "UPDATE secrets SET body = ?2, version = ?3, data_key = ?4, sealed = ?5 WHERE name = ?1",
                )?
                .execute(params![
                    name,
                    serde_json::to_string(&secret)?,
                    secret.version,
                    value.data_key,
                    value.bytes
                ])?;
            t.audit(ev)?;
            Ok(secret)
        })
        .await
    }

    pub(super) async fn get_secret_impl(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        let name = name.to_string();
        self.read(move |c| load(c, "name", &name)).await
    }

    pub(super) async fn secret_for_tool_impl(
        &self,
        tool: &ToolName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        let tool = tool.to_string();
        self.read(move |c| load(c, "tool", &tool)).await
    }

    pub(super) async fn list_secrets_impl(&self) -> Result<Vec<Secret>, StoreError> {
        self.read(|c| {
            let mut used = std::collections::HashMap::new();
            let mut stmt = c.prepare_cached("SELECT name, last_used_at FROM secrets")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                used.insert(r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?);
            }
            let mut all: Vec<Secret> =
                query_bodies(c, "SELECT body FROM secrets ORDER BY name", [])?;
            for s in &mut all {
                s.last_used_at = used.get(s.name.as_str()).copied().flatten();
            }
            Ok(all)
        })
        .await
    }

    pub(super) async fn record_secret_use_impl(
        &self,
        name: &SecretName,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        let name = name.as_str().to_owned();
        self.write(move |t| {
            t.conn
                .prepare_cached(
                    "UPDATE secrets SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE name = ?1",
                )?
                .execute(params![name, now])?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn ingest_invocations_impl(
        &self,
        source: String,
        batch: Vec<Invocation>,
        now: UnixTime,
    ) -> Result<(usize, usize), StoreError> {
        self.write(move |t| {
            let high: Option<i64> = t
                .conn
                .prepare_cached("SELECT seq FROM ingest_sources WHERE source = ?1")?
                .query_row([&source], |r| r.get(0))
                .optional()?;
            let plan = crate::rules::plan_ingest(high, batch)?;
            let accepted = plan.events.len();
            for e in plan.events {
                t.audit(e)?;
            }
            for tool in plan.used_tools {
                t.conn
                    .prepare_cached(
                        "UPDATE secrets SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE tool = ?1",
                    )?
                    .execute(params![tool, now])?;
            }
            if let Some(h) = plan.high {
                t.conn
                    .prepare_cached(
                        "INSERT INTO ingest_sources (source, seq, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                    )?
                    .execute(params![source, h, now])?;
            }
            Ok((accepted, plan.duplicates))
        })
        .await
    }
}
