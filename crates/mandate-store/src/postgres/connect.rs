//! How connections are made: TLS (`mandate_pg_connect`, shared with the
//! database engine), and a description of the target that never carries
//! the password.

use crate::StoreError;
use mandate_pg_connect::PostgresTls;
use secrecy::{ExposeSecret, SecretString};

/// How every connection negotiates TLS.
pub(crate) type Tls = mandate_pg_connect::Connector;

pub(crate) fn tls(settings: PostgresTls) -> Result<Tls, StoreError> {
    mandate_pg_connect::connector(settings).map_err(|e| StoreError::Backend(e.to_string()))
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
