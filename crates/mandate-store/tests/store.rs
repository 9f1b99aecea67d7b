//! The store's contract, on a real SQLite file and a real PostgreSQL server.

mod common;

use common::{Place, ev, seeded};
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{Store, StoreError};
use mandate_testkit::postgres::psql;

on_each_backend!(
    refused_write_leaves_no_row_and_no_event,
    duplicate_agent_is_a_conflict,
    concurrent_writes_group_commit_into_one_valid_chain,
    reopening_keeps_state_and_continues_the_chain,
    join_token_is_single_use_and_expires,
    client_assertion_jti_is_single_use,
    tasks_expire_and_revocations_are_fed,
    grants_are_stored_with_their_event_beside_refused_writes,
    a_refused_grant_refuses_only_its_own_write,
);

fn agent(name: &str, owner: &str) -> Agent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        owner: OwnerName::parse(owner).unwrap(),
        environment: Environment::Staging,
        allowed_tools: vec![],
        description: String::new(),
    }
    .into_agent(&TrustDomain::parse("example.org").unwrap(), 0)
    .unwrap()
}

async fn refused_write_leaves_no_row_and_no_event(place: Place) {
    let s = seeded(&place).await;
    let err = s
        .create_agent(agent("a", "nobody"), ev(EventKind::AgentCreated))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "owner", .. }),
        "{err}"
    );
    assert!(s.list_agents().await.unwrap().is_empty());
    assert_eq!(
        s.events_since(0, 100).await.unwrap().len(),
        1,
        "only the owner event"
    );
}

async fn duplicate_agent_is_a_conflict(place: Place) {
    let s = seeded(&place).await;
    s.create_agent(agent("a", "platform"), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let err = s
        .create_agent(agent("a", "platform"), ev(EventKind::AgentCreated))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "agent", .. }));
}

async fn concurrent_writes_group_commit_into_one_valid_chain(place: Place) {
    let s = seeded(&place).await;
    s.create_agent(agent("taken", "platform"), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..300 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            // Failing writes in the middle of a group must not poison the
            // others: one refused by a check, one by the database itself
            // (a unique violation inside the group's transaction).
            if i % 7 == 0 {
                s.create_agent(
                    agent(&format!("x{i}"), "nobody"),
                    ev(EventKind::AgentCreated),
                )
                .await
                .unwrap_err();
            } else if i % 11 == 0 {
                let err = s
                    .create_agent(agent("taken", "platform"), ev(EventKind::AgentCreated))
                    .await
                    .unwrap_err();
                assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            } else if i % 5 == 0 {
                s.create_agent(
                    agent(&format!("a{i}"), "platform"),
                    ev(EventKind::AgentCreated),
                )
                .await
                .unwrap();
            } else {
                s.append_events(vec![ev(EventKind::Decision).agent(i)])
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let events = s.events_since(0, 10_000).await.unwrap();
    let ok = (0..300).filter(|i| i % 7 != 0 && i % 11 != 0).count();
    assert_eq!(events.len(), 2 + ok);
    assert_eq!(
        s.last_event().await.unwrap().as_ref(),
        events.last(),
        "the head is the last event"
    );
    assert_eq!(verify_chain(events).unwrap() as usize, 2 + ok);
    let agents = s.list_agents().await.unwrap();
    let created = (0..300)
        .filter(|i| i % 7 != 0 && i % 11 != 0 && i % 5 == 0)
        .count();
    assert_eq!(agents.len(), 1 + created);
}

async fn reopening_keeps_state_and_continues_the_chain(place: Place) {
    {
        let s = seeded(&place).await;
        s.create_agent(agent("a", "platform"), ev(EventKind::AgentCreated))
            .await
            .unwrap();
        s.close();
    }
    let s = place.open().await;
    assert_eq!(s.list_agents().await.unwrap().len(), 1);
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.events_since(0, 100).await.unwrap()).unwrap(),
        3
    );
}

async fn join_token_is_single_use_and_expires(place: Place) {
    let s = seeded(&place).await;
    let a = agent("a", "platform");
    s.create_agent(a.clone(), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    s.create_join_token("h1".into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.create_join_token("h2".into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    let key = serde_json::json!({"kty": "OKP"});
    let enrolled = s
        .enroll_agent_key(
            "h1".into(),
            key.clone(),
            50,
            ev(EventKind::AgentKeyEnrolled),
        )
        .await
        .unwrap();
    assert_eq!(enrolled.enrolled_key, Some(key.clone()));
    let again = s
        .enroll_agent_key(
            "h1".into(),
            key.clone(),
            51,
            ev(EventKind::AgentKeyEnrolled),
        )
        .await;
    assert!(matches!(again, Err(StoreError::JoinTokenInvalid)));
    let late = s
        .enroll_agent_key("h2".into(), key, 100, ev(EventKind::AgentKeyEnrolled))
        .await;
    assert!(matches!(late, Err(StoreError::JoinTokenInvalid)));
}

async fn client_assertion_jti_is_single_use(place: Place) {
    let s = seeded(&place).await;
    s.record_login(Some(("j1".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    let err = s
        .record_login(Some(("j1".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Replay));
}

async fn tasks_expire_and_revocations_are_fed(place: Place) {
    let s = seeded(&place).await;
    let a = agent("a", "platform");
    s.create_agent(a.clone(), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let mk = |seed: u8, deadline| Task {
        id: TaskId::from_random([seed; 16]),
        agent: a.name.clone(),
        intent: "x".into(),
        scope: serde_json::from_value(serde_json::json!([{"tool": "t", "actions": ["a"]}]))
            .unwrap(),
        environment: Environment::Staging,
        state: TaskState::Active,
        requested_by: None,
        reasons: vec![],
        created_at: 0,
        deadline,
        ended_at: None,
    };
    s.create_task(mk(1, 10), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    s.create_task(mk(2, 1000), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let expired = s.expire_due_tasks(20).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        s.get_task(&mk(1, 0).id).await.unwrap().unwrap().state,
        TaskState::Expired
    );
    let (t, rev) = s
        .transition_task(
            &mk(2, 0).id,
            TaskState::Revoked,
            30,
            ev(EventKind::TaskRevoked),
        )
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Revoked);
    let rev = rev.unwrap();
    assert_eq!(rev.expires_at, 1000);
    assert_eq!(
        s.revocations_since(0, 30, 100).await.unwrap(),
        vec![rev.clone()]
    );
    // A cursor past i64::MAX has nothing after it (it must not wrap and replay).
    assert!(
        s.revocations_since(u64::MAX, 30, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Entries are dropped from the feed once the tokens they cover are dead anyway.
    assert!(s.revocations_since(0, 1000, 100).await.unwrap().is_empty());
    let illegal = s
        .transition_task(
            &mk(2, 0).id,
            TaskState::Active,
            31,
            ev(EventKind::TaskCreated),
        )
        .await;
    assert!(matches!(
        illegal,
        Err(StoreError::Rule(RuleViolation::IllegalTransition { .. }))
    ));
}

/// One broker per database: a second writer would fork the audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_second_writer_until_the_first_closes() {
    let Some(Place::Postgres(url)) = Place::postgres("second_writer") else {
        return;
    };
    let first = mandate_store::PostgresStore::open(url.clone().into(), Default::default())
        .await
        .unwrap();
    let err = mandate_store::PostgresStore::open(url.clone().into(), Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("writer lock"), "{err}");
    assert!(!err.to_string().contains(&url), "no URL in errors: {err}");
    first.close();
    drop(first);
    let second = mandate_store::PostgresStore::open(url.into(), Default::default())
        .await
        .unwrap();
    second
        .append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(second.events_since(0, 10).await.unwrap()).unwrap(),
        1
    );
}

/// The server drops every connection (a restart, a failover, an idle
/// timeout): the store reconnects, retakes the writer lock and continues
/// the chain from the head in the table; nothing is lost or forked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_the_server_drops_its_connections() {
    let Some(place) = Place::postgres("reconnect") else {
        return;
    };
    let Place::Postgres(url) = &place else {
        unreachable!()
    };
    let kill_sessions = || {
        psql(
            url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
    };
    let s = seeded(&place).await;
    assert_eq!(s.list_owners().await.unwrap().len(), 1);
    assert_eq!(kill_sessions(), "2", "the writer and one pooled reader");

    // Idle connections are checked before use: no request sees the break.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(s.list_owners().await.unwrap().len(), 1);

    // Broken under way: at most the write in flight fails, then it recovers.
    kill_sessions();
    let in_flight = s.append_events(vec![ev(EventKind::Decision)]).await;
    if let Err(e) = &in_flight {
        assert!(matches!(e, StoreError::Backend(_)), "{e}");
        eprintln!("the write in flight failed: {e}");
    }
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(s.list_owners().await.unwrap().len(), 1, "reads retry once");
    let events = s.events_since(0, 100).await.unwrap();
    let expected = 3 + usize::from(in_flight.is_ok());
    assert_eq!(verify_chain(events).unwrap() as usize, expected);
}

/// `sslmode=require` against a server without TLS (this test process's
/// cluster): refused, never connected in clear. The TLS server side is in
/// `postgres_tls.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_sslmode_require_refuses_a_server_without_tls() {
    let Some(Place::Postgres(url)) = Place::postgres("sslmode") else {
        return;
    };
    let err = mandate_store::PostgresStore::open(
        format!("{url}?sslmode=require").into(),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}

async fn grants_are_stored_with_their_event_beside_refused_writes(place: Place) {
    let s = seeded(&place).await;
    let a = agent("a", "platform");
    s.create_agent(a.clone(), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let task = Task {
        id: TaskId::from_random([7; 16]),
        agent: a.name.clone(),
        intent: "x".into(),
        scope: serde_json::from_value(serde_json::json!([{"tool": "t", "actions": ["a"]}]))
            .unwrap(),
        environment: Environment::Staging,
        state: TaskState::Active,
        requested_by: None,
        reasons: vec![],
        created_at: 0,
        deadline: 100,
        ended_at: None,
    };
    s.create_task(task.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let grant = |seed: u8| Grant {
        jti: Jti::from_random([seed; 16]),
        task: task.id.clone(),
        agent: a.name.clone(),
        scope: task.scope.items()[0].clone(),
        audience: "urn:t".into(),
        issued_at: 1,
        expires_at: 60 + i64::from(seed),
    };
    // Minted concurrently with refused writes: same groups, own fates.
    let mut handles = Vec::new();
    for i in 0..40u8 {
        let (s, g) = (s.clone(), grant(i));
        handles.push(tokio::spawn(async move {
            if i % 4 == 0 {
                s.create_agent(
                    agent(&format!("x{i}"), "nobody"),
                    ev(EventKind::AgentCreated),
                )
                .await
                .unwrap_err();
            } else {
                s.insert_grant(g, ev(EventKind::GrantMinted)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for i in 0..40u8 {
        let stored = s.get_grant(grant(i).jti.as_str()).await.unwrap();
        if i % 4 == 0 {
            assert!(stored.is_none(), "grant {i} of no write");
        } else {
            assert_eq!(stored.unwrap(), grant(i));
        }
    }
    let events = s.events_since(0, 1000).await.unwrap();
    let minted = events
        .iter()
        .filter(|e| e.kind == EventKind::GrantMinted)
        .count();
    assert_eq!(minted, 30);
    verify_chain(events).unwrap();
}

/// A grant whose `jti` is taken, or whose task is unknown, is `Conflict`
/// on both backends and takes nothing else down: PostgreSQL, which stores
/// a group's grants in one statement, once failed the whole group.
async fn a_refused_grant_refuses_only_its_own_write(place: Place) {
    let s = seeded(&place).await;
    let a = agent("a", "platform");
    s.create_agent(a.clone(), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let task = Task {
        id: TaskId::from_random([7; 16]),
        agent: a.name.clone(),
        intent: "x".into(),
        scope: serde_json::from_value(serde_json::json!([{"tool": "t", "actions": ["a"]}]))
            .unwrap(),
        environment: Environment::Staging,
        state: TaskState::Active,
        requested_by: None,
        reasons: vec![],
        created_at: 0,
        deadline: 100,
        ended_at: None,
    };
    s.create_task(task.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let grant = |seed: u8, task: &TaskId, expires_at: i64| Grant {
        jti: Jti::from_random([seed; 16]),
        task: task.clone(),
        agent: a.name.clone(),
        scope: serde_json::from_value(serde_json::json!({"tool": "t", "actions": ["a"]})).unwrap(),
        audience: "urn:t".into(),
        issued_at: 1,
        expires_at,
    };
    let taken = grant(200, &task.id, 50);
    s.insert_grant(taken.clone(), ev(EventKind::GrantMinted))
        .await
        .unwrap();
    let events_before = s.events_since(0, 1000).await.unwrap().len();
    let unknown = TaskId::from_random([9; 16]);
    let mut handles = Vec::new();
    for i in 0..60u8 {
        let g = match i % 3 {
            0 => grant(200, &task.id, 60 + i64::from(i)),
            1 => grant(i, &unknown, 60),
            _ => grant(i, &task.id, 60),
        };
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            (
                g.clone(),
                s.insert_grant(g, ev(EventKind::GrantMinted)).await,
            )
        }));
    }
    let mut minted = 0;
    for h in handles {
        let (g, result) = h.await.unwrap();
        if g.jti == taken.jti || g.task == unknown {
            assert!(
                matches!(&result, Err(StoreError::Conflict { what: "grant", id }) if id == g.jti.as_str()),
                "{result:?}"
            );
            if g.task == unknown {
                assert_eq!(s.get_grant(g.jti.as_str()).await.unwrap(), None);
            }
        } else {
            result.unwrap();
            assert_eq!(s.get_grant(g.jti.as_str()).await.unwrap(), Some(g));
            minted += 1;
        }
    }
    assert_eq!(minted, 20);
    assert_eq!(
        s.get_grant(taken.jti.as_str()).await.unwrap(),
        Some(taken),
        "the first grant of a jti stays"
    );
    let events = s.events_since(0, 1000).await.unwrap();
    assert_eq!(
        events.len(),
        events_before + minted,
        "refused grants left no event"
    );
    verify_chain(events).unwrap();
}
