//! The revocation feed: tokens and keys revoked by id, read in `seq`
//! pages of what still matters, pruned once it no longer does.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{agent, refused, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::StoreError;

on_each_backend!(
    tokens_and_keys_are_revoked_by_id_and_nothing_else_is,
    the_feed_pages_by_seq_and_leaves_out_what_has_expired,
    prune_forgets_only_what_has_expired,
);

async fn tokens_and_keys_are_revoked_by_id_and_nothing_else_is(place: Place) {
    let s = seeded(&place).await;
    let token = s
        .revoke_by_id(
            RevocationKind::Token,
            "jti-1",
            60,
            10,
            ev(EventKind::TokenRevoked),
        )
        .await
        .unwrap();
    let key = s
        .revoke_by_id(
            RevocationKind::Key,
            "kid-1",
            70,
            11,
            ev(EventKind::KeyRevoked),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            token.kind,
            token.id.as_str(),
            token.revoked_at,
            token.expires_at
        ),
        (RevocationKind::Token, "jti-1", 10, 60)
    );
    assert_eq!(
        (key.kind, key.id.as_str(), key.revoked_at, key.expires_at),
        (RevocationKind::Key, "kid-1", 11, 70)
    );
    assert!(token.seq < key.seq);
    assert_eq!(
        s.revocations_since(0, 0, 10).await.unwrap(),
        vec![token, key]
    );
    let kinds: Vec<_> = s.events_since(0, 10).await.unwrap()[1..]
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::TokenRevoked, EventKind::KeyRevoked]);
    // Tasks and agents are revoked by their own state change.
    for kind in [RevocationKind::Task, RevocationKind::Agent] {
        let err = refused(
            &s,
            s.revoke_by_id(kind, "x", 60, 12, ev(EventKind::TokenRevoked)),
        )
        .await;
        assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    }
}

async fn the_feed_pages_by_seq_and_leaves_out_what_has_expired(place: Place) {
    let s = seeded(&place).await;
    let mut all = Vec::new();
    for (id, expires_at) in [("t1", 100), ("t2", 50), ("t3", 100), ("t4", 100)] {
        all.push(
            s.revoke_by_id(
                RevocationKind::Token,
                id,
                expires_at,
                1,
                ev(EventKind::TokenRevoked),
            )
            .await
            .unwrap(),
        );
    }
    let ids = |page: Vec<Revocation>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Pages of two, each after the last `seq` seen; a short page ends it.
    let first = s.revocations_since(0, 10, 2).await.unwrap();
    assert_eq!(ids(first.clone()), ["t1", "t2"]);
    let second = s.revocations_since(first[1].seq, 10, 2).await.unwrap();
    assert_eq!(ids(second.clone()), ["t3", "t4"]);
    assert!(
        s.revocations_since(second[1].seq, 10, 2)
            .await
            .unwrap()
            .is_empty()
    );
    // At 50, `t2`'s tokens are all dead: it is no longer served.
    assert_eq!(
        ids(s.revocations_since(0, 50, 10).await.unwrap()),
        ["t1", "t3", "t4"]
    );
    assert_eq!(
        ids(s.revocations_since(all[0].seq, 50, 10).await.unwrap()),
        ["t3", "t4"]
    );
    assert!(s.revocations_since(0, 100, 10).await.unwrap().is_empty());
    assert!(s.revocations_since(0, 10, 0).await.unwrap().is_empty());
    // A cursor past i64::MAX has nothing after it (it must not wrap and replay).
    assert!(
        s.revocations_since(u64::MAX, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn prune_forgets_only_what_has_expired(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let a = agent("a");
    s.create_join_token("old".into(), &a.name, 10, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.create_join_token("new".into(), &a.name, 100, ev(EventKind::JoinTokenIssued))
        .await
        .unwrap();
    s.record_login(Some(("jti-old".into(), 10)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    s.record_login(Some(("jti-new".into(), 100)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    for (id, exp) in [("tok-old", 10), ("tok-new", 100)] {
        s.revoke_by_id(
            RevocationKind::Token,
            id,
            exp,
            1,
            ev(EventKind::TokenRevoked),
        )
        .await
        .unwrap();
    }
    let events_before = s.events_since(0, 100).await.unwrap();
    s.prune(50).await.unwrap();
    assert_eq!(
        s.events_since(0, 100).await.unwrap(),
        events_before,
        "pruning writes no event"
    );
    // Forgotten: the expired feed entry, the expired assertion id (its
    // jti may be seen again), the expired join token.
    let feed = s.revocations_since(0, i64::MIN, 100).await.unwrap();
    assert_eq!(
        feed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["tok-new"]
    );
    s.record_login(Some(("jti-old".into(), 200)), ev(EventKind::LoginSucceeded))
        .await
        .unwrap();
    let key = serde_json::json!({"kty": "OKP"});
    let err = refused(
        &s,
        s.enroll_agent_key(
            "old".into(),
            key.clone(),
            5,
            ev(EventKind::AgentKeyEnrolled),
        ),
    )
    .await;
    assert!(matches!(err, StoreError::JoinTokenInvalid), "{err:?}");
    // Kept: the live assertion id, the live join token.
    let err = refused(
        &s,
        s.record_login(Some(("jti-new".into(), 100)), ev(EventKind::LoginSucceeded)),
    )
    .await;
    assert!(matches!(err, StoreError::Replay), "{err:?}");
    s.enroll_agent_key("new".into(), key, 60, ev(EventKind::AgentKeyEnrolled))
        .await
        .unwrap();
}
