//! The rest of the store's contract, on each backend: bindings, tool
//! updates, task listings, an agent's revocation cascade, admin tokens
//! and pruning.

mod common;

use common::{Place, ev, seeded};
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{StoreError, TaskFilter};

on_each_backend!(
    bindings_tool_updates_and_task_listings,
    revoking_an_agent_cascades_to_its_live_tasks,
    admin_tokens_list_revoke_and_keep_the_last_root,
    prune_forgets_only_what_has_expired,
);

fn agent(name: &str) -> Agent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        owner: OwnerName::parse("platform").unwrap(),
        environment: Environment::Staging,
        allowed_tools: vec![],
        description: String::new(),
    }
    .into_agent(&TrustDomain::parse("example.org").unwrap(), 0)
    .unwrap()
}

fn task(seed: u8, agent: &Agent, state: TaskState, created_at: i64) -> Task {
    Task {
        id: TaskId::from_random([seed; 16]),
        agent: agent.name.clone(),
        intent: "x".into(),
        scope: serde_json::from_value(serde_json::json!([{"tool": "t", "actions": ["a"]}]))
            .unwrap(),
        environment: Environment::Staging,
        state,
        requested_by: None,
        reasons: vec![],
        created_at,
        deadline: 1000,
        ended_at: None,
    }
}

async fn bindings_tool_updates_and_task_listings(place: Place) {
    let s = seeded(&place).await;
    let (a, b) = (agent("a"), agent("b"));
    for x in [&a, &b] {
        s.create_agent(x.clone(), ev(EventKind::AgentCreated))
            .await
            .unwrap();
    }
    let binding = |agent: &Agent, sub: &str| Binding {
        agent: agent.name.clone(),
        issuer: "https://iss".into(),
        subject: sub.into(),
        claims: [("ns".to_owned(), "ci".to_owned())].into(),
    };
    s.add_binding(binding(&a, "sub-a"), ev(EventKind::AgentBindingAdded))
        .await
        .unwrap();
    let dup = s
        .add_binding(binding(&a, "sub-a"), ev(EventKind::AgentBindingAdded))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup}");
    assert_eq!(
        s.bindings_for("https://iss", "sub-a").await.unwrap(),
        vec![binding(&a, "sub-a")]
    );
    assert!(
        s.bindings_for("https://iss", "nobody")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.list_bindings(&a.name).await.unwrap().len(), 1);
    assert!(s.list_bindings(&b.name).await.unwrap().is_empty());

    let new: NewTool = serde_json::from_value(serde_json::json!({
        "name": "t", "audience": "urn:t", "owner": "platform", "environment": "staging",
        "sensitivity": "internal", "max_ttl_secs": 600, "actions": ["a"]
    }))
    .unwrap();
    let mut tool = new.into_tool(0).unwrap();
    s.create_tool(tool.clone(), ev(EventKind::ToolCreated))
        .await
        .unwrap();
    tool.description = "changed".into();
    s.update_tool(tool.clone(), ev(EventKind::ToolUpdated))
        .await
        .unwrap();
    assert_eq!(
        s.get_tool(&tool.name).await.unwrap().unwrap().description,
        "changed"
    );
    let mut moved = tool.clone();
    moved.audience = "urn:elsewhere".into();
    let err = s
        .update_tool(moved, ev(EventKind::ToolUpdated))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { .. }),
        "the audience is fixed: {err}"
    );

    for (seed, who, state, at) in [
        (1, &a, TaskState::Active, 10),
        (2, &a, TaskState::Active, 20),
        (3, &b, TaskState::PendingApproval, 30),
    ] {
        s.create_task(task(seed, who, state, at), ev(EventKind::TaskCreated))
            .await
            .unwrap();
    }
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let all = s.list_tasks(TaskFilter::default()).await.unwrap();
    assert_eq!(
        ids(all),
        vec![
            task(3, &b, TaskState::Active, 0).id,
            task(2, &a, TaskState::Active, 0).id,
            task(1, &a, TaskState::Active, 0).id
        ],
        "newest first"
    );
    let of_a = s
        .list_tasks(TaskFilter {
            agent: Some(a.name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 2);
    let pending = s
        .list_tasks(TaskFilter {
            state: Some(TaskState::PendingApproval),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(pending), vec![task(3, &b, TaskState::Active, 0).id]);
    verify_chain(s.events_since(0, 100).await.unwrap()).unwrap();
}

async fn revoking_an_agent_cascades_to_its_live_tasks(place: Place) {
    let s = seeded(&place).await;
    let (a, b) = (agent("a"), agent("b"));
    for x in [&a, &b] {
        s.create_agent(x.clone(), ev(EventKind::AgentCreated))
            .await
            .unwrap();
    }
    for (seed, who) in [(1, &a), (2, &a), (3, &b)] {
        s.create_task(
            task(seed, who, TaskState::Active, 0),
            ev(EventKind::TaskCreated),
        )
        .await
        .unwrap();
    }
    s.transition_task(
        &task(2, &a, TaskState::Active, 0).id,
        TaskState::Completed,
        5,
        ev(EventKind::TaskCompleted),
    )
    .await
    .unwrap();
    let out = s
        .revoke_agent(&a.name, 10, 500, ev(EventKind::AgentRevoked))
        .await
        .unwrap();
    assert_eq!(out.agent.state, AgentState::Revoked);
    assert_eq!(out.tasks.len(), 1, "only the live task");
    assert_eq!(out.tasks[0].state, TaskState::Revoked);
    let kinds: Vec<_> = out.revocations.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RevocationKind::Agent, RevocationKind::Task]);
    assert_eq!(
        s.get_agent(&a.name).await.unwrap().unwrap().state,
        AgentState::Revoked
    );
    assert_eq!(
        s.get_task(&task(3, &b, TaskState::Active, 0).id)
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Active,
        "another agent's task is untouched"
    );
    let err = s
        .revoke_agent(
            &AgentName::parse("ghost").unwrap(),
            10,
            500,
            ev(EventKind::AgentRevoked),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    let events = s.events_since(0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::TaskRevoked)
            .count(),
        1,
        "one cascade event"
    );
    verify_chain(events).unwrap();
}

async fn admin_tokens_list_revoke_and_keep_the_last_root(place: Place) {
    let s = seeded(&place).await;
    let token = |id: &str, rights: Vec<AdminRight>| AdminToken {
        id: id.into(),
        hash: format!("hash-{id}"),
        rights,
        description: String::new(),
        created_at: 1,
        expires_at: None,
        revoked_at: None,
    };
    s.create_admin_token(
        token("root", vec![AdminRight::Root]),
        ev(EventKind::AdminTokenCreated),
    )
    .await
    .unwrap();
    s.create_admin_token(
        token("ops", vec![AdminRight::Agents, AdminRight::Tasks]),
        ev(EventKind::AdminTokenCreated),
    )
    .await
    .unwrap();
    assert_eq!(s.count_admin_tokens().await.unwrap(), 2);
    assert_eq!(
        s.admin_token_by_hash("hash-ops")
            .await
            .unwrap()
            .unwrap()
            .rights,
        vec![AdminRight::Agents, AdminRight::Tasks]
    );
    let err = s
        .revoke_admin_token("root", 5, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let ops = s
        .revoke_admin_token("ops", 5, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap();
    assert_eq!(ops.revoked_at, Some(5));
    let listed = s.list_admin_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed.iter().find(|t| t.id == "ops").unwrap().revoked_at,
        Some(5)
    );
    let again = s
        .revoke_admin_token("ops", 6, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::NotFound { .. }), "{again}");
}

async fn prune_forgets_only_what_has_expired(place: Place) {
    let s = seeded(&place).await;
    let a = agent("a");
    s.create_agent(a.clone(), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    s.create_join_token("old".into(), &a.name, 10, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.create_join_token("new".into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.record_login(Some(("jti-old".into(), 10)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    s.record_login(Some(("jti-new".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    for (id, exp) in [("tok-old", 10), ("tok-new", 100)] {
        s.revoke_by_id(
            RevocationKind::Token,
            id,
            exp,
            1,
            ev(EventKind::TokenRevoked),
        )
        .await
        .unwrap();
    }
    let events_before = s.events_since(0, 100).await.unwrap().len();
    s.prune(50).await.unwrap();
    // Still remembered: a replay of the live assertion, the live feed entry.
    let replay = s
        .record_login(Some(("jti-new".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap_err();
    assert!(matches!(replay, StoreError::Replay));
    let feed = s.revocations_since(0, 0, 100).await.unwrap();
    assert_eq!(
        feed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["tok-new"]
    );
    // Forgotten: the expired join token is gone, the live one still enrols.
    let key = serde_json::json!({"kty": "OKP"});
    assert!(matches!(
        s.enroll_agent_key(
            "old".into(),
            key.clone(),
            5,
            ev(EventKind::AgentKeyEnrolled)
        )
        .await,
        Err(StoreError::JoinTokenInvalid)
    ));
    s.enroll_agent_key("new".into(), key, 60, ev(EventKind::AgentKeyEnrolled))
        .await
        .unwrap();
    assert_eq!(
        s.events_since(0, 100).await.unwrap().len(),
        events_before + 1,
        "pruning writes no events; the refused writes none either"
    );
}
