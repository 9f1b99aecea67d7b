//! Secrets (sealed values, data keys) and proxy audit ingestion for
//! PostgreSQL. Called from the `Store` impl in `ops.rs`.

use super::PostgresStore;
use super::ops::{bodies, col};
use crate::rules;
use crate::{Invocation, SealedValue, StoreError};
use mandate_audit::NewEvent;
use mandate_core::{Secret, SecretName, UnixTime};

impl PostgresStore {
    pub(super) async fn data_key_impl(
        &self,
        wrapped: Vec<u8>,
        now: UnixTime,
    ) -> Result<(i64, Vec<u8>), StoreError> {
        self.write(move |t| {
            if let Some(r) = t.db()?.opt(
                "SELECT id, wrapped FROM data_keys ORDER BY id DESC LIMIT 1",
                &[],
            )? {
                return Ok((col(&r, 0)?, col(&r, 1)?));
            }
            let rows = t.db()?.query(
                "INSERT INTO data_keys (wrapped, created_at) VALUES ($1, $2) RETURNING id",
                &[&wrapped, &now],
            )?;
            let id = rows
                .first()
                .map(|r| col(r, 0))
                .transpose()?
                .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?;
            Ok((id, wrapped))
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
            if !t.db()?.exists("SELECT 1 FROM tools WHERE name = $1", &[&secret.tool.as_str()])? {
                return Err(StoreError::NotFound {
                    what: "tool",
                    id: secret.tool.to_string(),
                });
            }
            if !t.db()?.exists("SELECT 1 FROM owners WHERE name = $1", &[&secret.owner.as_str()])? {
                return Err(StoreError::NotFound {
                    what: "owner",
                    id: secret.owner.to_string(),
                });
            }
            let taken = t.db()?.opt("SELECT name FROM secrets WHERE tool = $1", &[&secret.tool.as_str()])?;
            if let Some(other) = taken.as_ref().map(|r| col::<String>(r, 0)).transpose()?
                && other != secret.name.as_str()
            {
                return Err(StoreError::Conflict {
                    what: "secret for this tool",
                    id: other,
                });
            }
            t.db()?.insert(
                "INSERT INTO secrets (name, tool, body, version, data_key, sealed) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &secret.name.as_str(),
                    &secret.tool.as_str(),
                    &serde_json::to_string(&secret)?,
                    &i64::from(secret.version),
                    &value.data_key,
                    &value.bytes,
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
            let row = t.db()?.opt("SELECT body FROM secrets WHERE name = $1 FOR UPDATE", &[&name])?
                .ok_or_else(|| StoreError::NotFound {
                    what: "secret",
                    id: name.clone(),
                })?;
            let mut secret: Secret = serde_json::from_str(col(&row, 0)?)?;
            if secret.version != expected_version {
                return Err(StoreError::Conflict {
                    what: "secret version (rotated concurrently)",
                    id: format!("{name}@{}", secret.version),
                });
            }
            secret.version += 1;
            secret.rotated_at = Some(now);
            t.db()?.exec(
                "UPDATE secrets SET body = $2, version = $3, data_key = $4, sealed = $5 WHERE name = $1",
                &[
                    &name,
                    &serde_json::to_string(&secret)?,
                    &i64::from(secret.version),
                    &value.data_key,
                    &value.bytes,
                ],
            )?;
            t.audit(ev)?;
            Ok(secret)
        })
        .await
    }

    /// The secret whose `column` (`name` or `tool`) is `key`, with its value.
    pub(super) async fn secret_by(
        &self,
        column: &'static str,
        key: &str,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        let key = key.to_owned();
        self.read(move |db| {
            let sql = format!(
                "SELECT body, last_used_at, data_key, sealed FROM secrets WHERE {column} = $1"
            );
            let Some(r) = db.opt(&sql, &[&key])? else {
                return Ok(None);
            };
            let mut secret: Secret = serde_json::from_str(col(&r, 0)?)?;
            secret.last_used_at = col(&r, 1)?;
            let value = SealedValue {
                data_key: col(&r, 2)?,
                bytes: col(&r, 3)?,
            };
            Ok(Some((secret, value)))
        })
        .await
    }

    pub(super) async fn list_secrets_impl(&self) -> Result<Vec<Secret>, StoreError> {
        self.read(|db| {
            let mut used = std::collections::HashMap::new();
            for r in db.query("SELECT name, last_used_at FROM secrets", &[])? {
                used.insert(col::<String>(&r, 0)?, col::<Option<i64>>(&r, 1)?);
            }
            let mut all: Vec<Secret> = bodies(db, "SELECT body FROM secrets ORDER BY name", &[])?;
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
            t.db()?.exec(
                "UPDATE secrets SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE name = $1",
                &[&name, &now],
            )?;
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
            let high = t.db()?.opt("SELECT seq FROM ingest_sources WHERE source = $1", &[&source])?
                .map(|r| col::<i64>(&r, 0))
                .transpose()?;
            let plan = rules::plan_ingest(high, batch)?;
            let accepted = plan.events.len();
            for e in plan.events {
                t.audit(e)?;
            }
            for tool in plan.used_tools {
                t.db()?.exec(
                    "UPDATE secrets SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE tool = $1",
                    &[&tool, &now],
                )?;
            }
            if let Some(h) = plan.high {
                t.db()?.exec(
                    "INSERT INTO ingest_sources (source, seq, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (source) DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at",
                    &[&source, &h, &now],
                )?;
            }
            Ok((accepted, plan.duplicates))
        })
        .await
    }
}
