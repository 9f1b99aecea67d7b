//! `mandate server` and `mandate dev`.

use anyhow::{Context, Result, bail};
use mandate_server::{Config, Started};
use secrecy::ExposeSecret;
use serde_json::json;
use std::path::PathBuf;

fn init_logging(format: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The PostgreSQL client logs every statement's parameters at debug
    // (token hashes, sealed values, audit details): never, whatever
    // RUST_LOG asks for.
    if let Ok(cap) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(cap);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// SIGINT (Ctrl-C) or SIGTERM (what systemd, Kubernetes and `docker stop`
/// send): either one stops the process gracefully.
async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn wait_for_shutdown(mut started: Started) -> Result<()> {
    tokio::select! {
        r = &mut started.server => {
            // The listener died (e.g. a bad TLS certificate): report it.
            return r.context("server task failed")?.context("server stopped");
        }
        r = shutdown_signal() => r?,
    }
    tracing::info!("shutting down: finishing queued writes");
    started.stop().await;
    Ok(())
}

pub async fn server(config: Option<PathBuf>) -> Result<()> {
    let cfg = Config::load(config.as_deref(), |k| std::env::var(k).ok())?;
    init_logging(&cfg.log_format);
    let settings = cfg.validate()?;
    let started = mandate_server::start(settings).await?;
    if let Some(root) = &started.root_token {
        // Shown once: only its hash is stored.
        println!(
            "Root admin token (shown once, store it safely):\n\n    {}\n",
            root.expose_secret()
        );
    }
    wait_for_shutdown(started).await
}

pub async fn proxy(cfg: mandate_proxy::ProxyConfig) -> Result<()> {
    init_logging("text");
    let running = mandate_proxy::Proxy::start(cfg).await?;
    tracing::info!(addr = %running.addr(), "mandate proxy listening");
    let stopper = running.stopper();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        if signal.await.is_ok() {
            tracing::info!("shutting down: draining connections, shipping audit records");
            stopper.stop();
        }
    });
    running.wait().await?;
    Ok(())
}

pub async fn dev(listen: &str, data_dir: Option<PathBuf>) -> Result<()> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not host:port"))?;
    if !addr.ip().is_loopback() {
        bail!("--listen: dev mode only listens on loopback (127.0.0.1 or ::1)");
    }
    let data_dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "mandate-dev-{}",
            hex::encode(mandate_token::random_bytes::<6>())
        )),
    };
    let cfg = Config {
        listen: addr,
        data_dir: data_dir.clone(),
        trust_domain: "mandate.local".into(),
        // Dev only: a master key in the data dir (warned about loudly),
        // unless MANDATE_MASTER_KEY is set.
        master_key: std::env::var("MANDATE_MASTER_KEY").ok().map(Into::into),
        generate_master_key: true,
        ..Config::default()
    };
    init_logging("text");
    let settings = cfg.validate()?;
    let started = mandate_server::start(settings).await?;
    let base = started.app.issuer.clone();
    let (root, fresh) = match &started.root_token {
        Some(t) => (t.expose_secret().to_owned(), true),
        None => (mandate_server::dev_admin_token(&started.app).await?, false),
    };
    if fresh {
        seed(&base, &root).await.context("seeding dev data")?;
    }
    println!(
        "\nMandate dev server: loopback only, data in {} — not for production.\n\
         Paste these into another shell:\n\n    export MANDATE_ADDR={base}\n    export MANDATE_TOKEN={root}\n",
        data_dir.display()
    );
    if fresh {
        println!(
            "Seeded: owner `platform`; tool `github` (audience https://api.github.com, staging, actions issues:read issues:write);\n\
             agent `demo-bot` (staging, may use github); default Cedar policies in {}/policies.\n",
            data_dir.display()
        );
    }
    println!(
        "Next:\n    mandate agent list\n    mandate agent join-token demo-bot          # then: mandate agent enroll --join-token … --key-file demo-bot.key\n    \
         mandate login --key-file demo-bot.key --export\n    mandate task create --intent \"triage issues\" --scope github=issues:read\n"
    );
    wait_for_shutdown(started).await
}

/// Example data for dev mode, created through the API like any client would.
async fn seed(base: &str, root: &str) -> Result<()> {
    let c = crate::client::Client::new(base, Some(root.to_owned()), None)?;
    c.post(
        "/v1/owners",
        &json!({"name": "platform", "description": "Platform team (example)"}),
    )
    .await?;
    c.post(
        "/v1/tools",
        &json!({"name": "github", "audience": "https://api.github.com", "owner": "platform",
                "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
                "actions": ["issues:read", "issues:write"], "description": "GitHub REST API (example)"}),
    )
    .await?;
    c.post(
        "/v1/agents",
        &json!({"name": "demo-bot", "owner": "platform", "environment": "staging",
                "allowed_tools": ["github"], "description": "Example agent"}),
    )
    .await?;
    Ok(())
}
