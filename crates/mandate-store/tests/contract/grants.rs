//! Minted grants: stored with their event in the same group as refused
//! writes; a grant that cannot be stored refuses only its own write.

use crate::common::{Place, ev};
use crate::fixtures::{agent, agent_of, grant, task, with_agents};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::StoreError;

on_each_backend!(
    grants_are_stored_with_their_event_beside_refused_writes,
    a_grant_that_cannot_be_stored_refuses_only_its_own_write,
);

async fn grants_are_stored_with_their_event_beside_refused_writes(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    let t = task(7, &a, TaskState::Active, 0, 100);
    s.create_task(t.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    // Minted concurrently with refused writes: same groups, own fates.
    let mut handles = Vec::new();
    for i in 0..40u8 {
        let (s, g) = (s.clone(), grant(i, &t.id, &a, 60 + i64::from(i)));
        handles.push(tokio::spawn(async move {
            if i % 4 == 0 {
                s.create_agent(
                    agent_of(&format!("x{i}"), "nobody"),
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
        let g = grant(i, &t.id, &a, 60 + i64::from(i));
        let stored = s.get_grant(g.jti.as_str()).await.unwrap();
        if i % 4 == 0 {
            assert!(stored.is_none(), "grant {i} of no write");
        } else {
            assert_eq!(stored, Some(g));
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
/// and takes nothing else down, though PostgreSQL stores a group's grants
/// in one statement.
async fn a_grant_that_cannot_be_stored_refuses_only_its_own_write(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    let t = task(7, &a, TaskState::Active, 0, 100);
    s.create_task(t.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let taken = grant(200, &t.id, &a, 50);
    s.insert_grant(taken.clone(), ev(EventKind::GrantMinted))
        .await
        .unwrap();
    let events_before = s.events_since(0, 1000).await.unwrap().len();
    let unknown = TaskId::from_random([9; 16]);
    let mut handles = Vec::new();
    for i in 0..60u8 {
        let g = match i % 3 {
            0 => grant(200, &t.id, &a, 60 + i64::from(i)),
            1 => grant(i, &unknown, &a, 60),
            _ => grant(i, &t.id, &a, 60),
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
