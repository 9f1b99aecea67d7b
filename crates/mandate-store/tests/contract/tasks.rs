//! Tasks: exactly the state machine's edges, each with its event (and a
//! feed entry for completion and revocation); a refused edge changes
//! nothing; listings newest first; due tasks expire oldest first.

use crate::common::{Place, ev};
use crate::fixtures::{agent, refused, snapshot, task, task_id, with_agents};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{StoreError, TaskFilter};

on_each_backend!(
    every_edge_of_the_state_machine_and_no_other,
    a_task_id_is_taken_once_and_an_unknown_task_is_not_found,
    tasks_list_newest_first_filtered_and_in_pages,
    due_tasks_expire_oldest_first_and_nothing_else_moves,
    break_glass_tasks_list_apart_and_announce_their_end,
);

/// The edges a task may take, written out rather than asked of the core
/// crate: the store must apply these and refuse every other.
fn allowed(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    matches!(
        (from, to),
        (PendingApproval, Active | Revoked | Expired)
            | (Active, Completed | Expired | Revoked | Suspended)
            | (Suspended, Active | Revoked | Expired)
    )
}

async fn every_edge_of_the_state_machine_and_no_other(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    let mut seed = 0u8;
    for &from in TaskState::ALL {
        for &to in TaskState::ALL {
            seed += 1;
            let t = task(seed, &a, from, 0, 1000);
            s.create_task(t.clone(), ev(EventKind::TaskCreated))
                .await
                .unwrap();
            let cause = ev(EventKind::Decision)
                .task(&t.id)
                .reasons(vec![format!("{from} -> {to}")]);
            if !allowed(from, to) {
                let err = refused(&s, s.transition_task(&t.id, to, 5, cause)).await;
                assert!(
                    matches!(&err, StoreError::Rule(RuleViolation::IllegalTransition { from: f, to: t })
                        if *f == from.to_string() && *t == to.to_string()),
                    "{from} -> {to}: {err:?}"
                );
                continue;
            }
            let feed_before = s.revocations_since(0, 0, 1000).await.unwrap();
            let done = s.transition_task(&t.id, to, 5, cause).await.unwrap();
            assert!(done.subtree.is_empty());
            let (moved, fed) = (done.task, done.revocations.first().cloned());
            assert!(done.revocations.len() <= 1);
            assert_eq!(moved.state, to, "{from} -> {to}");
            assert_eq!(
                moved.ended_at,
                to.is_terminal().then_some(5),
                "{from} -> {to}"
            );
            assert_eq!(s.get_task(&t.id).await.unwrap(), Some(moved.clone()));
            // Completion and revocation put the task on the feed until its deadline.
            let expected = matches!(to, TaskState::Completed | TaskState::Revoked);
            assert_eq!(fed.is_some(), expected, "{from} -> {to}");
            let feed = s.revocations_since(0, 0, 1000).await.unwrap();
            if let Some(r) = &fed {
                assert_eq!(
                    (r.kind, r.id.as_str(), r.revoked_at, r.expires_at),
                    (RevocationKind::Task, t.id.as_str(), 5, 1000)
                );
                assert_eq!(feed[..feed.len() - 1], feed_before[..]);
                assert_eq!(feed.last(), Some(r));
            } else {
                assert_eq!(feed, feed_before);
            }
            let last = s.last_event().await.unwrap().unwrap();
            assert_eq!(last.reasons, vec![format!("{from} -> {to}")]);
        }
    }
    verify_chain(s.events_since(0, 1000).await.unwrap()).unwrap();
}

async fn a_task_id_is_taken_once_and_an_unknown_task_is_not_found(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    s.create_task(
        task(1, &a, TaskState::Active, 0, 100),
        ev(EventKind::TaskCreated),
    )
    .await
    .unwrap();
    let err = refused(
        &s,
        s.create_task(
            task(1, &a, TaskState::PendingApproval, 5, 200),
            ev(EventKind::TaskCreated),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "task", id } if id == task_id(1).as_str()),
        "{err:?}"
    );
    let err = refused(
        &s,
        s.transition_task(
            &task_id(2),
            TaskState::Revoked,
            5,
            ev(EventKind::TaskRevoked),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::NotFound { what: "task", id } if id == task_id(2).as_str()),
        "{err:?}"
    );
    assert_eq!(s.get_task(&task_id(2)).await.unwrap(), None);
}

async fn tasks_list_newest_first_filtered_and_in_pages(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let (a, b) = (agent("a"), agent("b"));
    // (seed, agent, state, created_at); seeds 4 and 2 tie on created_at.
    let made = [
        (4, &a, TaskState::Active, 20),
        (1, &b, TaskState::PendingApproval, 30),
        (3, &a, TaskState::Suspended, 10),
        (2, &a, TaskState::Active, 20),
    ];
    for (seed, who, state, at) in made {
        s.create_task(task(seed, who, state, at, 1000), ev(EventKind::TaskCreated))
            .await
            .unwrap();
    }
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let list = |agent: Option<&Agent>, state: Option<TaskState>, limit: usize| {
        let s = s.clone();
        let agent = agent.map(|a| a.name.clone());
        async move {
            ids(s
                .list_tasks(TaskFilter {
                    agent,
                    state,
                    limit,
                    breakglass: false,
                })
                .await
                .unwrap())
        }
    };
    // Newest first; a tie on created_at goes by id.
    assert_eq!(
        list(None, None, 0).await,
        [task_id(1), task_id(2), task_id(4), task_id(3)]
    );
    assert_eq!(list(None, None, 2).await, [task_id(1), task_id(2)]);
    assert_eq!(
        list(Some(&a), None, 0).await,
        [task_id(2), task_id(4), task_id(3)]
    );
    assert_eq!(
        list(Some(&a), Some(TaskState::Active), 1).await,
        [task_id(2)]
    );
    assert_eq!(
        list(None, Some(TaskState::PendingApproval), 0).await,
        [task_id(1)]
    );
    assert!(list(Some(&b), Some(TaskState::Active), 0).await.is_empty());

    // No limit means a page of 100.
    let mut writes = Vec::new();
    for seed in 100..=200u8 {
        let (s, t) = (s.clone(), task(seed, &b, TaskState::Active, 0, 1000));
        writes.push(tokio::spawn(async move {
            s.create_task(t, ev(EventKind::TaskCreated)).await.unwrap()
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    assert_eq!(list(Some(&b), None, 0).await.len(), 100);
    assert_eq!(list(Some(&b), None, 500).await.len(), 102);
}

async fn due_tasks_expire_oldest_first_and_nothing_else_moves(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let (a, b) = (agent("a"), agent("b"));
    // (seed, agent, state, created_at, deadline), created in this order:
    // neither id nor creation order is the order of expiry.
    let made = [
        (5, &a, TaskState::Active, 30, 100),
        (2, &b, TaskState::Suspended, 10, 50),
        (9, &a, TaskState::PendingApproval, 20, 100),
        (1, &a, TaskState::Active, 30, 99),
        (3, &a, TaskState::Active, 5, 101),   // not yet due
        (4, &b, TaskState::Completed, 1, 10), // ended already
        (6, &b, TaskState::Revoked, 1, 10),   // ended already
    ];
    for (seed, who, state, at, deadline) in made {
        s.create_task(
            task(seed, who, state, at, deadline),
            ev(EventKind::TaskCreated),
        )
        .await
        .unwrap();
    }
    let feed_before = s.revocations_since(0, i64::MIN, 1000).await.unwrap();
    let events_before = s.events_since(0, 1000).await.unwrap().len();
    let expired: Vec<Task> = s
        .expire_due_tasks(100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.task)
        .collect();
    // Oldest first (created_at, then id); a deadline at `now` is due.
    let order = [task_id(2), task_id(9), task_id(1), task_id(5)];
    assert_eq!(
        expired.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        order
    );
    for t in &expired {
        assert_eq!((t.state, t.ended_at), (TaskState::Expired, Some(100)));
        assert_eq!(s.get_task(&t.id).await.unwrap().as_ref(), Some(t));
    }
    let events = s.events_since(0, 1000).await.unwrap();
    let new: Vec<_> = events[events_before..]
        .iter()
        .map(|e| {
            (
                e.kind,
                e.actor.as_str(),
                e.task.clone().unwrap(),
                e.agent.clone().unwrap(),
                e.reasons.clone(),
            )
        })
        .collect();
    let expected: Vec<_> = expired
        .iter()
        .map(|t| {
            (
                EventKind::TaskExpired,
                "system",
                t.id.to_string(),
                t.agent.to_string(),
                vec!["deadline passed".to_owned()],
            )
        })
        .collect();
    assert_eq!(new, expected);
    // Expiry ends tokens by the deadline itself: no feed entry.
    assert_eq!(
        s.revocations_since(0, i64::MIN, 1000).await.unwrap(),
        feed_before
    );
    for (seed, state) in [
        (3, TaskState::Active),
        (4, TaskState::Completed),
        (6, TaskState::Revoked),
    ] {
        assert_eq!(
            s.get_task(&task_id(seed)).await.unwrap().unwrap().state,
            state
        );
    }
    // Nothing more is due: no change, no event.
    let before = snapshot(&s).await;
    assert!(s.expire_due_tasks(100).await.unwrap().is_empty());
    assert_eq!(snapshot(&s).await, before);
    verify_chain(events).unwrap();
}

async fn break_glass_tasks_list_apart_and_announce_their_end(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let plain = task(1, &agent("a"), TaskState::Active, 1, 1000);
    let mut bg = task(2, &agent("a"), TaskState::Active, 2, 20);
    bg.breakglass = Some(BreakGlass {
        justification: "INC-1 \"breakglass\":{ in the text".into(),
        opened_by: "admin:o".into(),
        opened_at: 2,
    });
    let mut quoted = task(3, &agent("a"), TaskState::Active, 3, 1000);
    quoted.intent = "\"breakglass\":{ only in the intent".into();
    for t in [&plain, &bg, &quoted] {
        s.create_task(t.clone(), ev(EventKind::TaskCreated))
            .await
            .unwrap();
    }
    let listed = s
        .list_tasks(TaskFilter {
            breakglass: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![bg.id.clone()],
        "only the break-glass task, not one whose text merely quotes the key"
    );
    // Its end, by the sweeper here, is announced with it.
    let moved = s.expire_due_tasks(30).await.unwrap();
    assert_eq!(moved.len(), 1);
    let closed: Vec<_> = s
        .events_since(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::BreakglassClosed)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].task.as_deref(), Some(bg.id.as_str()));
}
