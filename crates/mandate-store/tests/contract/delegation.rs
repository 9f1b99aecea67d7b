//! Delegated tasks: a child is taken only while its parent is live, as the
//! write reads it; ending or suspending a task takes its whole subtree down
//! in the same write, and nothing beside it.

use crate::common::{Place, ev};
use crate::fixtures::{agent, child, grant, refused, snapshot, task, task_id, with_agents};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{Store, StoreError, TaskFilter};
use std::sync::Arc;

on_each_backend!(
    a_revoked_task_takes_its_subtree_in_one_write_with_one_feed_entry,
    a_revoked_child_leaves_its_parent_and_siblings,
    a_suspended_task_revokes_its_subtree_with_an_entry_per_child,
    a_parent_that_is_not_live_takes_no_child,
    revoking_an_agent_takes_the_subtrees_of_its_tasks,
    an_expired_task_takes_its_subtree,
);

/// Root 10 (agent a) → 11 (b) → 13 (d), root → 12 (c); 14 (a) beside it.
async fn tree(place: &Place) -> (Arc<dyn Store>, Vec<Task>) {
    let s = with_agents(place, &["a", "b", "c", "d"]).await;
    let root = task(10, &agent("a"), TaskState::Active, 1, 1000);
    let c11 = child(11, &root, &agent("b"), 2);
    let c12 = child(12, &root, &agent("c"), 3);
    let c13 = child(13, &c11, &agent("d"), 4);
    let beside = task(14, &agent("a"), TaskState::Active, 5, 1000);
    s.create_task(root.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    for t in [&c11, &c12, &c13] {
        s.delegate_task(t.clone(), 10, ev(EventKind::TaskDelegated), None)
            .await
            .unwrap();
    }
    s.create_task(beside.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    (s, vec![root, c11, c12, c13, beside])
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

async fn state(s: &Arc<dyn Store>, seed: u8) -> TaskState {
    s.get_task(&task_id(seed)).await.unwrap().unwrap().state
}

async fn a_revoked_task_takes_its_subtree_in_one_write_with_one_feed_entry(place: Place) {
    let (s, _) = tree(&place).await;
    assert_eq!(
        ids(&s.task_subtree(&task_id(10)).await.unwrap()),
        [task_id(11), task_id(12), task_id(13)]
    );
    let before = s.events_since(0, 1000).await.unwrap().len();
    let moved = s
        .transition_task(
            &task_id(10),
            TaskState::Revoked,
            50,
            ev(EventKind::TaskRevoked),
        )
        .await
        .unwrap();
    assert_eq!(moved.task.state, TaskState::Revoked);
    assert_eq!(moved.subtree, [task_id(11), task_id(12), task_id(13)]);
    for id in &moved.subtree {
        // Read back whole: the state and end time over the body.
        let t = s.get_task(id).await.unwrap().unwrap();
        assert_eq!((t.state, t.ended_at), (TaskState::Revoked, Some(50)));
        assert_eq!(t.delegation.as_ref().unwrap().root, task_id(10));
        assert_eq!(t.state_at(60), TaskState::Revoked);
    }
    let listed = s
        .list_tasks(TaskFilter {
            state: Some(TaskState::Revoked),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 4, "the revoked subtree lists as revoked");
    assert!(listed.iter().all(|t| t.state == TaskState::Revoked));
    assert_eq!(state(&s, 14).await, TaskState::Active, "beside the tree");
    // One entry: every token below names task 10 in its chain.
    let fed: Vec<_> = moved.revocations.iter().map(|r| r.id.clone()).collect();
    assert_eq!(fed, [task_id(10).to_string()]);
    assert_eq!(
        s.revocations_since(0, 0, 1000).await.unwrap(),
        moved.revocations
    );
    // A `task.revoked` per descendant (naming the cause), then the cause.
    let events = s.events_since(0, 1000).await.unwrap();
    let new: Vec<_> = events[before..]
        .iter()
        .map(|e| (e.kind, e.task.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        new,
        [11, 12, 13, 0]
            .iter()
            .map(|n| (
                EventKind::TaskRevoked,
                if *n == 0 {
                    String::new()
                } else {
                    task_id(*n).to_string()
                }
            ))
            .collect::<Vec<_>>()
    );
    assert!(events[before].reasons[0].contains(task_id(10).as_str()));
    verify_chain(events).unwrap();
}

async fn a_revoked_child_leaves_its_parent_and_siblings(place: Place) {
    let (s, _) = tree(&place).await;
    let moved = s
        .transition_task(
            &task_id(11),
            TaskState::Completed,
            50,
            ev(EventKind::TaskCompleted),
        )
        .await
        .unwrap();
    assert_eq!(moved.subtree, [task_id(13)]);
    assert_eq!(state(&s, 10).await, TaskState::Active);
    assert_eq!(state(&s, 12).await, TaskState::Active);
    assert_eq!(state(&s, 13).await, TaskState::Revoked);
}

async fn a_suspended_task_revokes_its_subtree_with_an_entry_per_child(place: Place) {
    let (s, _) = tree(&place).await;
    // Task 10's tokens: one still live at the suspension, one expired.
    let live = grant(1, &task_id(10), &agent("a"), 900);
    let spent = grant(2, &task_id(10), &agent("a"), 40);
    for g in [&live, &spent] {
        s.insert_grant(g.clone(), ev(EventKind::GrantMinted))
            .await
            .unwrap();
    }
    let moved = s
        .transition_task(
            &task_id(10),
            TaskState::Suspended,
            50,
            ev(EventKind::Decision),
        )
        .await
        .unwrap();
    assert_eq!(moved.task.state, TaskState::Suspended);
    assert_eq!(moved.subtree, [task_id(11), task_id(12), task_id(13)]);
    // A suspended task may come back, so it gets no entry of its own: its
    // live tokens do (they stay dead; a resumed task mints new ones), and
    // its children each get one covering their own subtree.
    let fed: Vec<_> = moved
        .revocations
        .iter()
        .map(|r| (r.kind, r.id.clone(), r.expires_at))
        .collect();
    assert_eq!(
        fed,
        [
            (RevocationKind::Token, live.jti.to_string(), 900),
            (RevocationKind::Task, task_id(11).to_string(), 1000),
            (RevocationKind::Task, task_id(12).to_string(), 1000),
        ]
    );
    assert_eq!(
        s.revocations_since(0, 0, 1000).await.unwrap(),
        moved.revocations
    );
}

async fn a_parent_that_is_not_live_takes_no_child(place: Place) {
    let (s, t) = tree(&place).await;
    s.transition_task(
        &task_id(12),
        TaskState::Revoked,
        20,
        ev(EventKind::TaskRevoked),
    )
    .await
    .unwrap();
    let before = snapshot(&s).await;
    let under_revoked = child(15, &t[2], &agent("d"), 30);
    // With its first grant: neither is stored.
    let first = grant(15, &task_id(15), &agent("d"), 900);
    let err = refused(
        &s,
        s.delegate_task(
            under_revoked,
            30,
            ev(EventKind::TaskDelegated),
            Some((first.clone(), ev(EventKind::GrantMinted))),
        ),
    )
    .await;
    assert_eq!(s.get_grant(first.jti.as_str()).await.unwrap(), None);
    assert!(
        matches!(&err, StoreError::Rule(RuleViolation::TaskNotActive { state }) if state == "revoked"),
        "{err:?}"
    );
    // Past its deadline, even before the sweeper has seen it.
    let overdue = child(16, &t[1], &agent("c"), 30);
    let err = refused(
        &s,
        s.delegate_task(overdue, 1000, ev(EventKind::TaskDelegated), None),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Rule(RuleViolation::TaskNotActive { state }) if state == "expired"),
        "{err:?}"
    );
    assert_eq!(snapshot(&s).await, before);
    // Under a live parent, the child and its first grant land together,
    // the grant's event after the child's.
    let fresh = child(17, &t[0], &agent("b"), 30);
    let first = grant(17, &task_id(17), &agent("b"), 900);
    s.delegate_task(
        fresh.clone(),
        30,
        ev(EventKind::TaskDelegated),
        Some((first.clone(), ev(EventKind::GrantMinted))),
    )
    .await
    .unwrap();
    assert_eq!(s.get_task(&fresh.id).await.unwrap(), Some(fresh));
    assert_eq!(s.get_grant(first.jti.as_str()).await.unwrap(), Some(first));
    let kinds: Vec<EventKind> = s
        .events_since(0, 1000)
        .await
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::GrantMinted, EventKind::TaskDelegated]);
}

async fn revoking_an_agent_takes_the_subtrees_of_its_tasks(place: Place) {
    let (s, _) = tree(&place).await;
    let out = s
        .revoke_agent(&agent("b").name, 60, 900, ev(EventKind::AgentRevoked))
        .await
        .unwrap();
    assert_eq!(ids(&out.tasks), [task_id(11)]);
    assert_eq!(out.below, [task_id(13)]);
    assert_eq!(state(&s, 13).await, TaskState::Revoked);
    assert_eq!(state(&s, 10).await, TaskState::Active);
}

async fn an_expired_task_takes_its_subtree(place: Place) {
    let (s, _) = tree(&place).await;
    let changed = s.expire_due_tasks(1000).await.unwrap();
    // Oldest first; each descendant once, revoked with its root.
    let expired: Vec<TaskId> = changed.iter().map(|m| m.task.id.clone()).collect();
    assert_eq!(expired, [task_id(10), task_id(14)]);
    assert_eq!(changed[0].subtree, [task_id(11), task_id(12), task_id(13)]);
    // Its children are fed (the expired task itself is not: its tokens
    // expire with it), each entry covering its own subtree.
    let fed: Vec<String> = changed[0]
        .revocations
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(fed, [task_id(11).to_string(), task_id(12).to_string()]);
    assert_eq!(state(&s, 10).await, TaskState::Expired);
    assert_eq!(state(&s, 13).await, TaskState::Revoked);
}
