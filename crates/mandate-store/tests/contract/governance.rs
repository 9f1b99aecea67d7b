//! Governance reads and writes: owner kinds and the production-owner rule,
//! use read back from the log, live grants, rotation notices raised once.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{agent, grant, owner_of_kind, refused, task, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use serde_json::json;

on_each_backend!(
    a_person_cannot_own_a_production_agent_alone,
    use_is_read_back_from_the_log,
    live_grants_leave_out_expired_revoked_and_ended,
    a_rotation_notice_is_raised_once,
);

async fn a_person_cannot_own_a_production_agent_alone(place: Place) {
    let s = seeded(&place).await;
    s.create_owner(
        owner_of_kind("alice", OwnerKind::Person),
        ev(EventKind::OwnerCreated),
    )
    .await
    .unwrap();
    let kinds: Vec<_> = s
        .list_owners()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.name.to_string(), o.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("alice".to_owned(), OwnerKind::Person),
            ("platform".to_owned(), OwnerKind::Team)
        ]
    );
    let mut prod = crate::fixtures::agent_of("bot", "alice");
    prod.environment = Environment::Production;
    let err = refused(
        &s,
        s.create_agent(prod.clone(), ev(EventKind::AgentCreated)),
    )
    .await;
    match err {
        mandate_store::StoreError::Invalid(e) => assert_eq!(e.field, "owner"),
        other => panic!("expected the owner rule, got {other:?}"),
    }
    // A person may own a staging agent; a team a production one.
    s.create_agent(
        crate::fixtures::agent_of("proto", "alice"),
        ev(EventKind::AgentCreated),
    )
    .await
    .unwrap();
    prod.owner = OwnerName::parse("platform").unwrap();
    s.create_agent(prod, ev(EventKind::AgentCreated))
        .await
        .unwrap();
}

async fn use_is_read_back_from_the_log(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let minted = |agent: &str, jkt: Option<&str>| {
        ev(EventKind::GrantMinted)
            .agent(agent)
            .detail(json!({"scope": [], "dpop_jkt": jkt}))
    };
    s.append_events(vec![
        minted("a", Some("thumb")),
        minted("a", Some("thumb")),
        minted("b", Some("thumb")),
        minted("b", None),
        ev(EventKind::ToolInvoked)
            .agent("a")
            .tool("github")
            .decision("allow"),
        ev(EventKind::ToolInvoked)
            .agent("b")
            .tool("github")
            .decision("deny"),
        ev(EventKind::SecretRetrieved)
            .agent("b")
            .tool("openai")
            .decision("allow"),
        ev(EventKind::AnomalyAcknowledged).detail(json!({"anomaly": 7})),
    ])
    .await
    .unwrap();
    let u = s.usage_since(0).await.unwrap();
    let name = |n: &str| AgentName::parse(n).unwrap();
    let tool = |n: &str| ToolName::parse(n).unwrap();
    assert_eq!(u.tokens[&name("a")], (2, 2));
    assert_eq!(u.tokens[&name("b")], (2, 1));
    // A denied call is not a use.
    assert_eq!(
        u.tool_users[&tool("github")].iter().collect::<Vec<_>>(),
        [&name("a")]
    );
    assert!(u.tool_users[&tool("openai")].contains(&name("b")));
    assert!(u.last_seen_ms[&name("a")] > 0 && u.last_seen_ms.contains_key(&name("b")));
    assert_eq!(u.acknowledged_anomalies.iter().collect::<Vec<_>>(), [&7]);
    // The period ends the count: nothing after the far future.
    let later = s.usage_since(i64::MAX / 2).await.unwrap();
    assert!(later.tokens.is_empty() && later.tool_users.is_empty());
    assert_eq!(later.last_seen_ms, u.last_seen_ms, "last seen is ever");
}

async fn live_grants_leave_out_expired_revoked_and_ended(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    let live = task(1, &a, TaskState::Active, 0, 1000);
    let ended = task(2, &a, TaskState::Active, 0, 1000);
    for t in [&live, &ended] {
        s.create_task(t.clone(), ev(EventKind::TaskCreated))
            .await
            .unwrap();
    }
    let keep = grant(1, &live.id, &a, 500);
    let soon = grant(2, &live.id, &a, 400);
    let expired = grant(3, &live.id, &a, 50);
    let revoked = grant(4, &live.id, &a, 600);
    let of_ended = grant(5, &ended.id, &a, 600);
    for g in [&keep, &soon, &expired, &revoked, &of_ended] {
        s.insert_grant(g.clone(), ev(EventKind::GrantMinted))
            .await
            .unwrap();
    }
    s.revoke_by_id(
        RevocationKind::Token,
        revoked.jti.as_str(),
        600,
        100,
        ev(EventKind::TokenRevoked),
    )
    .await
    .unwrap();
    s.transition_task(
        &ended.id,
        TaskState::Completed,
        100,
        ev(EventKind::TaskCompleted),
    )
    .await
    .unwrap();
    let got = s.live_grants(100, 10).await.unwrap();
    assert_eq!(got, vec![soon.clone(), keep]);
    assert_eq!(s.live_grants(100, 1).await.unwrap(), vec![soon]);
}

async fn a_rotation_notice_is_raised_once(place: Place) {
    let s = seeded(&place).await;
    let name = SecretName::parse("openai").unwrap();
    let notice = |marker: i64| {
        s.notice_secret(
            name.clone(),
            "rotation_due",
            marker,
            10,
            ev(EventKind::SecretRotationDue),
        )
    };
    assert!(notice(1).await.unwrap());
    assert!(!notice(1).await.unwrap(), "the same version again");
    assert!(notice(2).await.unwrap(), "a later version is a new notice");
    let due = s
        .events_since(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::SecretRotationDue)
        .count();
    assert_eq!(due, 2);
}
