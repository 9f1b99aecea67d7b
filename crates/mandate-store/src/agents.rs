//! Agents and how they prove who they are: bindings to workload
//! identities, join tokens, enrolled keys, single-use client assertions;
//! and revoking an agent, which takes its live tasks down with it.

use crate::sql::{self, Sql, Write, args};
use crate::{AgentRevoked, StoreError, feed, owners, rules, tasks};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Agent, AgentName, AgentState, Binding, RevocationKind, TaskState, UnixTime};

pub(crate) fn create(w: &mut dyn Write, agent: &Agent, ev: NewEvent) -> Result<(), StoreError> {
    owners::require(w, &agent.owner)?.may_own_agent_in(agent.environment)?;
    sql::insert(
        w,
        "INSERT INTO agents (name, owner, body, state, created_at) VALUES ($1, $2, $3, 'active', $4)",
        args![
            agent.name.as_str(),
            agent.owner.as_str(),
            &serde_json::to_string(agent)?,
            agent.created_at
        ],
        "agent",
        agent.name.as_str(),
    )?;
    w.audit(ev)
}

pub(crate) fn get(db: &mut dyn Sql, name: &str) -> Result<Option<Agent>, StoreError> {
    sql::body(db, "SELECT body FROM agents WHERE name = $1", args![name])
}

/// By name, in byte order (see `sql`).
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<Agent>, StoreError> {
    let mut agents: Vec<Agent> = sql::bodies(db, "SELECT body FROM agents", &[])?;
    agents.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(agents)
}

fn save(w: &mut dyn Write, agent: &Agent) -> Result<(), StoreError> {
    let state = match agent.state {
        AgentState::Active => "active",
        AgentState::Revoked => "revoked",
    };
    w.exec(
        "UPDATE agents SET state = $2, body = $3 WHERE name = $1",
        args![agent.name.as_str(), state, &serde_json::to_string(agent)?],
    )?;
    Ok(())
}

/// Revoke the agent and then each of its live tasks, oldest first: the
/// feed gets the agent's entry, then one per task in that order; the
/// audit chain one cascade event per task, then the cause `ev`.
pub(crate) fn revoke(
    w: &mut dyn Write,
    name: &AgentName,
    now: UnixTime,
    feed_expires_at: UnixTime,
    ev: NewEvent,
) -> Result<AgentRevoked, StoreError> {
    let mut agent = get(w, name.as_str())?.ok_or_else(|| StoreError::NotFound {
        what: "agent",
        id: name.to_string(),
    })?;
    agent.state = AgentState::Revoked;
    save(w, &agent)?;
    let mut revocations = vec![feed::add(
        w,
        RevocationKind::Agent,
        name.as_str(),
        now,
        feed_expires_at,
    )?];
    let live = tasks::live_of(w, name)?;
    let (mut revoked, mut below) = (Vec::with_capacity(live.len()), Vec::new());
    for mut task in live {
        // Its own task may already have gone with a parent it also held.
        if below.contains(&task.id) {
            continue;
        }
        let cascade = rules::cascade_event(
            &ev,
            EventKind::TaskRevoked,
            task.agent.as_str(),
            task.id.as_str(),
        );
        let moved = tasks::transition(w, &mut task, TaskState::Revoked, now, cascade)?;
        revocations.extend(moved.revocations);
        revoked.push(moved.task);
        below.extend(moved.subtree);
    }
    w.audit(ev)?;
    Ok(AgentRevoked {
        agent,
        tasks: revoked,
        below,
        revocations,
    })
}

/// Unique by (issuer, subject, claims).
pub(crate) fn add_binding(w: &mut dyn Write, b: &Binding, ev: NewEvent) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO bindings (agent, issuer, subject, claims) VALUES ($1, $2, $3, $4)",
        args![
            b.agent.as_str(),
            &b.issuer,
            &b.subject,
            &serde_json::to_string(&b.claims)?
        ],
        "binding",
        &format!("{} {}", b.issuer, b.subject),
    )?;
    w.audit(ev)
}

const BINDING_COLUMNS: &str = "SELECT agent, issuer, subject, claims FROM bindings";

fn bindings(
    db: &mut dyn Sql,
    sql: &str,
    args: &[sql::Arg<'_>],
) -> Result<Vec<Binding>, StoreError> {
    db.query(sql, args)?
        .iter()
        .map(|r| {
            Ok(Binding {
                agent: AgentName::parse(r.text(0)?).map_err(StoreError::corrupt)?,
                issuer: r.get(1)?,
                subject: r.get(2)?,
                claims: r.json(3)?,
            })
        })
        .collect()
}

/// In the order they were added.
pub(crate) fn bindings_for(
    db: &mut dyn Sql,
    issuer: &str,
    subject: &str,
) -> Result<Vec<Binding>, StoreError> {
    bindings(
        db,
        &format!("{BINDING_COLUMNS} WHERE issuer = $1 AND subject = $2 ORDER BY id"),
        args![issuer, subject],
    )
}

/// In the order they were added.
pub(crate) fn bindings_of(db: &mut dyn Sql, agent: &str) -> Result<Vec<Binding>, StoreError> {
    bindings(
        db,
        &format!("{BINDING_COLUMNS} WHERE agent = $1 ORDER BY id"),
        args![agent],
    )
}

/// A join token, stored by its hash only.
pub(crate) fn create_join_token(
    w: &mut dyn Write,
    hash: &str,
    agent: &str,
    expires_at: UnixTime,
    ev: NewEvent,
) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO join_tokens (hash, agent, expires_at) VALUES ($1, $2, $3)",
        args![hash, agent, expires_at],
        "join token",
        "(hash)",
    )?;
    w.audit(ev)
}

/// Use up a join token and set its agent's key. Any failure after the
/// token is marked used fails the write, so the token stays unused.
pub(crate) fn enroll_key(
    w: &mut dyn Write,
    hash: &str,
    key: serde_json::Value,
    now: UnixTime,
    ev: NewEvent,
) -> Result<Agent, StoreError> {
    // Marking it used in the statement that checks it makes reuse impossible.
    let agent = sql::first(
        w,
        "UPDATE join_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING agent",
        args![hash, now],
    )?
    .ok_or(StoreError::JoinTokenInvalid)?
    .get::<String>(0)?;
    let mut a = get(w, &agent)?.ok_or(StoreError::JoinTokenInvalid)?;
    if !a.is_active() {
        return Err(StoreError::JoinTokenInvalid);
    }
    a.enrolled_key = Some(key);
    save(w, &a)?;
    w.audit(ev.agent(&a.name))?;
    Ok(a)
}

/// A login; with a client assertion `(jti, exp)`, the jti is remembered
/// until `exp` and a second use is a `Replay`.
pub(crate) fn record_login(
    w: &mut dyn Write,
    assertion: Option<(&str, UnixTime)>,
    ev: NewEvent,
) -> Result<(), StoreError> {
    if let Some((jti, exp)) = assertion
        && !w.try_insert(
            "INSERT INTO seen_assertions (jti, expires_at) VALUES ($1, $2)",
            args![jti, exp],
        )?
    {
        return Err(StoreError::Replay);
    }
    w.audit(ev)
}

/// Forget join tokens and assertion ids past their expiry.
pub(crate) fn forget_expired(w: &mut dyn Write, now: UnixTime) -> Result<(), StoreError> {
    w.exec("DELETE FROM join_tokens WHERE expires_at <= $1", args![now])?;
    w.exec(
        "DELETE FROM seen_assertions WHERE expires_at <= $1",
        args![now],
    )?;
    Ok(())
}
