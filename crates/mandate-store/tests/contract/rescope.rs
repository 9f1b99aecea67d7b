//! A task's context switch: the new scope and intent stored, and in the
//! same write each token and each delegated child the new scope no longer
//! covers cut off — nothing else.

use crate::common::{Place, ev};
use crate::fixtures::{agent, child, grant, refused, task, task_id, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::StoreError;
use serde_json::json;

on_each_backend!(
    narrowing_cuts_off_the_tokens_and_children_outside_the_new_scope,
    only_an_active_task_switches,
);

fn scope(v: serde_json::Value) -> Scope {
    serde_json::from_value(v).unwrap()
}

fn grant_of(seed: u8, task: &Task, actions: serde_json::Value, exp: i64) -> Grant {
    Grant {
        scope: serde_json::from_value(json!({"tool": "t", "actions": actions})).unwrap(),
        ..grant(seed, &task.id, &agent("a"), exp)
    }
}

async fn narrowing_cuts_off_the_tokens_and_children_outside_the_new_scope(place: Place) {
    let s = with_agents(&place, &["a", "b", "c", "d"]).await;
    let mut root = task(10, &agent("a"), TaskState::Active, 1, 1000);
    root.scope = scope(json!([{"tool": "t", "actions": ["a", "w"]}]));
    s.create_task(root.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    // Child 11 reads and writes; 12 only reads; 13 sits under 11.
    let mut c11 = child(11, &root, &agent("b"), 2);
    c11.scope = root.scope.clone();
    let c12 = child(12, &root, &agent("c"), 3);
    let c13 = child(13, &c11, &agent("d"), 4);
    for t in [&c11, &c12, &c13] {
        s.delegate_task(t.clone(), 10, ev(EventKind::TaskDelegated), None)
            .await
            .unwrap();
    }
    let (reads, writes, spent) = (
        grant_of(1, &root, json!(["a"]), 900),
        grant_of(2, &root, json!(["a", "w"]), 900),
        grant_of(3, &root, json!(["w"]), 40),
    );
    for g in [&reads, &writes, &spent] {
        s.insert_grant(g.clone(), ev(EventKind::GrantMinted))
            .await
            .unwrap();
    }
    let mut next = root.clone();
    next.scope = scope(json!([{"tool": "t", "actions": ["a"]}]));
    next.intent = "only reading now".into();
    let moved = s
        .rescope_task(next.clone(), 50, ev(EventKind::TaskContextChanged))
        .await
        .unwrap();
    assert_eq!(moved.task, next);
    assert_eq!(s.get_task(&root.id).await.unwrap(), Some(next));
    // 11 writes: it goes, with 13 below it; 12 only reads and stays.
    assert_eq!(moved.subtree, [task_id(11), task_id(13)]);
    for (seed, want) in [
        (11, TaskState::Revoked),
        (13, TaskState::Revoked),
        (12, TaskState::Active),
    ] {
        assert_eq!(
            s.get_task(&task_id(seed)).await.unwrap().unwrap().state,
            want
        );
    }
    // The writing token goes; the reading one and the expired one do not
    // need an entry.
    let fed: Vec<(RevocationKind, String)> = moved
        .revocations
        .iter()
        .map(|r| (r.kind, r.id.clone()))
        .collect();
    assert_eq!(
        fed,
        [
            (RevocationKind::Token, writes.jti.to_string()),
            (RevocationKind::Task, task_id(11).to_string()),
        ]
    );
    assert_eq!(
        s.revocations_since(0, 0, 1000).await.unwrap(),
        moved.revocations
    );
    let events = s.events_since(0, 1000).await.unwrap();
    let switch = events.last().unwrap();
    assert_eq!(switch.kind, EventKind::TaskContextChanged);
    let detail: serde_json::Value = serde_json::from_str(&switch.detail).unwrap();
    assert_eq!(detail["revoked_tokens"], json!([writes.jti.to_string()]));
}

async fn only_an_active_task_switches(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let t = task(10, &agent("a"), TaskState::Active, 1, 1000);
    s.create_task(t.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    s.transition_task(
        &t.id,
        TaskState::Suspended,
        20,
        ev(EventKind::TaskSuspended),
    )
    .await
    .unwrap();
    let err = refused(
        &s,
        s.rescope_task(t.clone(), 30, ev(EventKind::TaskContextChanged)),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Rule(RuleViolation::TaskNotActive { state }) if state == "suspended"),
        "{err:?}"
    );
    // Past its deadline, before the sweeper saw it.
    let late = task(11, &agent("a"), TaskState::Active, 1, 100);
    s.create_task(late.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let err = refused(
        &s,
        s.rescope_task(late, 100, ev(EventKind::TaskContextChanged)),
    )
    .await;
    assert!(
        matches!(err, StoreError::Rule(RuleViolation::TaskNotActive { .. })),
        "{err:?}"
    );
}
