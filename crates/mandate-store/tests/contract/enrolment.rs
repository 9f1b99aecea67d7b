//! How an agent gets its key and logs in: a join token is used once,
//! before it expires, by an active agent; a client assertion's `jti` is
//! accepted once.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{agent, refused, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_store::StoreError;

on_each_backend!(
    a_join_token_enrols_once_before_it_expires,
    a_revoked_agent_cannot_enrol,
    a_client_assertion_is_accepted_once,
);

async fn a_join_token_enrols_once_before_it_expires(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    for hash in ["h1", "h2"] {
        s.create_join_token(hash.into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
            .await
            .unwrap();
    }
    let err = refused(
        &s,
        s.create_join_token("h1".into(), &a.name, 200, ev(EventKind::JoinTokenIssued)),
    )
    .await;
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                what: "join token",
                ..
            }
        ),
        "{err:?}"
    );
    let key = serde_json::json!({"kty": "OKP"});
    let enrolled = s
        .enroll_agent_key(
            "h1".into(),
            key.clone(),
            50,
            ev(EventKind::AgentKeyEnrolled),
        )
        .await
        .unwrap();
    assert_eq!(enrolled.enrolled_key, Some(key.clone()));
    assert_eq!(s.get_agent(&a.name).await.unwrap(), Some(enrolled));
    let last = s.last_event().await.unwrap().unwrap();
    assert_eq!(
        (last.kind, last.agent.as_deref()),
        (EventKind::AgentKeyEnrolled, Some("a")),
        "the event names the agent"
    );
    let other = serde_json::json!({"kty": "EC"});
    for (hash, at) in [("h1", 51), ("h2", 100), ("unknown", 51)] {
        let err = refused(
            &s,
            s.enroll_agent_key(
                hash.into(),
                other.clone(),
                at,
                ev(EventKind::AgentKeyEnrolled),
            ),
        )
        .await;
        assert!(
            matches!(err, StoreError::JoinTokenInvalid),
            "{hash}: {err:?}"
        );
    }
}

async fn a_revoked_agent_cannot_enrol(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    s.create_join_token("h".into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.revoke_agent(&a.name, 10, 100, ev(EventKind::AgentRevoked))
        .await
        .unwrap();
    let key = serde_json::json!({"kty": "OKP"});
    let err = refused(
        &s,
        s.enroll_agent_key("h".into(), key, 20, ev(EventKind::AgentKeyEnrolled)),
    )
    .await;
    assert!(matches!(err, StoreError::JoinTokenInvalid), "{err:?}");
}

async fn a_client_assertion_is_accepted_once(place: Place) {
    let s = seeded(&place).await;
    s.record_login(Some(("j1".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    s.record_login(None, ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    let err = refused(
        &s,
        s.record_login(Some(("j1".into(), 100)), ev(EventKind::LoginSucceeded)),
    )
    .await;
    assert!(matches!(err, StoreError::Replay), "{err:?}");
    let kinds: Vec<_> = s
        .events_since(1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::LoginSucceeded, EventKind::LoginSucceeded]
    );
}
