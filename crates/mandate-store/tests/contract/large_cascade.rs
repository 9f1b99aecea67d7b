//! A subtree larger than one batch of events (`events::insert_all` stores
//! 500 rows to a statement): every task ends in the one write, each with
//! its own `task.revoked` in the cascade's order, and the chain verifies.

use crate::common::{Place, ev};
use crate::fixtures::{agent, child, task, with_agents};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;

on_each_backend!(a_subtree_of_many_batches_ends_whole_with_an_event_per_task_in_order,);

/// More than two batches of 500, and a last batch that is not full.
const BELOW: usize = 1_234;

fn id(n: usize) -> TaskId {
    let mut b = [0xab; 16];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    TaskId::from_random(b)
}

async fn a_subtree_of_many_batches_ends_whole_with_an_event_per_task_in_order(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let root = task(1, &agent("a"), TaskState::Active, 1, 1000);
    s.create_task(root.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    // Half the tasks hang off the root, the rest one level lower; their
    // creation times are shuffled so that neither ids nor insertion order
    // are the cascade's order.
    let mut below: Vec<Task> = Vec::with_capacity(BELOW);
    for n in 0..BELOW {
        let parent = if n < BELOW / 2 {
            &root
        } else {
            &below[n - BELOW / 2]
        };
        let created_at = 2 + ((n * 7919) % 97) as i64;
        below.push(Task {
            id: id(n),
            ..child(0, parent, &agent("b"), created_at)
        });
    }
    // A level at a time, concurrently (so that writes share commits).
    for level in below.chunks(BELOW / 2) {
        let pending: Vec<_> = level
            .iter()
            .map(|t| {
                let (s, t) = (s.clone(), t.clone());
                tokio::spawn(async move {
                    s.delegate_task(t, 2, ev(EventKind::TaskDelegated), None)
                        .await
                })
            })
            .collect();
        for p in pending {
            p.await.unwrap().unwrap();
        }
    }
    let seen = s.events_since(0, 10_000).await.unwrap().len();
    let moved = s
        .transition_task(
            &root.id,
            TaskState::Revoked,
            500,
            ev(EventKind::TaskRevoked),
        )
        .await
        .unwrap();

    below.sort_by(|x, y| (x.created_at, x.id.as_str()).cmp(&(y.created_at, y.id.as_str())));
    let order: Vec<TaskId> = below.iter().map(|t| t.id.clone()).collect();
    assert_eq!(moved.subtree, order, "every task below, oldest first");
    for id in [&order[0], &order[BELOW / 2], &order[BELOW - 1]] {
        let t = s.get_task(id).await.unwrap().unwrap();
        assert_eq!((t.state, t.ended_at), (TaskState::Revoked, Some(500)));
    }
    let events = s.events_since(0, 10_000).await.unwrap();
    let new: Vec<_> = events[seen..]
        .iter()
        .map(|e| (e.kind, e.task.clone()))
        .collect();
    let mut expected: Vec<_> = order
        .iter()
        .map(|id| (EventKind::TaskRevoked, Some(id.to_string())))
        .collect();
    expected.push((EventKind::TaskRevoked, None));
    assert_eq!(
        new, expected,
        "one event per task, in the cascade's order, then the cause"
    );
    assert_eq!(verify_chain(events).unwrap() as usize, seen + BELOW + 1);
}
