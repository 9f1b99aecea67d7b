//! Webhook endpoints: stored with their sealed secret, listed oldest
//! first, deleted once; delivery progress that never moves back; and the
//! chain head a sender waits on, which moves only when events are chained.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{refused, sealed};
use crate::on_each_backend;
use mandate_audit::{EventKind, KindFilter, Webhook, WebhookProgress};
use mandate_core::*;
use mandate_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

on_each_backend!(
    a_webhook_is_stored_with_its_sealed_secret_once,
    webhooks_list_oldest_first_then_by_id,
    delivery_progress_never_moves_back,
    a_deleted_webhook_is_gone_with_its_progress,
    appended_moves_with_the_chain_and_only_with_it,
);

fn hook(seed: u8, created_at: i64) -> Webhook {
    Webhook {
        id: WebhookId::from_random([seed; 16]),
        url: format!("https://hooks.example/{seed}"),
        kinds: KindFilter::parse(&["task.*".into()]).unwrap(),
        description: String::new(),
        created_at,
    }
}

/// Store `hook`, delivering after `after`.
async fn add(s: &Arc<dyn Store>, key: i64, hook: &Webhook, after: u64) {
    s.create_webhook(
        hook.clone(),
        sealed(key, b"s"),
        after,
        ev(EventKind::WebhookCreated),
    )
    .await
    .unwrap();
}

/// A store with a data key (webhook secrets are sealed under it).
async fn keyed(place: &Place) -> (Arc<dyn Store>, i64) {
    let s = seeded(place).await;
    let (key, _) = s.data_key(b"wrapped".to_vec(), 1).await.unwrap();
    (s, key)
}

async fn a_webhook_is_stored_with_its_sealed_secret_once(place: Place) {
    let (s, key) = keyed(&place).await;
    let h = hook(1, 10);
    s.create_webhook(
        h.clone(),
        sealed(key, b"sealed-secret"),
        5,
        ev(EventKind::WebhookCreated),
    )
    .await
    .unwrap();
    let got = s.get_webhook(&h.id).await.unwrap().unwrap();
    assert_eq!(got.webhook, h);
    assert_eq!(got.secret, sealed(key, b"sealed-secret"));
    assert_eq!(
        got.progress,
        WebhookProgress {
            delivered_seq: 5,
            ..Default::default()
        }
    );
    let last = s.last_event().await.unwrap().unwrap();
    assert_eq!(last.kind, EventKind::WebhookCreated);

    let err = refused(
        &s,
        s.create_webhook(
            h.clone(),
            sealed(key, b"other"),
            0,
            ev(EventKind::WebhookCreated),
        ),
    )
    .await;
    assert!(
        matches!(&err, StoreError::Conflict { what: "webhook", id } if id == h.id.as_str()),
        "{err:?}"
    );
    // A secret sealed under a data key the store does not hold is refused too.
    refused(
        &s,
        s.create_webhook(
            hook(2, 10),
            sealed(key + 100, b"x"),
            0,
            ev(EventKind::WebhookCreated),
        ),
    )
    .await;
    assert_eq!(s.get_webhook(&hook(3, 0).id).await.unwrap(), None);
}

async fn webhooks_list_oldest_first_then_by_id(place: Place) {
    let (s, key) = keyed(&place).await;
    for (seed, at) in [(9, 5), (2, 7), (4, 5)] {
        add(&s, key, &hook(seed, at), 0).await;
    }
    let ids: Vec<_> = s
        .list_webhooks()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.webhook.id)
        .collect();
    assert_eq!(ids, vec![hook(4, 0).id, hook(9, 0).id, hook(2, 0).id]);
}

async fn delivery_progress_never_moves_back(place: Place) {
    let (s, key) = keyed(&place).await;
    let h = hook(1, 10);
    add(&s, key, &h, 3).await;
    let head = s.last_event().await.unwrap().unwrap().seq;
    let failing = WebhookProgress {
        delivered_seq: 8,
        attempts: 3,
        next_attempt_ms: Some(1_700_000_000_123),
        last_error: Some("HTTP 503".into()),
    };
    s.save_webhook_progress(&h.id, failing.clone())
        .await
        .unwrap();
    assert_eq!(
        s.get_webhook(&h.id).await.unwrap().unwrap().progress,
        failing
    );
    // A stale writer's older cursor does not move it back; the retry
    // state is whatever was said last.
    s.save_webhook_progress(
        &h.id,
        WebhookProgress {
            delivered_seq: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_webhook(&h.id).await.unwrap().unwrap().progress,
        WebhookProgress {
            delivered_seq: 8,
            ..Default::default()
        }
    );
    // Progress is not audited.
    assert_eq!(s.last_event().await.unwrap().unwrap().seq, head);
}

async fn a_deleted_webhook_is_gone_with_its_progress(place: Place) {
    let (s, key) = keyed(&place).await;
    let h = hook(1, 10);
    add(&s, key, &h, 0).await;
    assert_eq!(
        s.delete_webhook(&h.id, ev(EventKind::WebhookDeleted))
            .await
            .unwrap(),
        h
    );
    assert_eq!(
        s.last_event().await.unwrap().unwrap().kind,
        EventKind::WebhookDeleted
    );
    assert_eq!(s.get_webhook(&h.id).await.unwrap(), None);
    assert!(s.list_webhooks().await.unwrap().is_empty());
    let err = refused(&s, s.delete_webhook(&h.id, ev(EventKind::WebhookDeleted))).await;
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "webhook",
                ..
            }
        ),
        "{err:?}"
    );
    let err = refused(
        &s,
        s.save_webhook_progress(&h.id, WebhookProgress::default()),
    )
    .await;
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "webhook",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn appended_moves_with_the_chain_and_only_with_it(place: Place) {
    let (s, key) = keyed(&place).await;
    let mut head = s.appended();
    let last = s.last_event().await.unwrap().unwrap().seq;
    assert_eq!(*head.borrow_and_update(), last);
    s.append_events(vec![
        ev(EventKind::PolicyReloaded),
        ev(EventKind::KeyRotated),
    ])
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), head.changed())
        .await
        .expect("told of the commit")
        .unwrap();
    assert_eq!(*head.borrow_and_update(), last + 2);
    // A write that chains nothing does not wake followers.
    let h = hook(1, 1);
    add(&s, key, &h, 0).await;
    head.borrow_and_update();
    s.save_webhook_progress(&h.id, WebhookProgress::default())
        .await
        .unwrap();
    assert!(!head.has_changed().unwrap());
    // A store opened again starts from the stored head.
    drop(s);
    let again = place.open().await;
    assert_eq!(*again.appended().borrow(), last + 3);
}
