//! The audit chain: every write's events in one valid chain, whatever
//! else fails in the same group, read back in order, across reopening.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{agent, agent_of};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_store::StoreError;

on_each_backend!(
    concurrent_writes_group_commit_into_one_valid_chain,
    events_read_back_in_order_in_pages,
    reopening_keeps_state_and_continues_the_chain,
);

async fn concurrent_writes_group_commit_into_one_valid_chain(place: Place) {
    let s = seeded(&place).await;
    s.create_agent(agent("taken"), ev(EventKind::AgentCreated))
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
                    agent_of(&format!("x{i}"), "nobody"),
                    ev(EventKind::AgentCreated),
                )
                .await
                .unwrap_err();
            } else if i % 11 == 0 {
                let err = s
                    .create_agent(agent("taken"), ev(EventKind::AgentCreated))
                    .await
                    .unwrap_err();
                assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            } else if i % 5 == 0 {
                s.create_agent(agent(&format!("a{i}")), ev(EventKind::AgentCreated))
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
    let created = (0..300)
        .filter(|i| i % 7 != 0 && i % 11 != 0 && i % 5 == 0)
        .count();
    assert_eq!(s.list_agents().await.unwrap().len(), 1 + created);
}

async fn events_read_back_in_order_in_pages(place: Place) {
    let s = place.open().await;
    assert_eq!(s.last_event().await.unwrap(), None);
    assert!(s.events_since(0, 10).await.unwrap().is_empty());
    // One write's events, in the order given, with nothing between them.
    s.append_events((1..=5).map(|i| ev(EventKind::Decision).agent(i)).collect())
        .await
        .unwrap();
    let all = s.events_since(0, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.seq, e.agent.clone().unwrap()))
            .collect::<Vec<_>>(),
        (1..=5).map(|i| (i, i.to_string())).collect::<Vec<_>>()
    );
    assert_eq!(s.events_since(1, 2).await.unwrap(), all[1..3].to_vec());
    assert_eq!(s.events_since(4, 10).await.unwrap(), all[4..].to_vec());
    assert!(s.events_since(5, 10).await.unwrap().is_empty());
    assert!(s.events_since(u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(s.last_event().await.unwrap().as_ref(), all.last());
    verify_chain(all).unwrap();
}

async fn reopening_keeps_state_and_continues_the_chain(place: Place) {
    {
        let s = seeded(&place).await;
        s.create_agent(agent("a"), ev(EventKind::AgentCreated))
            .await
            .unwrap();
        s.close();
    }
    let s = place.open().await;
    assert_eq!(s.list_agents().await.unwrap(), vec![agent("a")]);
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.events_since(0, 100).await.unwrap()).unwrap(),
        3
    );
}
