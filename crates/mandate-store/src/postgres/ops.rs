//! `Store` for PostgreSQL: each method is one closure run by the writer (in
//! a savepoint, with its audit events) or on a pooled reader. Same SQL as
//! the SQLite backend but for placeholders and `RETURNING`.

use super::PostgresStore;
use super::db::Db;
use super::writer::Tx;
use crate::rules::{self, LIVE_TASK_STATES};
use crate::{AgentRevoked, Invocation, SealedValue, Store, StoreError, TaskFilter};
use async_trait::async_trait;
use mandate_audit::{Event, EventKind, NewEvent};
use mandate_core::{
    AdminToken, Agent, AgentName, AgentState, Binding, Grant, Owner, OwnerName, Revocation,
    RevocationKind, Secret, SecretName, Task, TaskId, TaskState, Tool, ToolName, UnixTime,
};
use postgres::types::FromSql;
use postgres::{GenericClient, Row};
use serde::de::DeserializeOwned;

/// A column, or `Corrupt` if it is not what the schema says (never a panic).
pub(super) fn col<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

pub(super) fn bodies<T: DeserializeOwned, C: GenericClient>(
    db: &mut Db<'_, C>,
    sql: &str,
    p: super::db::Params<'_>,
) -> Result<Vec<T>, StoreError> {
    db.query(sql, p)?
        .iter()
        .map(|r| Ok(serde_json::from_str(col::<&str>(r, 0)?)?))
        .collect()
}

fn body<T: DeserializeOwned, C: GenericClient>(
    db: &mut Db<'_, C>,
    sql: &str,
    p: super::db::Params<'_>,
) -> Result<Option<T>, StoreError> {
    db.opt(sql, p)?
        .map(|r| Ok(serde_json::from_str(col::<&str>(&r, 0)?)?))
        .transpose()
}

/// A client's sequence number as PostgreSQL's BIGINT, saturating.
fn sql_seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn save_task(t: &mut Tx<'_, '_>, task: &Task) -> Result<(), StoreError> {
    t.db()?.exec(
        "UPDATE tasks SET state = $2, body = $3 WHERE id = $1",
        &[
            &task.id.as_str(),
            &task.state.as_str(),
            &serde_json::to_string(task)?,
        ],
    )?;
    Ok(())
}

fn add_revocation(
    t: &mut Tx<'_, '_>,
    kind: RevocationKind,
    id: &str,
    now: UnixTime,
    expires_at: UnixTime,
) -> Result<Revocation, StoreError> {
    let row = t.db()?.query(
        "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING seq",
        &[&kind.as_str(), &id, &now, &expires_at],
    )?;
    let seq: i64 = row.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
    Ok(Revocation {
        seq: seq as u64,
        kind,
        id: id.to_owned(),
        revoked_at: now,
        expires_at,
    })
}

fn transition(
    t: &mut Tx<'_, '_>,
    task: &mut Task,
    to: TaskState,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Option<Revocation>, StoreError> {
    task.transition(to, now)?;
    save_task(t, task)?;
    let rev = if matches!(to, TaskState::Revoked | TaskState::Completed) {
        Some(add_revocation(
            t,
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

/// Up to `limit` events after `after`, in chain order.
const EVENT_COLUMNS: &str = "SELECT seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash FROM events";

pub(super) fn read_events<C: GenericClient>(
    db: &mut Db<'_, C>,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    db.query(
        &format!("{EVENT_COLUMNS} WHERE seq > $1 ORDER BY seq LIMIT $2"),
        &[&sql_seq(after), &sql_seq(limit as u64)],
    )?
    .iter()
    .map(event)
    .collect()
}

fn event(r: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        seq: col::<i64>(r, 0)? as u64,
        time_ms: col(r, 1)?,
        kind: rules::event_kind(col(r, 2)?)?,
        actor: col(r, 3)?,
        agent: col(r, 4)?,
        task: col(r, 5)?,
        tool: col(r, 6)?,
        jti: col(r, 7)?,
        decision: col(r, 8)?,
        reasons: serde_json::from_str(col(r, 9)?)?,
        request_id: col(r, 10)?,
        detail: col(r, 11)?,
        prev_hash: col(r, 12)?,
        hash: col(r, 13)?,
    })
}

fn binding(r: &Row) -> Result<Binding, StoreError> {
    Ok(Binding {
        agent: AgentName::parse(col(r, 0)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        issuer: col(r, 1)?,
        subject: col(r, 2)?,
        claims: serde_json::from_str(col(r, 3)?)?,
    })
}

const ADMIN_TOKEN_SELECT: &str =
    "SELECT id, hash, rights, description, created_at, expires_at, revoked_at FROM admin_tokens";

fn admin_token(r: &Row) -> Result<AdminToken, StoreError> {
    rules::admin_token(
        col(r, 0)?,
        col(r, 1)?,
        col(r, 2)?,
        col(r, 3)?,
        col(r, 4)?,
        col(r, 5)?,
        col(r, 6)?,
    )
}

fn owner_exists<C: GenericClient>(db: &mut Db<'_, C>, owner: &str) -> Result<(), StoreError> {
    if db.exists("SELECT 1 FROM owners WHERE name = $1", &[&owner])? {
        Ok(())
    } else {
        Err(StoreError::NotFound {
            what: "owner",
            id: owner.to_owned(),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_owner(&self, owner: Owner, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            t.db()?.insert(
                "INSERT INTO owners (name, description, created_at) VALUES ($1, $2, $3)",
                &[&owner.name.as_str(), &owner.description, &owner.created_at],
                "owner",
                owner.name.as_str(),
            )?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn list_owners(&self) -> Result<Vec<Owner>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT name, description, created_at FROM owners ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Owner {
                    name: OwnerName::parse(col(r, 0)?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    description: col(r, 1)?,
                    created_at: col(r, 2)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn create_agent(&self, agent: Agent, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            owner_exists(t.db()?, agent.owner.as_str())?;
            t.db()?.insert(
                "INSERT INTO agents (name, owner, body, state, created_at) VALUES ($1, $2, $3, 'active', $4)",
                &[&agent.name.as_str(), &agent.owner.as_str(), &serde_json::to_string(&agent)?, &agent.created_at],
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
        self.read(move |db| body(db, "SELECT body FROM agents WHERE name = $1", &[&name]))
            .await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.read(|db| bodies(db, "SELECT body FROM agents ORDER BY name", &[]))
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
            let mut agent: Agent = body(t.db()?, "SELECT body FROM agents WHERE name = $1", &[&name])?
                .ok_or_else(|| StoreError::NotFound { what: "agent", id: name.clone() })?;
            agent.state = AgentState::Revoked;
            t.db()?.exec(
                "UPDATE agents SET state = 'revoked', body = $2 WHERE name = $1",
                &[&name, &serde_json::to_string(&agent)?],
            )?;
            let mut revocations = vec![add_revocation(t, RevocationKind::Agent, &name, now, feed_expires_at)?];
            let live: Vec<Task> = bodies(
                t.db()?,
                &format!("SELECT body FROM tasks WHERE agent = $1 AND state IN {LIVE_TASK_STATES} ORDER BY id"),
                &[&name],
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
            Ok(AgentRevoked { agent, tasks, revocations })
        })
        .await
    }

    async fn add_binding(&self, b: Binding, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let id = format!("{} {}", b.issuer, b.subject);
            t.db()?.insert(
                "INSERT INTO bindings (agent, issuer, subject, claims) VALUES ($1, $2, $3, $4)",
                &[
                    &b.agent.as_str(),
                    &b.issuer,
                    &b.subject,
                    &serde_json::to_string(&b.claims)?,
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
        self.read(move |db| {
            db.query(
                "SELECT agent, issuer, subject, claims FROM bindings WHERE issuer = $1 AND subject = $2 ORDER BY id",
                &[&issuer, &subject],
            )?
            .iter()
            .map(binding)
            .collect()
        })
        .await
    }

    async fn list_bindings(&self, agent: &AgentName) -> Result<Vec<Binding>, StoreError> {
        let agent = agent.to_string();
        self.read(move |db| {
            db.query(
                "SELECT agent, issuer, subject, claims FROM bindings WHERE agent = $1 ORDER BY id",
                &[&agent],
            )?
            .iter()
            .map(binding)
            .collect()
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
            t.db()?.insert(
                "INSERT INTO join_tokens (hash, agent, expires_at) VALUES ($1, $2, $3)",
                &[&hash, &agent, &expires_at],
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
            let row = t.db()?.opt(
                "UPDATE join_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING agent",
                &[&hash, &now],
            )?;
            let agent: String = row.as_ref().map(|r| col(r, 0)).transpose()?.ok_or(StoreError::JoinTokenInvalid)?;
            let mut a: Agent = body(t.db()?, "SELECT body FROM agents WHERE name = $1", &[&agent])?
                .ok_or(StoreError::JoinTokenInvalid)?;
            if !a.is_active() {
                return Err(StoreError::JoinTokenInvalid);
            }
            a.enrolled_key = Some(key);
            t.db()?.exec(
                "UPDATE agents SET body = $2 WHERE name = $1",
                &[&agent, &serde_json::to_string(&a)?],
            )?;
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
                match t.db()?.insert(
                    "INSERT INTO seen_assertions (jti, expires_at) VALUES ($1, $2)",
                    &[&jti, &exp],
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

    async fn create_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            owner_exists(t.db()?, tool.owner.as_str())?;
            if t.db()?
                .exists("SELECT 1 FROM tools WHERE audience = $1", &[&tool.audience])?
            {
                return Err(StoreError::Conflict {
                    what: "tool audience",
                    id: tool.audience.clone(),
                });
            }
            t.db()?.insert(
                "INSERT INTO tools (name, audience, body, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &tool.name.as_str(),
                    &tool.audience,
                    &serde_json::to_string(&tool)?,
                    &tool.created_at,
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
        self.read(move |db| body(db, "SELECT body FROM tools WHERE name = $1", &[&name]))
            .await
    }

    async fn update_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            let changed = t.db()?.exec(
                "UPDATE tools SET body = $1 WHERE name = $2 AND audience = $3",
                &[
                    &serde_json::to_string(&tool)?,
                    &tool.name.as_str(),
                    &tool.audience,
                ],
            )?;
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

    async fn list_tools(&self) -> Result<Vec<Tool>, StoreError> {
        self.read(|db| bodies(db, "SELECT body FROM tools ORDER BY name", &[]))
            .await
    }

    async fn create_task(&self, task: Task, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            t.db()?.insert(
                "INSERT INTO tasks (id, agent, state, deadline, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &task.id.as_str(),
                    &task.agent.as_str(),
                    &task.state.as_str(),
                    &task.deadline,
                    &serde_json::to_string(&task)?,
                    &task.created_at,
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
        self.read(move |db| body(db, "SELECT body FROM tasks WHERE id = $1", &[&id]))
            .await
    }

    async fn list_tasks(&self, f: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |db| {
            bodies(
                db,
                "SELECT body FROM tasks WHERE ($1::TEXT IS NULL OR agent = $1) AND ($2::TEXT IS NULL OR state = $2)
                 ORDER BY created_at DESC, id LIMIT $3",
                &[
                    &f.agent.as_ref().map(|a| a.as_str()),
                    &f.state.map(|s| s.as_str()),
                    &rules::task_page(f.limit),
                ],
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
            let mut task: Task = body(t.db()?, "SELECT body FROM tasks WHERE id = $1", &[&id])?
                .ok_or_else(|| StoreError::NotFound {
                    what: "task",
                    id: id.clone(),
                })?;
            let rev = transition(t, &mut task, to, now, ev)?;
            Ok((task, rev))
        })
        .await
    }

    async fn expire_due_tasks(&self, now: UnixTime) -> Result<Vec<Task>, StoreError> {
        self.write(move |t| {
            let due: Vec<Task> = bodies(
                t.db()?,
                &format!("SELECT body FROM tasks WHERE state IN {LIVE_TASK_STATES} AND deadline <= $1 ORDER BY id"),
                &[&now],
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
            t.grant(&grant)?;
            t.audit(ev)?;
            Ok(())
        })
        .await
    }

    async fn get_grant(&self, jti: &str) -> Result<Option<Grant>, StoreError> {
        let jti = jti.to_owned();
        self.read(move |db| body(db, "SELECT body FROM grants WHERE jti = $1", &[&jti]))
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
            let r = add_revocation(t, kind, &id, now, expires_at)?;
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
        self.read(move |db| {
            db.query(
                "SELECT seq, kind, id, revoked_at, expires_at FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3",
                &[&sql_seq(seq), &now, &i64::from(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(Revocation {
                    seq: col::<i64>(r, 0)? as u64,
                    kind: rules::revocation_kind(col(r, 1)?),
                    id: col(r, 2)?,
                    revoked_at: col(r, 3)?,
                    expires_at: col(r, 4)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn create_admin_token(&self, token: AdminToken, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |t| {
            t.db()?.insert(
                "INSERT INTO admin_tokens (id, hash, rights, description, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &token.id,
                    &token.hash,
                    &rules::admin_rights_json(&token)?,
                    &token.description,
                    &token.created_at,
                    &token.expires_at,
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
        self.read(move |db| {
            db.opt(&format!("{ADMIN_TOKEN_SELECT} WHERE hash = $1"), &[&hash])?
                .as_ref()
                .map(admin_token)
                .transpose()
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.read(|db| {
            db.query(
                &format!("{ADMIN_TOKEN_SELECT} ORDER BY created_at, id"),
                &[],
            )?
            .iter()
            .map(admin_token)
            .collect()
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
            let all = t
                .db()?
                .query(&format!("{ADMIN_TOKEN_SELECT} FOR UPDATE"), &[])?
                .iter()
                .map(admin_token)
                .collect::<Result<Vec<_>, _>>()?;
            let mut target = rules::revocable_admin_token(&all, &id, at)?;
            t.db()?.exec(
                "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2",
                &[&at, &id],
            )?;
            t.audit(ev)?;
            target.revoked_at = Some(at);
            Ok(target)
        })
        .await
    }

    async fn count_admin_tokens(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let rows = db.query("SELECT COUNT(*) FROM admin_tokens", &[])?;
            let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
            Ok(n as u64)
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
        self.secret_by("name", name.as_str()).await
    }

    async fn secret_for_tool(
        &self,
        tool: &ToolName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        self.secret_by("tool", tool.as_str()).await
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
        self.read(move |db| read_events(db, after, limit)).await
    }

    async fn last_event(&self) -> Result<Option<Event>, StoreError> {
        self.read(move |db| {
            db.query(&format!("{EVENT_COLUMNS} ORDER BY seq DESC LIMIT 1"), &[])?
                .iter()
                .map(event)
                .next()
                .transpose()
        })
        .await
    }

    async fn prune(&self, now: UnixTime) -> Result<(), StoreError> {
        self.write(move |t| {
            t.db()?
                .exec("DELETE FROM join_tokens WHERE expires_at <= $1", &[&now])?;
            t.db()?.exec(
                "DELETE FROM seen_assertions WHERE expires_at <= $1",
                &[&now],
            )?;
            t.db()?
                .exec("DELETE FROM revocations WHERE expires_at <= $1", &[&now])?;
            Ok(())
        })
        .await
    }

    fn close(&self) {
        PostgresStore::close(self)
    }
}
