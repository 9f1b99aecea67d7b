//! TLS for the test's PostgreSQL cluster: a server certificate for
//! 127.0.0.1 (self-signed, so only a client given it as a CA trusts it)
//! and a CA for client certificates. Turning it on changes the whole
//! cluster of the test process, so a test binary that wants it has it to
//! itself (its own cluster).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use std::os::unix::fs::PermissionsExt;

/// The cluster's TLS: its server certificate, and the CA it trusts for
/// client certificates.
pub struct ClusterTls {
    pub server: CertificateDer<'static>,
    /// The same certificate as PEM text.
    pub server_pem: String,
    pub client_ca: CertifiedIssuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

/// Give the cluster of `url` a certificate for 127.0.0.1, a CA for client
/// certificates, and turn TLS on.
pub fn enable_tls(url: &str) -> ClusterTls {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test client CA");
    let client_ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let (crt, key, ca) = (
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
        dir.path().join("client-ca.crt"),
    );
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca, client_ca.pem()).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
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
            .arg(&ca)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    for (setting, path) in [
        ("ssl_cert_file", &crt),
        ("ssl_key_file", &key),
        ("ssl_ca_file", &ca),
    ] {
        crate::postgres::psql(
            url,
            &format!("ALTER SYSTEM SET {setting} = '{}'", path.display()),
        );
    }
    crate::postgres::psql(url, "ALTER SYSTEM SET ssl = on");
    crate::postgres::psql(url, "SELECT pg_reload_conf()");
    for _ in 0..50 {
        if crate::postgres::psql(url, "SHOW ssl") == "on" {
            return ClusterTls {
                server: cert.cert.der().clone(),
                server_pem: cert.cert.pem(),
                client_ca,
                _dir: dir,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the server did not turn TLS on");
}
