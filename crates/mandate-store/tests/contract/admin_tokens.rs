//! Admin tokens: one id and one hash each, listed oldest first, revoked
//! once, and never the last live root token.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{admin_token, refused};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::StoreError;

on_each_backend!(
    an_admin_token_id_or_hash_is_taken_once,
    admin_tokens_list_oldest_first_and_revoke_once,
    the_last_live_root_token_is_never_revoked,
);

async fn an_admin_token_id_or_hash_is_taken_once(place: Place) {
    let s = seeded(&place).await;
    let root = admin_token("root", vec![AdminRight::Root], 1);
    s.create_admin_token(root.clone(), ev(EventKind::AdminTokenCreated))
        .await
        .unwrap();
    let mut same_id = admin_token("root", vec![AdminRight::Audit], 2);
    same_id.hash = "hash-other".into();
    let err = refused(
        &s,
        s.create_admin_token(same_id, ev(EventKind::AdminTokenCreated)),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "admin token", id } if id == "root"),
        "{err:?}"
    );
    let mut same_hash = admin_token("other", vec![AdminRight::Audit], 2);
    same_hash.hash = root.hash.clone();
    let err = refused(
        &s,
        s.create_admin_token(same_hash, ev(EventKind::AdminTokenCreated)),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "admin token", id } if id == "other"),
        "{err:?}"
    );
    assert_eq!(s.admin_token_by_hash(&root.hash).await.unwrap(), Some(root));
    assert_eq!(s.admin_token_by_hash("hash-none").await.unwrap(), None);
}

async fn admin_tokens_list_oldest_first_and_revoke_once(place: Place) {
    let s = seeded(&place).await;
    let made = [
        admin_token("ops-b", vec![AdminRight::Agents, AdminRight::Tasks], 5),
        admin_token("root", vec![AdminRight::Root], 1),
        admin_token("ops-a", vec![AdminRight::Secrets], 5),
    ];
    for t in &made {
        s.create_admin_token(t.clone(), ev(EventKind::AdminTokenCreated))
            .await
            .unwrap();
    }
    // Oldest first; a tie on created_at goes by id.
    assert_eq!(
        s.list_admin_tokens().await.unwrap(),
        vec![made[1].clone(), made[2].clone(), made[0].clone()]
    );
    let revoked = s
        .revoke_admin_token("ops-b", 9, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap();
    assert_eq!(
        revoked,
        AdminToken {
            revoked_at: Some(9),
            ..made[0].clone()
        }
    );
    assert_eq!(
        s.events_since(0, 100).await.unwrap().last().unwrap().kind,
        EventKind::AdminTokenRevoked
    );
    // Kept for the record, counted, found by hash, but revoked once only.
    assert_eq!(s.list_admin_tokens().await.unwrap()[2], revoked);
    assert_eq!(s.count_admin_tokens().await.unwrap(), 3);
    assert_eq!(
        s.admin_token_by_hash(&made[0].hash).await.unwrap(),
        Some(revoked)
    );
    let err = refused(
        &s,
        s.revoke_admin_token("ops-b", 10, ev(EventKind::AdminTokenRevoked)),
    )
    .await;
    assert!(
        matches!(&err, StoreError::NotFound { what: "live admin token", id } if id == "ops-b"),
        "{err:?}"
    );
    let err = refused(
        &s,
        s.revoke_admin_token("ghost", 10, ev(EventKind::AdminTokenRevoked)),
    )
    .await;
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn the_last_live_root_token_is_never_revoked(place: Place) {
    let s = seeded(&place).await;
    let mut expired = admin_token("root-expired", vec![AdminRight::Root], 1);
    expired.expires_at = Some(5);
    for t in [
        admin_token("root-1", vec![AdminRight::Root], 1),
        admin_token("root-2", vec![AdminRight::Root], 1),
        expired,
        admin_token("ops", vec![AdminRight::Agents], 1),
    ] {
        s.create_admin_token(t, ev(EventKind::AdminTokenCreated))
            .await
            .unwrap();
    }
    s.revoke_admin_token("root-1", 10, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap();
    // An expired root token is no stand-in: root-2 is the last live one.
    let err = refused(
        &s,
        s.revoke_admin_token("root-2", 10, ev(EventKind::AdminTokenRevoked)),
    )
    .await;
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    s.revoke_admin_token("ops", 10, ev(EventKind::AdminTokenRevoked))
        .await
        .unwrap();
}
