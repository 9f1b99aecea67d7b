//! Secrets and proxy audit ingestion, on each backend.

mod common;

use common::{Place, ev, seeded};
use mandate_audit::{EventKind, verify_chain};
use mandate_core::*;
use mandate_store::{Invocation, SealedValue, Store, StoreError};
use std::sync::Arc;

on_each_backend!(
    data_key_is_created_once,
    one_secret_per_tool_and_rotation_checks_the_version,
    resent_invocations_are_chained_once_and_mark_the_secret_used,
);

async fn with_tool(place: &Place) -> Arc<dyn Store> {
    let s = seeded(place).await;
    for (name, aud) in [("github", "https://api.github.com"), ("jira", "urn:jira")] {
        let tool: NewTool = serde_json::from_value(serde_json::json!({
            "name": name, "audience": aud, "owner": "platform", "environment": "staging",
            "sensitivity": "internal", "max_ttl_secs": 600, "actions": ["issues:read"]
        }))
        .unwrap();
        s.create_tool(tool.into_tool(0).unwrap(), ev(EventKind::ToolCreated))
            .await
            .unwrap();
    }
    s
}

fn secret(name: &str, tool: &str) -> Secret {
    serde_json::from_value::<NewSecret>(serde_json::json!({
        "name": name, "tool": tool, "class": "tool", "owner": "platform"
    }))
    .unwrap()
    .into_secret(10)
    .unwrap()
}

fn sealed(key: i64, b: &[u8]) -> SealedValue {
    SealedValue {
        data_key: key,
        bytes: b.to_vec(),
    }
}

async fn data_key_is_created_once(place: Place) {
    let s = with_tool(&place).await;
    let (id, w) = s.data_key(b"first".to_vec(), 1).await.unwrap();
    let (id2, w2) = s.data_key(b"second".to_vec(), 2).await.unwrap();
    assert_eq!((id, w.as_slice()), (id2, w2.as_slice()));
    assert_eq!(w2, b"first");
}

async fn one_secret_per_tool_and_rotation_checks_the_version(place: Place) {
    let s = with_tool(&place).await;
    let (k, _) = s.data_key(b"wrapped".to_vec(), 1).await.unwrap();
    s.put_secret(
        secret("gh", "github"),
        sealed(k, b"v1"),
        ev(EventKind::SecretStored),
    )
    .await
    .unwrap();
    let err = s
        .put_secret(
            secret("gh2", "github"),
            sealed(k, b"x"),
            ev(EventKind::SecretStored),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = s
        .put_secret(
            secret("gh", "jira"),
            sealed(k, b"x"),
            ev(EventKind::SecretStored),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "secret", .. }),
        "{err}"
    );
    let err = s
        .put_secret(
            secret("nope", "nope"),
            sealed(k, b"x"),
            ev(EventKind::SecretStored),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "tool", .. }),
        "{err}"
    );

    let name = SecretName::parse("gh").unwrap();
    let rotated = s
        .rotate_secret(&name, 1, sealed(k, b"v2"), 20, ev(EventKind::SecretRotated))
        .await
        .unwrap();
    assert_eq!((rotated.version, rotated.rotated_at), (2, Some(20)));
    let err = s
        .rotate_secret(&name, 1, sealed(k, b"v3"), 30, ev(EventKind::SecretRotated))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "stale version: {err}"
    );
    let (meta, value) = s
        .secret_for_tool(&ToolName::parse("github").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (meta.version, value.bytes.as_slice()),
        (2, b"v2".as_slice())
    );
    assert_eq!(s.list_secrets().await.unwrap().len(), 1);
    // Refused writes left no events: owner, 2 tools, stored, rotated.
    let events = s.events_since(0, 100).await.unwrap();
    assert_eq!(events.len(), 5);
    verify_chain(events).unwrap();
}

async fn resent_invocations_are_chained_once_and_mark_the_secret_used(place: Place) {
    let s = with_tool(&place).await;
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
    };
    let before = s.events_since(0, 100).await.unwrap().len();
    let r = s
        .ingest_invocations("p1".into(), vec![inv(10, "deny"), inv(20, "allow")], 50)
        .await
        .unwrap();
    assert_eq!(r, (2, 0));
    // A resend overlapping what was chained: only the new record counts.
    let r = s
        .ingest_invocations("p1".into(), vec![inv(20, "allow"), inv(30, "allow")], 60)
        .await
        .unwrap();
    assert_eq!(r, (1, 1));
    // Another spool's positions are its own.
    let r = s
        .ingest_invocations("p2".into(), vec![inv(5, "deny")], 60)
        .await
        .unwrap();
    assert_eq!(r, (1, 0));
    // Out of the store's range: refused, nothing written.
    let err = s
        .ingest_invocations("p2".into(), vec![inv(6, "deny"), inv(u64::MAX, "deny")], 60)
        .await
        .unwrap_err();
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
}
