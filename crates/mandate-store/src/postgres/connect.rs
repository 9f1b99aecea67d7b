//! How connections are made: TLS settings (rustls, certificate and host
//! name verified against the public web roots plus any CA given), and a
//! description of the target that never carries the password.

use crate::StoreError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

/// How every connection negotiates TLS.
pub(crate) type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// TLS settings for the connections, beside what the URL says.
#[derive(Default)]
pub struct PostgresTls {
    /// CAs trusted for the server's certificate beside the public web roots
    /// (a private PKI).
    pub roots: Vec<CertificateDer<'static>>,
    /// A client certificate chain and its private key.
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Counts only: never the key.
impl std::fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTls")
            .field("roots", &self.roots.len())
            .field("client_chain", &self.client.as_ref().map(|(c, _)| c.len()))
            .finish()
    }
}

pub(crate) fn tls(settings: PostgresTls) -> Result<Tls, StoreError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in settings.roots {
        roots
            .add(cert)
            .map_err(|e| StoreError::Backend(format!("unusable database CA certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Backend(format!("TLS setup: {e}")))?
    .with_root_certificates(roots);
    let config = match settings.client {
        None => config.with_no_client_auth(),
        // rustls names what is wrong (key type, mismatch), never the key.
        Some((chain, key)) => config.with_client_auth_cert(chain, key).map_err(|e| {
            StoreError::Backend(format!("unusable database client certificate: {e}"))
        })?,
    };
    Ok(Tls::new(config))
}

/// `user@host:port/dbname` from a URL, without the password.
pub(crate) fn describe(url: &SecretString) -> Result<String, StoreError> {
    let c: postgres::Config = url
        .expose_secret()
        .parse()
        .map_err(|e| StoreError::Backend(format!("the PostgreSQL URL does not parse: {e}")))?;
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    Ok(format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("-"),
        c.get_dbname().unwrap_or("-")
    ))
}

/// A new connection (blocking: the synchronous client runs its own runtime).
pub(crate) fn client(url: &SecretString, tls: &Tls) -> Result<postgres::Client, StoreError> {
    Ok(postgres::Client::connect(url.expose_secret(), tls.clone())?)
}
