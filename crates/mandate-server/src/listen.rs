//! The broker's listening socket: accept within `max_connections`, the TLS
//! handshake (if any) within the header timeout, then each connection is
//! served as the proxy serves its own ([`mandate_conn::serve`]): closed
//! once idle (HTTP/2 with GOAWAY), drained on a graceful stop.

use crate::config::TlsConfig;
use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use mandate_conn::serve::{self, Phase};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::Layer as _;

/// How connections are held in check.
pub struct Limits {
    /// To send a request's headers, finish the TLS handshake, or sit idle.
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// `mandate_connections_open`.
    pub open: Gauge,
    /// `mandate_connection_limit_reached_total`.
    pub reached: Counter,
}

/// The server's TLS settings from the certificate chain and key files;
/// `h2` and `http/1.1` offered by ALPN. Errors name the file, never its
/// contents.
pub fn tls_acceptor(t: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = t.cert_file.display();
    let certs = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls.cert_file {cert}: not a readable PEM certificate chain"))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.cert_file {cert}: holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|_| {
        anyhow::anyhow!(
            "tls.key_file {}: not a readable PEM private key",
            t.key_file.display()
        )
    })?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("tls.cert_file {cert} does not go with tls.key_file"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serve `router` on `listener` until `phase` says to stop; returns once
/// every connection has closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    let http = Arc::new(serve::http(limits.header_timeout));
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let mut at_limit = false;
    loop {
        let full = slots.available_permits() == 0;
        if full && !at_limit {
            limits.reached.inc();
            tracing::warn!(
                max_connections = max,
                "connection limit reached: new connections wait in the listen queue"
            );
        }
        at_limit = full;
        let slot = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Serve) => break,
            slot = slots.clone().acquire_owned() => slot.context("connection slots closed")?,
        };
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Serve) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                serve::accept_failed(&e).await;
                continue;
            }
        };
        let open = Open::new(slot, &limits.open);
        // Answers go out whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        // Client addresses feed the token endpoint's failure throttle.
        let app = axum::Extension(ConnectInfo(peer)).layer(router.clone());
        let (http, tls, phase, idle) = (
            http.clone(),
            tls.clone(),
            phase.clone(),
            limits.header_timeout,
        );
        tokio::spawn(async move {
            let _open = open;
            let Some(tls) = tls else {
                return serve::connection(&http, stream, app, phase, idle).await;
            };
            let mut stopping = phase.clone();
            let handshake = tokio::select! {
                r = tokio::time::timeout(idle, tls.accept(stream)) => r,
                _ = stopping.wait_for(|p| *p != Phase::Serve) => return,
            };
            match handshake {
                Ok(Ok(stream)) => serve::connection(&http, stream, app, phase, idle).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    // Connections still queued are refused; those open drain, or are cut
    // on `Phase::Close`, and give back their slot as they end.
    drop(listener);
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    let _all = slots.acquire_many(max).await;
    Ok(())
}

/// One open connection: its slot and its place in the gauge, until dropped.
struct Open {
    _slot: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, gauge: &Gauge) -> Self {
        gauge.inc();
        Open {
            _slot: slot,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
