//! Secrets: one data key, one secret per tool, versions that move by one
//! per rotation, use that is recorded and never moves back; proxy records
//! chained once each.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{refused, sealed, secret, snapshot, tool};
use crate::on_each_backend;
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{Invocation, Store, StoreError};
use std::sync::Arc;

on_each_backend!(
    the_data_key_is_created_once,
    one_secret_per_name_and_per_tool,
    rotation_moves_the_version_by_one_and_checks_it,
    use_is_recorded_and_never_moves_back,
    resent_invocations_are_chained_once_and_mark_the_secret_used,
);

async fn with_tools(place: &Place) -> Arc<dyn Store> {
    let s = seeded(place).await;
    for (name, aud) in [("github", "https://api.github.com"), ("jira", "urn:jira")] {
        s.create_tool(tool(name, aud), ev(EventKind::ToolCreated))
            .await
            .unwrap();
    }
    s
}

async fn the_data_key_is_created_once(place: Place) {
    let s = with_tools(&place).await;
    let (id, w) = s.data_key(b"first".to_vec(), 1).await.unwrap();
    let (id2, w2) = s.data_key(b"second".to_vec(), 2).await.unwrap();
    assert_eq!((id, w.as_slice()), (id2, w2.as_slice()));
    assert_eq!(w2, b"first");
}

async fn one_secret_per_name_and_per_tool(place: Place) {
    let s = with_tools(&place).await;
    let (k, _) = s.data_key(b"wrapped".to_vec(), 1).await.unwrap();
    s.put_secret(
        secret("gh", "github"),
        sealed(k, b"v1"),
        ev(EventKind::SecretStored),
    )
    .await
    .unwrap();
    let err = refused(
        &s,
        s.put_secret(
            secret("gh2", "github"),
            sealed(k, b"x"),
            ev(EventKind::SecretStored),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "secret for this tool", id } if id == "gh"),
        "{err:?}"
    );
    let err = refused(
        &s,
        s.put_secret(
            secret("gh", "jira"),
            sealed(k, b"x"),
            ev(EventKind::SecretStored),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "secret", id } if id == "gh"),
        "{err:?}"
    );
    let (meta, value) = s
        .secret_for_tool(&ToolName::parse("github").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta, secret("gh", "github"));
    assert_eq!((value.data_key, value.bytes), (k, b"v1".to_vec()));
    assert!(
        s.secret_for_tool(&ToolName::parse("jira").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

async fn rotation_moves_the_version_by_one_and_checks_it(place: Place) {
    let s = with_tools(&place).await;
    let (k, _) = s.data_key(b"wrapped".to_vec(), 1).await.unwrap();
    let name = SecretName::parse("gh").unwrap();
    s.put_secret(
        secret("gh", "github"),
        sealed(k, b"v1"),
        ev(EventKind::SecretStored),
    )
    .await
    .unwrap();
    s.record_secret_use(&name, 15, ev(EventKind::Decision))
        .await
        .unwrap();
    let rotated = s
        .rotate_secret(
            &name,
            1,
            None,
            sealed(k, b"v2"),
            20,
            ev(EventKind::SecretRotated),
        )
        .await
        .unwrap();
    // What is returned is what is stored, when it was last used included.
    assert_eq!(
        (rotated.version, rotated.rotated_at, rotated.last_used_at),
        (2, Some(20), Some(15))
    );
    let (stored, value) = s.get_secret(&name).await.unwrap().unwrap();
    assert_eq!(stored, rotated);
    assert_eq!(value.bytes, b"v2");
    // Someone rotated it meanwhile: refused, the value stays.
    let err = refused(
        &s,
        s.rotate_secret(
            &name,
            1,
            None,
            sealed(k, b"v3"),
            30,
            ev(EventKind::SecretRotated),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { id, .. } if id == "gh@2"),
        "{err:?}"
    );
    let err = refused(
        &s,
        s.rotate_secret(
            &SecretName::parse("none").unwrap(),
            1,
            None,
            sealed(k, b"v"),
            30,
            ev(EventKind::SecretRotated),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::NotFound { what: "secret", id } if id == "none"),
        "{err:?}"
    );
    let third = s
        .rotate_secret(
            &name,
            2,
            None,
            sealed(k, b"v3"),
            40,
            ev(EventKind::SecretRotated),
        )
        .await
        .unwrap();
    assert_eq!((third.version, third.rotated_at), (3, Some(40)));
    // A rotation may say what the credential is now; a refused one writes
    // nothing.
    let before = snapshot(&s).await;
    let err = s
        .rotate_secret(
            &name,
            3,
            Some(SecretClass::HumanException),
            sealed(k, b"v4"),
            50,
            ev(EventKind::SecretRotated),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref e) if e.field == "class"),
        "{err:?}"
    );
    assert_eq!(snapshot(&s).await, before);
    let fourth = s
        .rotate_secret(
            &name,
            3,
            Some(SecretClass::Model),
            sealed(k, b"v4"),
            50,
            ev(EventKind::SecretRotated),
        )
        .await
        .unwrap();
    assert_eq!((fourth.version, fourth.class), (4, SecretClass::Model));
    let gone = s
        .delete_secret(&name, ev(EventKind::SecretDeleted))
        .await
        .unwrap();
    assert_eq!(gone.version, 4);
    assert!(s.get_secret(&name).await.unwrap().is_none());
    let err = refused(&s, s.delete_secret(&name, ev(EventKind::SecretDeleted))).await;
    assert!(
        matches!(err, StoreError::NotFound { what: "secret", .. }),
        "{err:?}"
    );
    let kinds: Vec<_> = s.events_since(0, 100).await.unwrap()[3..]
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::SecretStored,
            EventKind::Decision,
            EventKind::SecretRotated,
            EventKind::SecretRotated,
            EventKind::SecretRotated,
            EventKind::SecretDeleted
        ]
    );
}

async fn use_is_recorded_and_never_moves_back(place: Place) {
    let s = with_tools(&place).await;
    let (k, _) = s.data_key(b"wrapped".to_vec(), 1).await.unwrap();
    for (name, t) in [("gh", "github"), ("ji", "jira")] {
        s.put_secret(
            secret(name, t),
            sealed(k, b"v"),
            ev(EventKind::SecretStored),
        )
        .await
        .unwrap();
    }
    let gh = SecretName::parse("gh").unwrap();
    for at in [50, 40] {
        s.record_secret_use(&gh, at, ev(EventKind::Decision))
            .await
            .unwrap();
    }
    let listed = s.list_secrets().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.name.as_str(), m.last_used_at))
            .collect::<Vec<_>>(),
        [("gh", Some(50)), ("ji", None)]
    );
    assert_eq!(
        s.get_secret(&gh).await.unwrap().unwrap().0.last_used_at,
        Some(50)
    );
}

async fn resent_invocations_are_chained_once_and_mark_the_secret_used(place: Place) {
    let s = with_tools(&place).await;
    let (k, _) = s.data_key(b"w".to_vec(), 1).await.unwrap();
    s.put_secret(
        secret("gh", "github"),
        sealed(k, b"v"),
        ev(EventKind::SecretStored),
    )
    .await
    .unwrap();
    let inv = |seq: u64, decision: &str| Invocation {
        seq,
        opened: None,
        event: ev(EventKind::ToolInvoked)
            .tool("github")
            .decision(decision)
            .request_id(Some(format!("call-{seq}"))),
        also: Vec::new(),
    };
    let before = s.events_since(0, 100).await.unwrap().len();
    let r = s
        .ingest_invocations("p1".into(), vec![inv(10, "deny"), inv(20, "allow")], 50)
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (2, 0));
    // A resend overlapping what was chained: only the new record counts.
    let r = s
        .ingest_invocations("p1".into(), vec![inv(20, "allow"), inv(30, "allow")], 60)
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, 1));
    // Another spool's positions are its own.
    let r = s
        .ingest_invocations("p2".into(), vec![inv(5, "deny")], 60)
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, 0));
    // Out of the store's range: refused, nothing written.
    let err = refused(
        &s,
        s.ingest_invocations("p2".into(), vec![inv(6, "deny"), inv(u64::MAX, "deny")], 60),
    )
    .await;
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    let events = s.events_since(0, 100).await.unwrap();
    assert_eq!(events.len(), before + 4);
    let ids: Vec<_> = events[before..]
        .iter()
        .map(|e| e.request_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["call-10", "call-20", "call-30", "call-5"]);
    let (meta, _) = s
        .get_secret(&SecretName::parse("gh").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.last_used_at, Some(60));
    verify_chain(events).unwrap();
}
