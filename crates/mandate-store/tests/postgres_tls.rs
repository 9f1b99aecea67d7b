//! PostgreSQL over TLS. Its own test file, so its own cluster: turning TLS
//! on here changes no other test's server.

use mandate_audit::{EventKind, NewEvent};
use mandate_store::{PostgresStore, Store};
use mandate_testkit::postgres::psql;
use rustls::pki_types::CertificateDer;
use std::os::unix::fs::PermissionsExt;

/// Give the cluster a certificate for 127.0.0.1 and turn TLS on.
fn enable_tls(url: &str, dir: &std::path::Path) -> CertificateDer<'static> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The server runs as `postgres` when the tests run as root, and reads
    // its key only if that user owns it.
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n"
    {
        let ok = std::process::Command::new("chown")
            .args(["postgres:"])
            .arg(&crt)
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    psql(
        url,
        &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
    );
    psql(
        url,
        &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
    );
    psql(url, "ALTER SYSTEM SET ssl = on");
    psql(url, "SELECT pg_reload_conf()");
    for _ in 0..50 {
        if psql(url, "SHOW ssl") == "on" {
            return cert.cert.der().clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the server did not turn TLS on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(url) = mandate_testkit::postgres::database("tls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = enable_tls(&url, dir.path());
    let required = format!("{url}?sslmode=require");

    let s = PostgresStore::open(required.clone().into(), vec![ca.clone()])
        .await
        .unwrap();
    s.append_events(vec![NewEvent::new(EventKind::Decision, "test")])
        .await
        .unwrap();
    assert_eq!(s.events_since(0, 10).await.unwrap().len(), 1);
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
        let err = PostgresStore::open(u.to_owned().into(), Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
