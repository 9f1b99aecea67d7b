//! Revoking an agent: the agent, then each of its live tasks oldest first,
//! with exactly these feed entries and events, all or nothing.

use crate::common::{Place, ev};
use crate::fixtures::{agent, refused, snapshot, tamper, task, task_id, with_agents};
use crate::on_each_backend;
use mandate_audit::{EventKind, NewEvent, verify_chain};
use mandate_core::*;
use mandate_store::{Store, StoreError};
use std::sync::Arc;

on_each_backend!(
    revoking_an_agent_revokes_its_live_tasks_oldest_first,
    a_cascade_that_fails_half_way_leaves_nothing,
    revoking_an_unknown_agent_is_not_found,
);

/// Agent `a` with live tasks 7 (created at 10), 3 and 5 (both at 20) and
/// 1 (at 30), stored in another order (5 before 3), so that neither ids
/// nor rows are in the cascade's order; a completed task of `a`; a live
/// task of `b`.
async fn agents_with_tasks(place: &Place) -> Arc<dyn Store> {
    let s = with_agents(place, &["a", "b"]).await;
    let (a, b) = (agent("a"), agent("b"));
    for (seed, who, state, at, deadline) in [
        (1, &a, TaskState::Active, 30, 100),
        (5, &a, TaskState::PendingApproval, 20, 500),
        (7, &a, TaskState::Active, 10, 700),
        (3, &a, TaskState::Suspended, 20, 300),
        (2, &a, TaskState::Completed, 0, 200),
        (8, &b, TaskState::Active, 0, 800),
    ] {
        s.create_task(
            task(seed, who, state, at, deadline),
            ev(EventKind::TaskCreated),
        )
        .await
        .unwrap();
    }
    s
}

fn cause() -> NewEvent {
    NewEvent::new(EventKind::AgentRevoked, "admin:ops")
        .agent("a")
        .request_id(Some("req-1".into()))
}

async fn revoking_an_agent_revokes_its_live_tasks_oldest_first(place: Place) {
    let s = agents_with_tasks(&place).await;
    let events_before = s.events_since(0, 1000).await.unwrap().len();
    let out = s
        .revoke_agent(&agent("a").name, 40, 900, cause())
        .await
        .unwrap();
    // Oldest first; a tie on created_at goes by id.
    let order = [task_id(7), task_id(3), task_id(5), task_id(1)];

    assert_eq!(out.agent.state, AgentState::Revoked);
    assert_eq!(
        s.get_agent(&agent("a").name).await.unwrap(),
        Some(out.agent)
    );
    assert_eq!(
        out.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        order
    );
    for t in &out.tasks {
        assert_eq!((t.state, t.ended_at), (TaskState::Revoked, Some(40)));
        assert_eq!(s.get_task(&t.id).await.unwrap().as_ref(), Some(t));
    }
    // The feed: the agent's entry (until `feed_expires_at`), then one per
    // task (until its deadline), in that order, exactly as returned.
    let fed: Vec<_> = out
        .revocations
        .iter()
        .map(|r| (r.kind, r.id.clone(), r.revoked_at, r.expires_at))
        .collect();
    let mut expected = vec![(RevocationKind::Agent, "a".to_owned(), 40, 900)];
    for (id, deadline) in order.iter().zip([700, 300, 500, 100]) {
        expected.push((RevocationKind::Task, id.to_string(), 40, deadline));
    }
    assert_eq!(fed, expected);
    assert!(out.revocations.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        s.revocations_since(0, 0, 100).await.unwrap(),
        out.revocations
    );
    // The chain: one cascade event per task in the same order (same actor
    // and request as the cause), then the cause.
    let events = s.events_since(0, 1000).await.unwrap();
    let new: Vec<_> = events[events_before..]
        .iter()
        .map(|e| {
            (
                e.kind,
                e.actor.clone(),
                e.agent.clone(),
                e.task.clone(),
                e.request_id.clone(),
                e.reasons.clone(),
            )
        })
        .collect();
    let mut expected: Vec<_> = order
        .iter()
        .map(|id| {
            (
                EventKind::TaskRevoked,
                "admin:ops".to_owned(),
                Some("a".to_owned()),
                Some(id.to_string()),
                Some("req-1".to_owned()),
                vec!["cascade from agent.revoked".to_owned()],
            )
        })
        .collect();
    expected.push((
        EventKind::AgentRevoked,
        "admin:ops".to_owned(),
        Some("a".to_owned()),
        None,
        Some("req-1".to_owned()),
        vec![],
    ));
    assert_eq!(new, expected);
    verify_chain(events).unwrap();
    // Ended tasks and other agents' tasks are left alone.
    assert_eq!(
        s.get_task(&task_id(2)).await.unwrap().unwrap().state,
        TaskState::Completed
    );
    assert_eq!(
        s.get_task(&task_id(8)).await.unwrap().unwrap().state,
        TaskState::Active
    );
}

/// The third feed entry of the cascade is refused by the database: the
/// agent, the first task and their feed entries and events, all already
/// written within the write, must go with it.
async fn a_cascade_that_fails_half_way_leaves_nothing(place: Place) {
    let s = agents_with_tasks(&place).await;
    let third = task_id(3);
    tamper(
        &place,
        &format!(
            "CREATE TRIGGER refuse_feed BEFORE INSERT ON revocations WHEN NEW.id = '{third}'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ),
        &format!(
            "CREATE FUNCTION refuse_feed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id = '{third}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER refuse_feed BEFORE INSERT ON revocations
             FOR EACH ROW EXECUTE FUNCTION refuse_feed();"
        ),
    );
    let err = refused(&s, s.revoke_agent(&agent("a").name, 40, 900, cause())).await;
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");

    // Once the database takes it, the same revocation goes through whole,
    // and the chain continues without a gap.
    tamper(
        &place,
        "DROP TRIGGER refuse_feed;",
        "DROP TRIGGER refuse_feed ON revocations;",
    );
    let out = s
        .revoke_agent(&agent("a").name, 41, 900, cause())
        .await
        .unwrap();
    assert_eq!(out.tasks.len(), 4);
    assert_eq!(out.revocations.len(), 5);
    let events = s.events_since(0, 1000).await.unwrap();
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
    verify_chain(events).unwrap();
}

async fn revoking_an_unknown_agent_is_not_found(place: Place) {
    let s = agents_with_tasks(&place).await;
    let before = snapshot(&s).await;
    let err = refused(
        &s,
        s.revoke_agent(&AgentName::parse("ghost").unwrap(), 40, 900, cause()),
    )
    .await;
    assert!(
        matches!(&err, StoreError::NotFound { what: "agent", id } if id == "ghost"),
        "{err:?}"
    );
    assert_eq!(snapshot(&s).await, before);
}
