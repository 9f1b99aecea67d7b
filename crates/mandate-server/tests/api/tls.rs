//! With a certificate configured the broker serves HTTPS only (rustls).

use mandate_server::config::TlsConfig;
use mandate_testkit::*;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(move |c| {
        c.tls = Some(TlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        });
        c.header_read_timeout_secs = 1;
    })
    .await;
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let meta: serde_json::Value = client
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], s.base);
    let plain = s.base.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/healthz")).await.is_err(),
        "plain HTTP must not be served"
    );

    // A client that finishes the handshake and then says nothing is closed
    // after the header timeout, like a silent plain connection.
    use tokio::io::AsyncReadExt;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = s.base.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut quiet = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("the handshake completes");
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(n) = quiet.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    assert!(closed.is_ok(), "a silent TLS connection was kept open");
    assert!(start.elapsed() >= std::time::Duration::from_millis(900));

    // One that never starts its handshake has as long to do so.
    let mut mute = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = std::time::Instant::now();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(n) = mute.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection with no handshake was kept open"
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(900));
}

/// A certificate or key file that is not what it should be stops the
/// start before anything is written, naming the setting and never
/// echoing the file's contents.
#[tokio::test]
async fn an_unusable_certificate_or_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let good_cert = dir.path().join("tls.crt");
    let good_key = dir.path().join("tls.key");
    let junk = dir.path().join("junk.pem");
    let other_key = dir.path().join("other.key");
    std::fs::write(&good_cert, cert.cert.pem()).unwrap();
    std::fs::write(&good_key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&junk, "secret-looking junk 8b1f").unwrap();
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    for (cert_file, key_file, named) in [
        (&junk, &good_key, "tls.cert_file"),
        (&good_cert, &junk, "tls.key_file"),
        (&good_cert, &other_key, "does not go with tls.key_file"),
    ] {
        let cfg = mandate_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            tls: Some(TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            ..Default::default()
        };
        let err = match mandate_server::start(cfg.validate().unwrap()).await {
            Ok(_) => panic!("started with {cert_file:?} and {key_file:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(named), "{err}");
        assert!(
            !err.contains("8b1f") && !err.contains("PRIVATE KEY"),
            "{err}"
        );
    }
}
