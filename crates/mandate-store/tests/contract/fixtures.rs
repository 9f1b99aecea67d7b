//! Domain values for the contract tests, a snapshot of everything a store
//! shows through the trait, and direct changes to a database's schema.

use crate::common::Place;
use mandate_audit::Event;
use mandate_core::*;
use mandate_store::{SealedValue, Store, StoreError, StoredWebhook, TaskFilter};
use mandate_testkit::postgres::psql;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

pub fn agent(name: &str) -> Agent {
    agent_of(name, "platform")
}

pub fn agent_of(name: &str, owner: &str) -> Agent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        owner: OwnerName::parse(owner).unwrap(),
        environment: Environment::Staging,
        allowed_tools: vec![],
        description: String::new(),
        model: None,
        model_version: None,
    }
    .into_agent(&TrustDomain::parse("example.org").unwrap(), 0)
    .unwrap()
}

pub fn owner(name: &str) -> Owner {
    owner_of_kind(name, OwnerKind::Team)
}

pub fn owner_of_kind(name: &str, kind: OwnerKind) -> Owner {
    Owner {
        name: OwnerName::parse(name).unwrap(),
        kind,
        description: String::new(),
        created_at: 0,
    }
}

pub fn task_id(seed: u8) -> TaskId {
    TaskId::from_random([seed; 16])
}

pub fn task(seed: u8, agent: &Agent, state: TaskState, created_at: i64, deadline: i64) -> Task {
    Task {
        id: task_id(seed),
        agent: agent.name.clone(),
        intent: "x".into(),
        scope: serde_json::from_value(serde_json::json!([{"tool": "t", "actions": ["a"]}]))
            .unwrap(),
        environment: Environment::Staging,
        state,
        requested_by: None,
        reasons: vec![],
        created_at,
        deadline,
        ended_at: None,
        delegation: None,
        model: None,
        approval: None,
        breakglass: None,
    }
}

/// Task `seed` of `agent`, delegated from `parent` (active, same deadline).
pub fn child(seed: u8, parent: &Task, agent: &Agent, created_at: i64) -> Task {
    let mut chain = parent
        .delegation
        .as_ref()
        .map(|d| d.chain.clone())
        .unwrap_or_default();
    chain.push(Link {
        agent: parent.agent.clone(),
        task: parent.id.clone(),
    });
    Task {
        delegation: Some(Delegation {
            parent: parent.id.clone(),
            root: chain[0].task.clone(),
            chain,
            root_intent: "x".into(),
        }),
        ..task(seed, agent, TaskState::Active, created_at, parent.deadline)
    }
}

pub fn grant(seed: u8, task: &TaskId, agent: &Agent, expires_at: i64) -> Grant {
    Grant {
        jti: Jti::from_random([seed; 16]),
        task: task.clone(),
        agent: agent.name.clone(),
        scope: serde_json::from_value(serde_json::json!({"tool": "t", "actions": ["a"]})).unwrap(),
        audience: "urn:t".into(),
        issued_at: 1,
        expires_at,
    }
}

pub fn tool(name: &str, audience: &str) -> Tool {
    serde_json::from_value::<NewTool>(serde_json::json!({
        "name": name, "audience": audience, "owner": "platform", "environment": "staging",
        "sensitivity": "internal", "max_ttl_secs": 600, "actions": ["a"]
    }))
    .unwrap()
    .into_tool(0)
    .unwrap()
}

pub fn secret(name: &str, tool: &str) -> Secret {
    secret_of(name, tool, "platform")
}

pub fn secret_of(name: &str, tool: &str, owner: &str) -> Secret {
    serde_json::from_value::<NewSecret>(serde_json::json!({
        "name": name, "tool": tool, "class": "tool", "owner": owner
    }))
    .unwrap()
    .into_secret(10)
    .unwrap()
}

pub fn sealed(key: i64, bytes: &[u8]) -> SealedValue {
    SealedValue {
        data_key: key,
        bytes: bytes.to_vec(),
    }
}

pub fn admin_token(id: &str, rights: Vec<AdminRight>, created_at: i64) -> AdminToken {
    AdminToken {
        id: id.into(),
        hash: format!("hash-{id}"),
        rights,
        description: String::new(),
        created_at,
        expires_at: None,
        revoked_at: None,
        agent: None,
    }
}

/// Everything a store shows through the trait (but grants, which are read
/// by `jti` only).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    owners: Vec<Owner>,
    agents: Vec<Agent>,
    bindings: Vec<Vec<Binding>>,
    tools: Vec<Tool>,
    tasks: Vec<Task>,
    /// With each value's data key and bytes.
    secrets: Vec<(Secret, i64, Vec<u8>)>,
    admin_tokens: Vec<AdminToken>,
    approvals: Vec<Approval>,
    /// Every entry, expired or not.
    feed: Vec<Revocation>,
    events: Vec<Event>,
    webhooks: Vec<StoredWebhook>,
}

pub async fn snapshot(s: &Arc<dyn Store>) -> Snapshot {
    let agents = s.list_agents().await.unwrap();
    let mut bindings = Vec::new();
    for a in &agents {
        bindings.push(s.list_bindings(&a.name).await.unwrap());
    }
    let mut secrets = Vec::new();
    for meta in s.list_secrets().await.unwrap() {
        let (secret, value) = s.get_secret(&meta.name).await.unwrap().unwrap();
        secrets.push((secret, value.data_key, value.bytes));
    }
    Snapshot {
        owners: s.list_owners().await.unwrap(),
        agents,
        bindings,
        tools: s.list_tools().await.unwrap(),
        tasks: s
            .list_tasks(TaskFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap(),
        secrets,
        admin_tokens: s.list_admin_tokens().await.unwrap(),
        approvals: s
            .list_approvals(mandate_store::ApprovalFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap(),
        feed: s.revocations_since(0, i64::MIN, u32::MAX).await.unwrap(),
        events: s.events_since(0, 100_000).await.unwrap(),
        webhooks: s.list_webhooks().await.unwrap(),
    }
}

/// Run `write`, which must fail, and check it changed nothing; its error.
pub async fn refused<T: Debug>(
    s: &Arc<dyn Store>,
    write: impl Future<Output = Result<T, StoreError>>,
) -> StoreError {
    let before = snapshot(s).await;
    let err = write.await.expect_err("the write must be refused");
    assert_eq!(
        snapshot(s).await,
        before,
        "the refused write ({err}) left something behind"
    );
    err
}

/// Change the database behind the store's back (a trigger, a collation):
/// `sqlite` on a SQLite place, `postgres` on a PostgreSQL one.
pub fn tamper(place: &Place, sqlite: &str, postgres: &str) {
    match place {
        Place::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(Place::sqlite_file(dir)).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            conn.execute_batch(sqlite).unwrap();
        }
        Place::Postgres(url) => {
            psql(url, postgres);
        }
    }
}

/// A store with owner `platform` and its agents `names`.
pub async fn with_agents(place: &Place, names: &[&str]) -> Arc<dyn Store> {
    let s = crate::common::seeded(place).await;
    for n in names {
        s.create_agent(
            agent(n),
            crate::common::ev(mandate_audit::EventKind::AgentCreated),
        )
        .await
        .unwrap();
    }
    s
}
