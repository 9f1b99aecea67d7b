//! `Store` for SQLite: each method is one closure run by the writer (in a
//! savepoint, with its audit events) or by a pooled reader.

use super::SqliteStore;
use super::writer::Tx;
use crate::rules::{self, LIVE_TASK_STATES};
use crate::{AgentRevoked, Invocation, SealedValue, Store, StoreError, TaskFilter};
use async_trait::async_trait;
use mandate_audit::{Event, EventKind, NewEvent};
use mandate_core::{
    AdminToken, Agent, AgentName, AgentState, Binding, Grant, Owner, Revocation, RevocationKind,
    Secret, SecretName, Task, TaskId, TaskState, Tool, ToolName, UnixTime,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};
use serde::de::DeserializeOwned;

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// Run an INSERT, turning a uniqueness failure into `Conflict`.
pub(super) fn insert(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    what: &'static str,
    id: &str,
) -> Result<(), StoreError> {
    match conn.prepare_cached(sql)?.execute(p) {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
            what,
            id: id.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn body<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Result<T, StoreError>> {
    let text: String = row.get(idx)?;
    Ok(serde_json::from_str(&text).map_err(StoreError::from))
}

pub(super) fn query_bodies<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, |r| body::<T>(r, 0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn query_body<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Option<T>, StoreError> {
    conn.prepare_cached(sql)?
        .query_row(p, |r| body::<T>(r, 0))
        .optional()?
        .transpose()
}

fn load_task(conn: &Connection, id: &str) -> Result<Task, StoreError> {
    query_body(conn, "SELECT body FROM tasks WHERE id = ?1", [id])?.ok_or_else(|| {
        StoreError::NotFound {
            what: "task",
            id: id.to_owned(),
        }
    })
}

fn save_task(conn: &Connection, task: &Task) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE tasks SET state = ?2, body = ?3 WHERE id = ?1")?
        .execute(params![
            task.id.as_str(),
            task.state.as_str(),
            serde_json::to_string(task)?
        ])?;
    Ok(())
}

fn add_revocation(
    conn: &Connection,
    kind: RevocationKind,
    id: &str,
    now: UnixTime,
    expires_at: UnixTime,
) -> Result<Revocation, StoreError> {
    conn.prepare_cached(
        "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![kind.as_str(), id, now, expires_at])?;
    Ok(Revocation {
        seq: conn.last_insert_rowid() as u64,
        kind,
        id: id.to_owned(),
        revoked_at: now,
        expires_at,
    })
}

fn transition(
    t: &mut Tx<'_>,
    task: &mut Task,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Option<Revocation>, StoreError> {
    task.transition(to, now)?;
    save_task(t.conn, task)?;
    let rev = if matches!(to, TaskState::Revoked | TaskState::Completed) {
        Some(add_revocation(
            t.conn,
            RevocationKind::Task,
            task.id.as_str(),
            now,
            task.deadline,
        )?)
    } else {
        None
    };
    t.audit(ev)?;
    Ok(rev)
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let kind: String = r.get(2)?;
    let reasons: String = r.get(9)?;
    let kind = match rules::event_kind(&kind) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let reasons = match serde_json::from_str(&reasons) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(Ok(Event {
        seq: r.get::<_, i64>(0)? as u64,
        time_ms: r.get(1)?,
        kind,
        actor: r.get(3)?,
        agent: r.get(4)?,
        task: r.get(5)?,
        tool: r.get(6)?,
        jti: r.get(7)?,
        decision: r.get(8)?,
        reasons,
        request_id: r.get(10)?,
        detail: r.get(11)?,
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
    }))
}

/// A client's sequence number as SQLite's i64: past `i64::MAX` nothing can
/// follow it, so it saturates (a plain cast would wrap to a negative and
/// replay from the start).
fn sql_seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Read audit events straight from a connection (also used offline by `audit verify`).
const EVENT_COLUMNS: &str = "SELECT seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash FROM events";

pub fn read_events(conn: &Connection, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{EVENT_COLUMNS} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![sql_seq(after), sql_seq(limit as u64)], event_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn revocation_row(r: &Row<'_>) -> rusqlite::Result<Revocation> {
    let kind: String = r.get(1)?;
    Ok(Revocation {
        seq: r.get::<_, i64>(0)? as u64,
        kind: rules::revocation_kind(&kind),
        id: r.get(2)?,
        revoked_at: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_owner(&self, owner: Owner, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            insert(
                t.conn,
                "INSERT INTO owners (name, description, created_at) VALUES (?1, ?2, ?3)",
                params![owner.name.as_str(), owner.description, owner.created_at],
                "owner",
                owner.name.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn list_owners(&self) -> Result<Vec<Owner>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT name, description, created_at FROM owners ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                let name: String = r.get(0)?;
                Ok((name, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, description, created_at) = row?;
                out.push(Owner {
                    name: mandate_core::OwnerName::parse(&name)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    description,
                    created_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_agent(&self, agent: Agent, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let owner_exists: bool = t
                .conn
                .prepare_cached("SELECT 1 FROM owners WHERE name = ?1")?
                .exists([agent.owner.as_str()])?;
            if !owner_exists {
                return Err(StoreError::NotFound {
                    what: "owner",
                    id: agent.owner.to_string(),
                });
            }
            insert(
                t.conn,
                "INSERT INTO agents (name, owner, body, state, created_at) VALUES (?1, ?2, ?3, 'active', ?4)",
                params![agent.name.as_str(), agent.owner.as_str(), serde_json::to_string(&agent)?, agent.created_at],
                "agent",
                agent.name.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        let name = name.to_string();
        self.read(move |c| query_body(c, "SELECT body FROM agents WHERE name = ?1", [name]))
            .await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.read(|c| query_bodies(c, "SELECT body FROM agents ORDER BY name", []))
            .await
    }

    async fn revoke_agent(
        &self,
        name: &AgentName,
        now: UnixTime,
        feed_expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<AgentRevoked, StoreError> {
        let name = name.to_string();
        self.write(move |t| {
            let mut agent: Agent =
                query_body(t.conn, "SELECT body FROM agents WHERE name = ?1", [&name])?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "agent",
                        id: name.clone(),
                    })?;
            agent.state = AgentState::Revoked;
            t.conn
                .prepare_cached("UPDATE agents SET state = 'revoked', body = ?2 WHERE name = ?1")?
                .execute(params![name, serde_json::to_string(&agent)?])?;
            let mut revocations = vec![add_revocation(
                t.conn,
                RevocationKind::Agent,
                &name,
                now,
                feed_expires_at,
            )?];
            let live: Vec<Task> = query_bodies(
                t.conn,
                &format!("SELECT body FROM tasks WHERE agent = ?1 AND state IN {LIVE_TASK_STATES}"),
                [&name],
            )?;
            let mut tasks = Vec::with_capacity(live.len());
            for mut task in live {
                let cev = rules::cascade_event(&ev, EventKind::TaskRevoked, &task);
                if let Some(r) = transition(t, &mut task, TaskState::Revoked, now, cev)? {
                    revocations.push(r);
                }
                tasks.push(task);
            }
            t.audit(ev)?;
            Ok(AgentRevoked {
                agent,
                tasks,
                revocations,
            })
        })
        .await
    }

    async fn add_binding(&self, b: Binding, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let id = format!("{} {}", b.issuer, b.subject);
            insert(
                t.conn,
                "INSERT INTO bindings (agent, issuer, subject, claims) VALUES (?1, ?2, ?3, ?4)",
                params![
                    b.agent.as_str(),
                    b.issuer,
                    b.subject,
                    serde_json::to_string(&b.claims)?
                ],
                "binding",
                &id,
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn bindings_for(&self, issuer: &str, subject: &str) -> Result<Vec<Binding>, StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT agent, issuer, subject, claims FROM bindings WHERE issuer = ?1 AND subject = ?2")?;
            collect_bindings(stmt.query(params![issuer, subject])?)
        })
        .await
    }

    async fn list_bindings(&self, agent: &AgentName) -> Result<Vec<Binding>, StoreError> {
        let agent = agent.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT agent, issuer, subject, claims FROM bindings WHERE agent = ?1",
            )?;
            collect_bindings(stmt.query([agent])?)
        })
        .await
    }

    async fn create_join_token(
        &self,
        hash: String,
        agent: &AgentName,
        expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        let agent = agent.to_string();
        self.write(move |t| {
            insert(
                t.conn,
                "INSERT INTO join_tokens (hash, agent, expires_at) VALUES (?1, ?2, ?3)",
                params![hash, agent, expires_at],
                "join token",
                "(hash)",
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn enroll_agent_key(
        &self,
        hash: String,
        key: serde_json::Value,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Agent, StoreError> {
        self.write(move |t| {
            // Marking it used in the same statement that checks it makes reuse impossible.
            let agent: Option<String> = t
                .conn
                .prepare_cached(
                    "UPDATE join_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING agent",
                )?
                .query_row(params![hash, now], |r| r.get(0))
                .optional()?;
            let agent = agent.ok_or(StoreError::JoinTokenInvalid)?;
            let mut a: Agent = query_body(t.conn, "SELECT body FROM agents WHERE name = ?1", [&agent])?
                .ok_or(StoreError::JoinTokenInvalid)?;
            if !a.is_active() {
                return Err(StoreError::JoinTokenInvalid);
            }
            a.enrolled_key = Some(key);
            t.conn
                .prepare_cached("UPDATE agents SET body = ?2 WHERE name = ?1")?
                .execute(params![agent, serde_json::to_string(&a)?])?;
            t.audit(ev.agent(&a.name))?;
            Ok(a)
        })
        .await
    }

    async fn record_login(
        &self,
        assertion: Option<(String, UnixTime)>,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |t| {
            if let Some((jti, exp)) = assertion {
                match insert(
                    t.conn,
                    "INSERT INTO seen_assertions (jti, expires_at) VALUES (?1, ?2)",
                    params![jti, exp],
                    "assertion",
                    &jti,
                ) {
                    Err(StoreError::Conflict { .. }) => return Err(StoreError::Replay),
                    other => other?,
                }
            }
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn update_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let changed = t
                .conn
                .prepare_cached("UPDATE tools SET body = ?1 WHERE name = ?2 AND audience = ?3")?
                .execute(params![
                    serde_json::to_string(&tool)?,
                    tool.name.as_str(),
                    tool.audience
                ])?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "tool",
                    id: tool.name.to_string(),
                });
            }
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn create_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let owner_exists: bool = t
                .conn
                .prepare_cached("SELECT 1 FROM owners WHERE name = ?1")?
                .exists([tool.owner.as_str()])?;
            if !owner_exists {
                return Err(StoreError::NotFound {
                    what: "owner",
                    id: tool.owner.to_string(),
                });
            }
            let audience_taken: bool = t
                .conn
                .prepare_cached("SELECT 1 FROM tools WHERE audience = ?1")?
                .exists([&tool.audience])?;
            if audience_taken {
                return Err(StoreError::Conflict {
                    what: "tool audience",
                    id: tool.audience.clone(),
                });
            }
            insert(
                t.conn,
                "INSERT INTO tools (name, audience, body, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tool.name.as_str(),
                    tool.audience,
                    serde_json::to_string(&tool)?,
                    tool.created_at
                ],
                "tool",
                tool.name.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>, StoreError> {
        let name = name.to_string();
        self.read(move |c| query_body(c, "SELECT body FROM tools WHERE name = ?1", [name]))
            .await
    }

    async fn list_tools(&self) -> Result<Vec<Tool>, StoreError> {
        self.read(|c| query_bodies(c, "SELECT body FROM tools ORDER BY name", []))
            .await
    }

    async fn create_task(&self, task: Task, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            insert(
                t.conn,
                "INSERT INTO tasks (id, agent, state, deadline, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    task.id.as_str(),
                    task.agent.as_str(),
                    task.state.as_str(),
                    task.deadline,
                    serde_json::to_string(&task)?,
                    task.created_at
                ],
                "task",
                task.id.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let id = id.to_string();
        self.read(move |c| query_body(c, "SELECT body FROM tasks WHERE id = ?1", [id]))
            .await
    }

    async fn list_tasks(&self, f: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |c| {
            let limit = rules::task_page(f.limit);
            query_bodies(
                c,
                "SELECT body FROM tasks WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY created_at DESC, id LIMIT ?3",
                params![f.agent.as_ref().map(|a| a.as_str()), f.state.map(|s| s.as_str()), limit],
            )
        })
        .await
    }

    async fn transition_task(
        &self,
        id: &TaskId,
        to: TaskState,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<(Task, Option<Revocation>), StoreError> {
        let id = id.to_string();
        self.write(move |t| {
            let mut task = load_task(t.conn, &id)?;
            let rev = transition(t, &mut task, to, now, ev)?;
            Ok((task, rev))
        })
        .await
    }

    async fn expire_due_tasks(&self, now: UnixTime) -> Result<Vec<Task>, StoreError> {
        self.write(move |t| {
            let due: Vec<Task> = query_bodies(
                t.conn,
                &format!(
                    "SELECT body FROM tasks WHERE state IN {LIVE_TASK_STATES} AND deadline <= ?1"
                ),
                [now],
            )?;
            let mut out = Vec::with_capacity(due.len());
            for mut task in due {
                let ev = NewEvent::new(EventKind::TaskExpired, "system")
                    .agent(&task.agent)
                    .task(&task.id)
                    .reasons(vec!["deadline passed".into()]);
                transition(t, &mut task, TaskState::Expired, now, ev)?;
                out.push(task);
            }
            Ok(out)
        })
        .await
    }

    async fn insert_grant(&self, grant: Grant, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            insert(
                t.conn,
                "INSERT INTO grants (jti, task, body, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    grant.jti.as_str(),
                    grant.task.as_str(),
                    serde_json::to_string(&grant)?,
                    grant.expires_at
                ],
                "grant",
                grant.jti.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn get_grant(&self, jti: &str) -> Result<Option<Grant>, StoreError> {
        let jti = jti.to_owned();
        self.read(move |c| query_body(c, "SELECT body FROM grants WHERE jti = ?1", [jti]))
            .await
    }

    async fn revoke_by_id(
        &self,
        kind: RevocationKind,
        id: &str,
        expires_at: UnixTime,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Revocation, StoreError> {
        rules::check_revocable_by_id(kind)?;
        let id = id.to_owned();
        self.write(move |t| {
            let r = add_revocation(t.conn, kind, &id, now, expires_at)?;
            t.audit(ev)?;
            Ok(r)
        })
        .await
    }

    async fn revocations_since(
        &self,
        seq: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, id, revoked_at, expires_at FROM revocations WHERE seq > ?1 AND expires_at > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![sql_seq(seq), now, limit], revocation_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn create_admin_token(&self, token: AdminToken, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            insert(
                t.conn,
                "INSERT INTO admin_tokens (id, hash, rights, description, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.id,
                    token.hash,
                    rules::admin_rights_json(&token)?,
                    token.description,
                    token.created_at,
                    token.expires_at
                ],
                "admin token",
                &token.id,
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminToken>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE hash = ?1");
            c.prepare_cached(&sql)?
                .query_row([hash], admin_token_row)
                .optional()?
                .map(admin_token)
                .transpose()
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.read(|c| {
            let sql =
                format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, id");
            let rows = c
                .prepare_cached(&sql)?
                .query_map([], admin_token_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(admin_token).collect()
        })
        .await
    }

    async fn revoke_admin_token(
        &self,
        id: &str,
        at: UnixTime,
        ev: NewEvent,
    ) -> Result<AdminToken, StoreError> {
        let id = id.to_owned();
        self.write(move |t| {
            let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens");
            let all = t
                .conn
                .prepare_cached(&sql)?
                .query_map([], admin_token_row)?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(admin_token)
                .collect::<Result<Vec<_>, _>>()?;
            let mut target = rules::revocable_admin_token(&all, &id, at)?;
            t.conn
                .prepare_cached("UPDATE admin_tokens SET revoked_at = ?1 WHERE id = ?2")?
                .execute(params![at, id])?;
            t.audit(ev)?;
            target.revoked_at = Some(at);
            Ok(target)
        })
        .await
    }

    async fn count_admin_tokens(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM admin_tokens", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
        })
        .await
    }

    async fn data_key(
        &self,
        wrapped: Vec<u8>,
        now: UnixTime,
    ) -> Result<(i64, Vec<u8>), StoreError> {
        self.data_key_impl(wrapped, now).await
    }

    async fn put_secret(
        &self,
        secret: Secret,
        value: SealedValue,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.put_secret_impl(secret, value, ev).await
    }

    async fn rotate_secret(
        &self,
        name: &SecretName,
        expected_version: u32,
        value: SealedValue,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Secret, StoreError> {
        self.rotate_secret_impl(name, expected_version, value, now, ev)
            .await
    }

    async fn get_secret(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        self.get_secret_impl(name).await
    }

    async fn secret_for_tool(
        &self,
        tool: &ToolName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        self.secret_for_tool_impl(tool).await
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError> {
        self.list_secrets_impl().await
    }

    async fn record_secret_use(
        &self,
        name: &SecretName,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.record_secret_use_impl(name, now, ev).await
    }

    async fn ingest_invocations(
        &self,
        source: String,
        batch: Vec<Invocation>,
        now: UnixTime,
    ) -> Result<(usize, usize), StoreError> {
        self.ingest_invocations_impl(source, batch, now).await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        self.write(move |t| {
            for e in events {
                t.audit(e)?;
            }
            Ok(())
        })
        .await
    }

    async fn events_since(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(move |c| read_events(c, after, limit)).await
    }

    async fn last_event(&self) -> Result<Option<Event>, StoreError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("{EVENT_COLUMNS} ORDER BY seq DESC LIMIT 1"))?;
            let mut rows = stmt.query_map([], event_row)?;
            rows.next().transpose()?.transpose()
        })
        .await
    }

    fn close(&self) {
        SqliteStore::close(self)
    }

    async fn prune(&self, now: UnixTime) -> Result<(), StoreError> {
        self.write(move |t| {
            t.conn
                .execute("DELETE FROM join_tokens WHERE expires_at <= ?1", [now])?;
            t.conn
                .execute("DELETE FROM seen_assertions WHERE expires_at <= ?1", [now])?;
            t.conn
                .execute("DELETE FROM revocations WHERE expires_at <= ?1", [now])?;
            Ok(())
        })
        .await
    }
}

fn collect_bindings(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Binding>, StoreError> {
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let agent: String = r.get(0)?;
        let claims: String = r.get(3)?;
        out.push(Binding {
            agent: AgentName::parse(&agent).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            issuer: r.get(1)?,
            subject: r.get(2)?,
            claims: serde_json::from_str(&claims)?,
        });
    }
    Ok(out)
}

const ADMIN_TOKEN_COLUMNS: &str =
    "id, hash, rights, description, created_at, expires_at, revoked_at";

type AdminTokenRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn admin_token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminTokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn admin_token(row: AdminTokenRow) -> Result<AdminToken, StoreError> {
    let (id, hash, rights, description, created_at, expires_at, revoked_at) = row;
    rules::admin_token(
        id,
        hash,
        &rights,
        description,
        created_at,
        expires_at,
        revoked_at,
    )
}
