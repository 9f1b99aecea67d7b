//! What only the PostgreSQL backend has: one writer per database, a
//! writer that survives the server dropping its connections, TLS that is
//! insisted on. (What both backends do alike is in `contract/`; TLS with
//! certificates in `postgres_tls.rs`.)

mod common;

use common::{Place, ev, seeded};
use mandate_audit::{EventKind, verify_chain};
use mandate_store::{Store, StoreError};
use mandate_testkit::postgres::psql;

/// One broker per database: a second writer would fork the audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_second_writer_until_the_first_closes() {
    let Some(Place::Postgres(url)) = Place::postgres("second_writer") else {
        return;
    };
    let first = mandate_store::PostgresStore::open(url.clone().into(), Default::default())
        .await
        .unwrap();
    let err = mandate_store::PostgresStore::open(url.clone().into(), Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("writer lock"), "{err}");
    assert!(!err.to_string().contains(&url), "no URL in errors: {err}");
    first.close();
    drop(first);
    let second = mandate_store::PostgresStore::open(url.into(), Default::default())
        .await
        .unwrap();
    second
        .append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(second.events_since(0, 10).await.unwrap()).unwrap(),
        1
    );
}

/// The server drops every connection (a restart, a failover, an idle
/// timeout): the store reconnects, retakes the writer lock and continues
/// the chain from the head in the table; nothing is lost or forked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_the_server_drops_its_connections() {
    let Some(place) = Place::postgres("reconnect") else {
        return;
    };
    let Place::Postgres(url) = &place else {
        unreachable!()
    };
    let kill_sessions = || {
        psql(
            url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
    };
    let s = seeded(&place).await;
    assert_eq!(s.list_owners().await.unwrap().len(), 1);
    assert_eq!(kill_sessions(), "2", "the writer and one pooled reader");

    // Idle connections are checked before use: no request sees the break.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(s.list_owners().await.unwrap().len(), 1);

    // Broken under way: at most the write in flight fails, then it recovers.
    kill_sessions();
    let in_flight = s.append_events(vec![ev(EventKind::Decision)]).await;
    if let Err(e) = &in_flight {
        assert!(matches!(e, StoreError::Backend(_)), "{e}");
        eprintln!("the write in flight failed: {e}");
    }
    s.append_events(vec![ev(EventKind::Decision)])
        .await
        .unwrap();
    assert_eq!(s.list_owners().await.unwrap().len(), 1, "reads retry once");
    let events = s.events_since(0, 100).await.unwrap();
    let expected = 3 + usize::from(in_flight.is_ok());
    assert_eq!(verify_chain(events).unwrap() as usize, expected);
}

/// `sslmode=require` against a server without TLS (this test process's
/// cluster): refused, never connected in clear. The TLS server side is in
/// `postgres_tls.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_sslmode_require_refuses_a_server_without_tls() {
    let Some(Place::Postgres(url)) = Place::postgres("sslmode") else {
        return;
    };
    let err = mandate_store::PostgresStore::open(
        format!("{url}?sslmode=require").into(),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}
