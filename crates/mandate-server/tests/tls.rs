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
}
