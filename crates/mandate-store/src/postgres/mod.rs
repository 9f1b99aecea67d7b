//! PostgreSQL backend: the SQLite backend's design against a server. One
//! writer thread commits groups of writes (each in its savepoint, with its
//! audit events) and holds the database's writer lock; reads use a small
//! pool of connections. `synchronous_commit` is the server's (default `on`):
//! a commit is flushed before anyone is told it happened.
//!
//! The connection URL may carry a password: it is kept as a secret and
//! never logged; [`PostgresStore`]'s `Debug` shows user, host and database.
//!
//! Connections use TLS (rustls, certificate and host name verified against
//! the public web roots plus any CA given) when the server offers it, and
//! insist on it with `sslmode=require` in the URL; `sslmode=disable` is
//! plain TCP. A client certificate, when given, is offered to servers that
//! authenticate clients by certificate (`hostssl … cert` in `pg_hba.conf`).

mod db;
mod ops;
mod reader;
mod secrets;
mod writer;

use crate::StoreError;
use db::{Conn, Db};
pub use reader::PostgresAuditReader;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex, mpsc};
use writer::{Job, Tx};

const READERS: usize = 8;

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

fn tls(settings: PostgresTls) -> Result<Tls, StoreError> {
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

pub struct PostgresStore {
    url: SecretString,
    tls: Tls,
    target: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Conn>>>,
    read_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStore({})", self.target)
    }
}

/// `user@host:port/dbname` from a URL, without the password.
fn describe(url: &SecretString) -> Result<String, StoreError> {
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

impl PostgresStore {
    /// Connect, take the writer lock, migrate, and start the writer.
    /// Fails if the server is unreachable or another broker holds the lock.
    pub async fn open(url: SecretString, settings: PostgresTls) -> Result<Self, StoreError> {
        let target = describe(&url)?;
        let tls = tls(settings)?;
        let writer_tls = tls.clone();
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let writer_url = url.clone();
        // The synchronous client runs its own small runtime: it must live
        // and die on a thread of its own, never on an async worker.
        let writer = std::thread::Builder::new()
            .name("mandate-pg-writer".into())
            .spawn(move || match writer::connect(&writer_url, &writer_tls) {
                Ok(first) => {
                    let _ = ready_tx.send(Ok(()));
                    writer::run(writer_url, writer_tls, first, jobs_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = writer.join();
                return Err(e);
            }
            Err(_) => return Err(StoreError::Backend("the writer thread died".into())),
        }
        tracing::info!(database = %target, "opened PostgreSQL store");
        Ok(PostgresStore {
            url,
            tls,
            target,
            jobs: Mutex::new(Some(jobs_tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            read_slots: tokio::sync::Semaphore::new(READERS),
        })
    }

    /// Stop accepting writes, let queued ones commit, join the writer.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        // A client owns a runtime, which may not be dropped on an async
        // worker thread.
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        if !readers.is_empty() {
            let _ = std::thread::spawn(move || drop(readers)).join();
        }
    }

    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_, '_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = writer::job(f);
        {
            let guard = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .ok_or(StoreError::Closed)?
                .send(job)
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&mut Db<'_, postgres::Client>) -> Result<R, StoreError> + Send + 'static,
    {
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.readers.clone();
        let (url, tls) = (self.url.clone(), self.tls.clone());
        // The connection goes back to the pool from the blocking thread,
        // never through the join handle (which an async caller may drop).
        tokio::task::spawn_blocking(move || {
            let connect = || -> Result<Conn, StoreError> {
                Ok(Conn::new(postgres::Client::connect(
                    url.expose_secret(),
                    tls.clone(),
                )?))
            };
            let pooled = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match pooled {
                Some(mut c) => {
                    if c.is_alive() {
                        c
                    } else {
                        connect()?
                    }
                }
                None => connect()?,
            };
            let mut result = f(&mut conn.db());
            if result.is_err() && conn.client.is_closed() {
                // The connection died under this read (a server restart):
                // reads change nothing, so one retry on a new one is safe.
                conn = connect()?;
                result = f(&mut conn.db());
            }
            if !conn.client.is_closed() {
                pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}
