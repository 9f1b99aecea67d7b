//! Leases: recorded only for a live task, due for destruction once their
//! task is no longer active (however it ended) or their issue failed, held
//! back by a failed attempt's backoff, and done once revoked.

use crate::common::{Place, ev};
use crate::fixtures::{agent, child, refused, snapshot, task, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::LeaseFilter;

on_each_backend!(
    a_lease_is_recorded_for_a_live_task_only,
    leases_fall_due_when_their_task_ends_and_wait_out_backoff,
);

fn lease(seed: u8, t: &Task, deadline: i64) -> Lease {
    Lease {
        id: LeaseId::from_random([seed; 16]),
        task: t.id.clone(),
        agent: t.agent.clone(),
        tool: ToolName::parse("orders-db").unwrap(),
        role: "readonly".into(),
        login: format!("mnd_{seed}"),
        state: LeaseState::Active,
        created_at: 10,
        expires_at: deadline,
        revoked_at: None,
        attempts: 0,
        last_error: None,
        next_attempt_at: None,
    }
}

async fn a_lease_is_recorded_for_a_live_task_only(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    let live = task(1, &a, TaskState::Active, 0, 1000);
    let done = task(2, &a, TaskState::Completed, 0, 1000);
    for t in [&live, &done] {
        s.create_task(t.clone(), ev(EventKind::TaskCreated))
            .await
            .unwrap();
    }
    s.create_lease(lease(1, &live, 1000), 10, vec![ev(EventKind::LeaseCreated)])
        .await
        .unwrap();
    let before = snapshot(&s).await;
    let err = refused(
        &s,
        s.create_lease(lease(2, &done, 1000), 10, vec![ev(EventKind::LeaseCreated)]),
    )
    .await;
    assert!(matches!(err, mandate_store::StoreError::Rule(_)), "{err:?}");
    // Past its deadline a task is not live either.
    let err = refused(
        &s,
        s.create_lease(
            lease(3, &live, 1000),
            1000,
            vec![ev(EventKind::LeaseCreated)],
        ),
    )
    .await;
    assert!(matches!(err, mandate_store::StoreError::Rule(_)), "{err:?}");
    assert_eq!(snapshot(&s).await, before);
    let got = s
        .get_lease(&lease(1, &live, 1000).id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, lease(1, &live, 1000));
}

async fn leases_fall_due_when_their_task_ends_and_wait_out_backoff(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let (a, b) = (agent("a"), agent("b"));
    let parent = task(1, &a, TaskState::Active, 0, 1000);
    let kid = child(2, &parent, &b, 1);
    let other = task(3, &a, TaskState::Active, 0, 500);
    s.create_task(parent.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    s.delegate_task(kid.clone(), 1, ev(EventKind::TaskDelegated), None)
        .await
        .unwrap();
    s.create_task(other.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    for (seed, t) in [(1, &parent), (2, &kid), (3, &other)] {
        s.create_lease(
            lease(seed, t, t.deadline),
            10,
            vec![ev(EventKind::LeaseCreated)],
        )
        .await
        .unwrap();
    }
    let due = |now: i64| {
        let s = s.clone();
        async move {
            let mut ids: Vec<String> = s
                .due_leases(now, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.login)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(due(100).await, Vec::<String>::new(), "all tasks live");
    // The other task's deadline passes: its lease is due, unmarked.
    assert_eq!(due(500).await, ["mnd_3"]);
    // Revoking the parent ends the child by cascade: both leases are due.
    s.transition_task(
        &parent.id,
        TaskState::Revoked,
        100,
        ev(EventKind::TaskRevoked),
    )
    .await
    .unwrap();
    assert_eq!(due(100).await, ["mnd_1", "mnd_2"]);
    // A failed attempt waits out its backoff; a revoked lease is done.
    let mut one = s
        .get_lease(&lease(1, &parent, 0).id)
        .await
        .unwrap()
        .unwrap();
    one.state = LeaseState::Failed;
    one.attempts = 1;
    one.last_error = Some("unreachable".into());
    one.next_attempt_at = Some(150);
    s.update_lease(one.clone(), None).await.unwrap();
    let mut two = s.get_lease(&lease(2, &kid, 0).id).await.unwrap().unwrap();
    two.state = LeaseState::Revoked;
    two.revoked_at = Some(100);
    s.update_lease(two, Some(ev(EventKind::LeaseRevoked)))
        .await
        .unwrap();
    assert_eq!(due(100).await, Vec::<String>::new());
    assert_eq!(due(150).await, ["mnd_1"]);
    let failed = s
        .list_leases(LeaseFilter {
            failed: true,
            ..LeaseFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed, vec![one]);
    assert_eq!(s.count_failed_leases().await.unwrap(), 1);
    assert_eq!(
        s.open_leases(10).await.unwrap().len(),
        2,
        "the failed one and the other task's"
    );
}
