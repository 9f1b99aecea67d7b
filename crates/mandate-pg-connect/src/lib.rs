//! How Mandate connects to PostgreSQL, for its store and for its database
//! engine alike: TLS, and what a failed connection says.
//!
//! TLS: The server's certificate and host name are
//! verified against the public web roots plus any CA given (a private
//! PKI); there is no mode that skips verification. A connection uses TLS
//! when the server offers it and fails if the certificate does not verify
//! (never a silent fallback to plain TCP); `sslmode=require` in the URL
//! insists on TLS, `sslmode=disable` turns it off.

#![forbid(unsafe_code)]

use rustls::pki_types::pem::PemObject;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// What every connection negotiates TLS with.
pub type Connector = tokio_postgres_rustls::MakeRustlsConnect;

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

/// What is wrong with the settings (never a key's bytes).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("unusable database CA certificate: {0}")]
    Ca(String),
    #[error("unusable database client certificate: {0}")]
    Client(String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The connector for `settings`.
pub fn connector(settings: PostgresTls) -> Result<Connector, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in settings.roots {
        roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Setup(e.to_string()))?
    .with_root_certificates(roots);
    let config = match settings.client {
        None => config.with_no_client_auth(),
        // rustls names what is wrong (key type, mismatch), never the key.
        Some((chain, key)) => config
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Client(e.to_string()))?,
    };
    Ok(Connector::new(config))
}

/// An error with its sources (why a handshake or a connection failed is
/// in them: a rustls or I/O error), each said once. Never a URL: neither
/// the driver nor rustls puts one in an error.
pub fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut m = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !m.ends_with(&text) {
            m = format!("{m}: {text}");
        }
        cause = c.source();
    }
    m
}

/// The certificates of a PEM text (one or more `CERTIFICATE` blocks; at
/// least one, and each a certificate rustls can use as a root).
pub fn roots_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Ca(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Ca("no CERTIFICATE block in the PEM text".into()));
    }
    let mut check = rustls::RootCertStore::empty();
    for c in &certs {
        check
            .add(c.clone())
            .map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_roots_need_a_usable_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["db.internal".into()]).unwrap();
        let two = format!("{}{}", cert.cert.pem(), cert.cert.pem());
        assert_eq!(roots_from_pem(&two).unwrap().len(), 2);
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let e = roots_from_pem(bad).unwrap_err().to_string();
            assert!(e.starts_with("unusable database CA certificate"), "{e}");
        }
        assert!(
            connector(PostgresTls {
                roots: roots_from_pem(&two).unwrap(),
                client: None
            })
            .is_ok()
        );
    }
}
