//! PostgreSQL over TLS. Its own test file, so its own cluster: turning TLS
//! on here changes no other test's server.

use mandate_audit::{EventKind, NewEvent};
use mandate_store::{PostgresStore, PostgresTls, Store};
use mandate_testkit::postgres::psql;
use mandate_testkit::postgres_tls::{ClusterTls, enable_tls};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::OnceLock;

static TLS: OnceLock<ClusterTls> = OnceLock::new();

/// One write through the writer connection, read back through a reader.
async fn writes_and_reads_back(s: &PostgresStore) {
    s.append_events(vec![NewEvent::new(EventKind::Decision, "test")])
        .await
        .unwrap();
    assert_eq!(s.events_since(0, 10).await.unwrap().len(), 1);
}

fn trusting(ca: &CertificateDer<'static>) -> PostgresTls {
    PostgresTls {
        roots: vec![ca.clone()],
        client: None,
    }
}

/// A client certificate for `user`, signed by `ca`, with its key.
fn client_identity(
    ca: &CertifiedIssuer<'static, KeyPair>,
    user: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, user);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let key = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    (vec![cert.der().clone()], key)
}

/// The cluster's TLS, turned on once per process; the tests in this file
/// share it.
fn cluster_tls(url: &str) -> &'static ClusterTls {
    TLS.get_or_init(|| enable_tls(url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(url) = mandate_testkit::postgres::database("tls") else {
        return;
    };
    let ca = &cluster_tls(&url).server;
    let required = format!("{url}?sslmode=require");

    let s = PostgresStore::open(required.clone().into(), trusting(ca))
        .await
        .unwrap();
    writes_and_reads_back(&s).await;
    let encrypted = psql(
        &url,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND s.ssl",
    );
    assert_eq!(encrypted, "2", "the writer and the reader both on TLS");
    s.close();
    drop(s);

    // A certificate nobody vouched for is refused, with or without
    // sslmode=require: no silent fallback to plain TCP.
    for u in [required.as_str(), url.as_str()] {
        let err = PostgresStore::open(u.to_owned().into(), Default::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}

/// A server that authenticates clients by certificate (`hostssl … cert`)
/// lets the broker in with a certificate for its user, and no one without
/// one or with another user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_client_certificates_authenticate_the_broker() {
    let Some(url) = mandate_testkit::postgres::database("tls_client") else {
        return;
    };
    let tls = cluster_tls(&url);
    let user = format!("cert_{}", std::process::id());
    let db = url.rsplit('/').next().unwrap();
    psql(&url, &format!("CREATE ROLE {user} LOGIN"));
    psql(&url, &format!("ALTER DATABASE {db} OWNER TO {user}"));
    // Only this role, only by certificate, never in clear.
    let hba = psql(&url, "SHOW hba_file");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all {user} 127.0.0.1/32 cert\nhostnossl all {user} 127.0.0.1/32 reject\n{rules}"
        ),
    )
    .unwrap();
    psql(&url, "SELECT pg_reload_conf()");
    let as_user = url.replacen("mandate@", &format!("{user}@"), 1);

    let refused = |client| {
        let u = format!("{as_user}?sslmode=require");
        let settings = PostgresTls {
            roots: vec![tls.server.clone()],
            client,
        };
        async move { PostgresStore::open(u.into(), settings).await.unwrap_err() }
    };
    let none = refused(None).await.to_string();
    assert!(none.contains("certificate"), "{none}");
    let other = refused(Some(client_identity(&tls.client_ca, "someone_else")))
        .await
        .to_string();
    assert!(
        other.contains("certificate authentication failed"),
        "{other}"
    );
    let self_signed = {
        let own = CertifiedIssuer::self_signed(
            CertificateParams::new(Vec::<String>::new()).unwrap(),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        refused(Some(client_identity(&own, &user)))
            .await
            .to_string()
    };
    let plain = PostgresStore::open(
        format!("{as_user}?sslmode=disable").into(),
        Default::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(plain.contains("pg_hba.conf rejects"), "{plain}");
    // A certificate from a CA the server does not trust ends the handshake.
    assert!(self_signed.contains("UnknownCA"), "{self_signed}");

    let s = PostgresStore::open(
        as_user.into(),
        PostgresTls {
            roots: vec![tls.server.clone()],
            client: Some(client_identity(&tls.client_ca, &user)),
        },
    )
    .await
    .unwrap();
    writes_and_reads_back(&s).await;
    let by_cert = psql(
        &url,
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = '{user}' AND s.client_dn = '/CN={user}'"
        ),
    );
    assert_eq!(
        by_cert, "2",
        "the writer and the reader both by certificate"
    );
    s.close();
}
