//! Where state lives when it is not the embedded SQLite file: the
//! PostgreSQL URL (a secret) and the TLS material for its connections.

use super::{Config, ConfigError, invalid};
use mandate_store::PostgresTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use std::path::Path;

/// Only PostgreSQL URLs; the message never repeats the value (a password).
pub(super) fn check_database_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(invalid(
            key,
            "must be a postgres:// or postgresql:// URL (leave it unset for the embedded SQLite file)",
        ))
    }
}

impl Config {
    /// The PostgreSQL URL, if state lives in PostgreSQL: from
    /// `MANDATE_DATABASE_URL` or read from `database_url_file`.
    pub fn database_url(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(url) = &self.database_url {
            return Ok(Some(url.clone()));
        }
        let Some(path) = &self.database_url_file else {
            return Ok(None);
        };
        // It may hold a password: wiped from memory once wrapped.
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ConfigError::Read {
                path: path.clone(),
                source,
            }
        })?);
        let url = text.trim();
        check_database_url("database_url_file", url)?;
        Ok(Some(SecretString::from(url.to_owned())))
    }

    /// TLS material for the PostgreSQL connections: the certificates of
    /// `database_ca_file` and the client identity. Unreadable or unusable
    /// files are errors naming their key (never quoting a key's content).
    pub fn database_tls(&self) -> Result<PostgresTls, ConfigError> {
        let roots = match &self.database_ca_file {
            Some(path) => certificates("database_ca_file", path)?,
            None => Vec::new(),
        };
        let client = match (
            &self.database_client_cert_file,
            &self.database_client_key_file,
        ) {
            (Some(cert), Some(key)) => Some((
                certificates("database_client_cert_file", cert)?,
                private_key("database_client_key_file", key)?,
            )),
            _ => None,
        };
        Ok(PostgresTls { roots, client })
    }
}

/// The PEM certificates in `path`, at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The PEM private key in `path`, which only its owner may read (as libpq
/// insists for `sslkey`).
fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable =
        |e: &dyn std::fmt::Display| invalid(key, format!("cannot read {}: {e}", path.display()));
    let mode = std::fs::metadata(path)
        .map_err(|e| unreadable(&e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(invalid(
            key,
            format!(
                "{} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    let pem = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| unreadable(&e))?);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            key,
            format!("{} holds no usable PEM private key ({e})", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn identity_files(dir: &Path, key_pem: &str, mode: u32) -> Config {
        let cert = rcgen::generate_simple_self_signed(vec!["broker".into()]).unwrap();
        let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        Config {
            database_client_cert_file: Some(crt),
            database_client_key_file: Some(key),
            ..Config::default()
        }
    }

    #[test]
    fn a_client_identity_loads_from_a_certificate_and_an_owner_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let cfg = identity_files(dir.path(), &key, 0o600);
        cfg.clone().validate().unwrap();
        let tls = cfg.database_tls().unwrap();
        let (chain, _) = tls.client.expect("a client identity");
        assert_eq!(chain.len(), 1);
        assert!(tls.roots.is_empty());
    }

    #[test]
    fn client_identity_errors_name_the_key_and_never_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let open = identity_files(dir.path(), &key, 0o644);
        let err = open.database_tls().unwrap_err().to_string();
        assert!(err.starts_with("database_client_key_file"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");

        let garbage = identity_files(dir.path(), "sekrit-not-a-key", 0o600);
        let err = garbage.database_tls().unwrap_err().to_string();
        assert!(err.starts_with("database_client_key_file"), "{err}");
        assert!(err.contains("no usable PEM private key"), "{err}");
        assert!(!err.contains("sekrit"), "{err}");

        let missing = Config {
            database_client_key_file: Some(dir.path().join("nope.key")),
            ..identity_files(dir.path(), &key, 0o600)
        };
        let err = missing.database_tls().unwrap_err().to_string();
        assert!(err.starts_with("database_client_key_file"), "{err}");

        let half = Config {
            database_client_key_file: None,
            ..identity_files(dir.path(), &key, 0o600)
        };
        let err = half.validate().unwrap_err().to_string();
        assert!(err.starts_with("database_client_key_file"), "{err}");
        let other_half = Config {
            database_client_cert_file: None,
            ..identity_files(dir.path(), &key, 0o600)
        };
        let err = other_half.validate().unwrap_err().to_string();
        assert!(err.starts_with("database_client_cert_file"), "{err}");
    }

    #[test]
    fn env_names_the_client_identity_files() {
        let cfg = Config::load(None, |k| match k {
            "MANDATE_DATABASE_CLIENT_CERT_FILE" => Some("/etc/mandate/pg.crt".into()),
            "MANDATE_DATABASE_CLIENT_KEY_FILE" => Some("/etc/mandate/pg.key".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            cfg.database_client_key_file.as_deref(),
            Some(Path::new("/etc/mandate/pg.key"))
        );
        assert!(cfg.database_client_cert_file.is_some());
    }
}
