//! Owners, agents, bindings and tools: one name, one row; what names a
//! missing owner or tool is refused; listings in a defined order.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{agent, agent_of, owner, refused, secret_of, tool, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::StoreError;

on_each_backend!(
    a_second_owner_agent_or_tool_of_a_name_is_the_same_conflict,
    what_names_a_missing_owner_or_tool_is_not_found,
    bindings_match_exactly_and_list_in_the_order_they_were_added,
    a_tool_update_keeps_its_name_and_audience,
);

fn conflict(err: &StoreError) -> (&'static str, &str) {
    match err {
        StoreError::Conflict { what, id } => (what, id),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn not_found(err: &StoreError) -> (&'static str, &str) {
    match err {
        StoreError::NotFound { what, id } => (what, id),
        other => panic!("expected not found, got {other:?}"),
    }
}

async fn a_second_owner_agent_or_tool_of_a_name_is_the_same_conflict(place: Place) {
    let s = seeded(&place).await;
    let err = refused(
        &s,
        s.create_owner(owner("platform"), ev(EventKind::OwnerCreated)),
    )
    .await;
    assert_eq!(conflict(&err), ("owner", "platform"));

    s.create_agent(agent("a"), ev(EventKind::AgentCreated))
        .await
        .unwrap();
    let mut again = agent("a");
    again.description = "another".into();
    let err = refused(&s, s.create_agent(again, ev(EventKind::AgentCreated))).await;
    assert_eq!(conflict(&err), ("agent", "a"));

    s.create_tool(tool("t", "urn:t"), ev(EventKind::ToolCreated))
        .await
        .unwrap();
    let err = refused(
        &s,
        s.create_tool(tool("t", "urn:other"), ev(EventKind::ToolCreated)),
    )
    .await;
    assert_eq!(conflict(&err), ("tool", "t"));
    // One audience, one tool: a token for one must never pass for another.
    let err = refused(
        &s,
        s.create_tool(tool("u", "urn:t"), ev(EventKind::ToolCreated)),
    )
    .await;
    assert_eq!(conflict(&err), ("tool audience", "urn:t"));
    // Both taken: the audience is named.
    let err = refused(
        &s,
        s.create_tool(tool("t", "urn:t"), ev(EventKind::ToolCreated)),
    )
    .await;
    assert_eq!(conflict(&err), ("tool audience", "urn:t"));
}

async fn what_names_a_missing_owner_or_tool_is_not_found(place: Place) {
    let s = seeded(&place).await;
    let err = refused(
        &s,
        s.create_agent(agent_of("a", "nobody"), ev(EventKind::AgentCreated)),
    )
    .await;
    assert_eq!(not_found(&err), ("owner", "nobody"));
    let mut orphan = tool("t", "urn:t");
    orphan.owner = OwnerName::parse("nobody").unwrap();
    let err = refused(&s, s.create_tool(orphan, ev(EventKind::ToolCreated))).await;
    assert_eq!(not_found(&err), ("owner", "nobody"));

    s.create_tool(tool("t", "urn:t"), ev(EventKind::ToolCreated))
        .await
        .unwrap();
    let (k, _) = s.data_key(b"w".to_vec(), 1).await.unwrap();
    let err = refused(
        &s,
        s.put_secret(
            secret_of("s", "nope", "platform"),
            crate::fixtures::sealed(k, b"v"),
            ev(EventKind::SecretStored),
        ),
    )
    .await;
    assert_eq!(not_found(&err), ("tool", "nope"));
    let err = refused(
        &s,
        s.put_secret(
            secret_of("s", "t", "nobody"),
            crate::fixtures::sealed(k, b"v"),
            ev(EventKind::SecretStored),
        ),
    )
    .await;
    assert_eq!(not_found(&err), ("owner", "nobody"));
    let err = refused(
        &s,
        s.update_tool(tool("ghost", "urn:ghost"), ev(EventKind::ToolUpdated)),
    )
    .await;
    assert_eq!(not_found(&err), ("tool", "ghost"));
}

async fn bindings_match_exactly_and_list_in_the_order_they_were_added(place: Place) {
    let s = with_agents(&place, &["a", "b"]).await;
    let (a, b) = (agent("a"), agent("b"));
    let binding = |agent: &Agent, sub: &str, ns: &str| Binding {
        agent: agent.name.clone(),
        issuer: "https://iss".into(),
        subject: sub.into(),
        claims: [("ns".to_owned(), ns.to_owned())].into(),
    };
    // Neither by agent nor by claims: in the order they were added.
    let added = [
        binding(&b, "ci", "zeta"),
        binding(&a, "ci", "alpha"),
        binding(&b, "ci", "mid"),
        binding(&a, "other", "alpha"),
    ];
    for x in &added {
        s.add_binding(x.clone(), ev(EventKind::AgentBindingAdded))
            .await
            .unwrap();
    }
    let err = refused(
        &s,
        s.add_binding(binding(&a, "ci", "alpha"), ev(EventKind::AgentBindingAdded)),
    )
    .await;
    assert_eq!(conflict(&err), ("binding", "https://iss ci"));
    assert_eq!(
        s.bindings_for("https://iss", "ci").await.unwrap(),
        added[..3].to_vec()
    );
    assert_eq!(
        s.bindings_for("https://iss", "other").await.unwrap(),
        vec![added[3].clone()]
    );
    assert!(
        s.bindings_for("https://elsewhere", "ci")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_bindings(&a.name).await.unwrap(),
        vec![added[1].clone(), added[3].clone()]
    );
    assert_eq!(
        s.list_bindings(&b.name).await.unwrap(),
        vec![added[0].clone(), added[2].clone()]
    );
}

async fn a_tool_update_keeps_its_name_and_audience(place: Place) {
    let s = seeded(&place).await;
    let mut t = tool("t", "urn:t");
    s.create_tool(t.clone(), ev(EventKind::ToolCreated))
        .await
        .unwrap();
    t.description = "changed".into();
    s.update_tool(t.clone(), ev(EventKind::ToolUpdated))
        .await
        .unwrap();
    assert_eq!(s.get_tool(&t.name).await.unwrap(), Some(t.clone()));
    let events = s.events_since(0, 100).await.unwrap();
    assert_eq!(events.last().unwrap().kind, EventKind::ToolUpdated);
    // The audience is fixed: an update that moves it finds no such tool.
    let mut moved = t.clone();
    moved.audience = "urn:elsewhere".into();
    let err = refused(&s, s.update_tool(moved, ev(EventKind::ToolUpdated))).await;
    assert_eq!(not_found(&err), ("tool", "t"));
    assert_eq!(s.list_tools().await.unwrap(), vec![t]);
}
