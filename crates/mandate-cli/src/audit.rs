//! Audit verbs. `verify` and `export` also work offline, on the database
//! itself (the SQLite file, or PostgreSQL as the server's config names it)
//! or on an export, so an auditor needs no running or trusted broker.

use crate::client::Client;
use crate::output;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mandate_audit::{Checkpoint, Event, verify_chain_against};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; names the first broken record.
    Verify {
        #[command(flatten)]
        offline: Offline,
        /// Verify a JSON-lines export instead.
        #[arg(long, conflicts_with_all = ["data_dir", "config"])]
        file: Option<PathBuf>,
        /// A head printed by an earlier verify (`SEQ:HASH`, repeatable):
        /// fail if the log no longer holds it unchanged. Keep heads outside
        /// the broker; this is what catches a log cut short.
        #[arg(long = "expect", value_name = "SEQ:HASH")]
        expect: Vec<Checkpoint>,
        /// A signed checkpoint file from `mandate audit checkpoint`
        /// (repeatable): its signature must verify against `--jwks`, and
        /// the log must still hold its record unchanged.
        #[arg(long = "checkpoint", value_name = "FILE", requires = "jwks")]
        checkpoints: Vec<PathBuf>,
        /// The JWK set to verify checkpoints with: the broker's
        /// `/.well-known/jwks.json`, saved by you (rotated keys leave the
        /// live one, and a broker you are auditing should not pick the key).
        /// With it, the `audit.checkpoint` records the broker writes into
        /// the chain are verified too, so a log rewritten from inside the
        /// database (hashes recomputed) fails at the first such record.
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
    },
    /// Sign the chain's head: prints a checkpoint (a JWS) to keep outside
    /// the broker, with a copy of its JWKS, for `verify --checkpoint`.
    Checkpoint,
    /// Write events as JSON lines to stdout.
    Export {
        /// Only `jsonl` is supported.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[command(flatten)]
        offline: Offline,
    },
    /// Follow new events as they are written.
    Tail {
        /// Start after this sequence number (default: the last 10 events).
        #[arg(long)]
        since: Option<u64>,
    },
}

/// Where to read events without the server (default: the server's API).
#[derive(clap::Args)]
pub struct Offline {
    /// Read the SQLite database in this data dir directly.
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// Read the database the server's config names (with its MANDATE_*
    /// overrides): PostgreSQL, read-only, when it sets a database URL;
    /// else the SQLite file in its data_dir.
    #[arg(long)]
    config: Option<PathBuf>,
}

const PAGE: usize = 5000;

fn db_path(dir: &Path) -> PathBuf {
    dir.join("mandate.db")
}

enum Database {
    Sqlite(PathBuf),
    Postgres(secrecy::SecretString, mandate_store::PostgresTls),
}

impl Offline {
    fn database(&self) -> Result<Option<Database>> {
        if let Some(dir) = &self.data_dir {
            return Ok(Some(Database::Sqlite(db_path(dir))));
        }
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let cfg = mandate_server::Config::load(Some(path), |k| std::env::var(k).ok())?;
        Ok(Some(match cfg.database_url()? {
            Some(url) => Database::Postgres(url, cfg.database_tls()?),
            None => Database::Sqlite(db_path(&cfg.data_dir)),
        }))
    }
}

/// Read PostgreSQL page by page on a thread of its own (its client is
/// blocking), handing pages over as they come.
async fn postgres_events(
    url: secrecy::SecretString,
    tls: mandate_store::PostgresTls,
    since: u64,
    sink: &mut impl FnMut(Event) -> Result<()>,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reader = std::thread::spawn(move || -> Result<(), mandate_store::StoreError> {
        let mut db = mandate_store::PostgresAuditReader::connect(&url, tls)?;
        let mut after = since;
        loop {
            let page = db.events_since(after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.seq;
            if tx.blocking_send(page).is_err() {
                return Ok(()); // the sink gave up
            }
        }
    });
    let mut failed = None;
    while let Some(page) = rx.recv().await {
        if let Err(e) = page.into_iter().try_for_each(&mut *sink) {
            failed = Some(e);
            break;
        }
    }
    drop(rx);
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the database reader thread panicked"))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(read.context("reading audit events from PostgreSQL")?),
    }
}

fn read_jwks(jwks: &Path) -> Result<mandate_token::JwkSet> {
    serde_json::from_slice(
        &std::fs::read(jwks).with_context(|| format!("--jwks: reading {}", jwks.display()))?,
    )
    .with_context(|| format!("--jwks: {} is not a JWK set", jwks.display()))
}

/// The heads the chain's own `audit.checkpoint` records vouch for, each
/// signature verified against `keys` and each naming an earlier record;
/// the error names the record.
fn chained_checkpoints(events: &[Event], keys: &mandate_token::JwkSet) -> Result<Vec<Checkpoint>> {
    events
        .iter()
        .filter(|e| e.kind == mandate_audit::EventKind::AuditCheckpoint)
        .map(|e| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            let jws = detail["checkpoint"].as_str().unwrap_or_default();
            let claims = mandate_token::checkpoint::verify(jws, keys)
                .with_context(|| format!("record {}: audit.checkpoint does not verify", e.seq))?;
            if claims.seq >= e.seq {
                bail!(
                    "record {}: audit.checkpoint names a later record ({})",
                    e.seq,
                    claims.seq
                );
            }
            Ok(Checkpoint {
                seq: claims.seq,
                hash: claims.hash,
            })
        })
        .collect()
}

/// The heads that signed checkpoint files vouch for, each verified
/// against `keys`; the error names the file.
fn signed_checkpoints(files: &[PathBuf], keys: &mandate_token::JwkSet) -> Result<Vec<Checkpoint>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--checkpoint: reading {}", f.display()))?;
            let claims = mandate_token::checkpoint::verify(&text, keys)
                .with_context(|| format!("--checkpoint {}", f.display()))?;
            Ok(Checkpoint {
                seq: claims.seq,
                hash: claims.hash,
            })
        })
        .collect()
}

/// Every event, page by page, from the database or the server.
async fn all_events(
    c: &Client,
    offline: Option<&Offline>,
    since: u64,
    mut sink: impl FnMut(Event) -> Result<()>,
) -> Result<()> {
    let mut after = since;
    let database = match offline {
        Some(o) => o.database()?,
        None => None,
    };
    match database {
        Some(Database::Sqlite(path)) => {
            let conn = mandate_store::SqliteStore::open_read_only(&path)?;
            loop {
                let page = mandate_store::read_events(&conn, after, PAGE)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in page {
                    sink(e)?;
                }
            }
        }
        Some(Database::Postgres(url, tls)) => {
            postgres_events(url, tls, since, &mut sink).await?;
        }
        None => {
            c.require_token("audit")?;
            loop {
                let v = c
                    .get(&format!("/v1/audit/events?since={after}&limit={PAGE}"))
                    .await?;
                let page: Vec<Event> = serde_json::from_value(v["events"].clone())
                    .context("server sent malformed events")?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in page {
                    sink(e)?;
                }
            }
        }
    }
    Ok(())
}

pub async fn run(c: &Client, cmd: AuditCmd, as_json: bool) -> Result<()> {
    match cmd {
        AuditCmd::Verify {
            offline,
            file,
            mut expect,
            checkpoints,
            jwks,
        } => {
            let keys = jwks.as_deref().map(read_jwks).transpose()?;
            if let Some(keys) = &keys {
                expect.extend(signed_checkpoints(&checkpoints, keys)?);
            }
            let mut events = Vec::new();
            match file {
                Some(f) => {
                    let r = std::io::BufReader::new(
                        std::fs::File::open(&f)
                            .with_context(|| format!("opening {}", f.display()))?,
                    );
                    for (i, line) in r.lines().enumerate() {
                        let line = line?;
                        if line.trim().is_empty() {
                            continue;
                        }
                        events.push(
                            serde_json::from_str::<Event>(&line)
                                .with_context(|| format!("{} line {}", f.display(), i + 1))?,
                        );
                    }
                }
                None => {
                    all_events(c, Some(&offline), 0, |e| {
                        events.push(e);
                        Ok(())
                    })
                    .await?
                }
            }
            let head = events.last().map(|e| format!("{}:{}", e.seq, e.hash));
            let mut embedded = 0;
            if let Some(keys) = &keys {
                for c in chained_checkpoints(&events, keys)? {
                    expect.push(c);
                    embedded += 1;
                }
            }
            match verify_chain_against(events, &expect) {
                Ok(n) => {
                    if as_json {
                        output::json(&serde_json::json!({"valid": true, "records": n,
                            "head": head, "checkpoints_matched": expect.len(),
                            "signed_checkpoints_in_chain": embedded}));
                    } else {
                        println!(
                            "ok: {n} records, chain intact{}; head {}",
                            if expect.is_empty() {
                                ""
                            } else {
                                ", checkpoints found"
                            },
                            head.unwrap_or_else(|| "-".into())
                        );
                    }
                    Ok(())
                }
                Err(b) => {
                    if as_json {
                        output::json(
                            &serde_json::json!({"valid": false, "broken_at": b.seq, "reason": b.reason}),
                        );
                    }
                    bail!("{b}")
                }
            }
        }
        AuditCmd::Checkpoint => {
            c.require_token("audit checkpoint")?;
            let v = c.get("/v1/audit/checkpoint").await?;
            if as_json {
                output::json(&v);
            } else {
                let jws = v["checkpoint"]
                    .as_str()
                    .context("server sent no checkpoint")?;
                println!("{jws}");
            }
            Ok(())
        }
        AuditCmd::Export {
            format,
            since,
            offline,
        } => {
            if format != "jsonl" {
                bail!("--format: only `jsonl` is supported");
            }
            let mut out = std::io::stdout().lock();
            all_events(c, Some(&offline), since, |e| {
                use std::io::Write;
                writeln!(out, "{}", serde_json::to_string(&e)?)?;
                Ok(())
            })
            .await
        }
        AuditCmd::Tail { since } => {
            c.require_token("audit tail")?;
            let mut after = match since {
                Some(s) => s,
                None => {
                    // Find the head, then show the last few.
                    let mut last = 0;
                    all_events(c, None, 0, |e| {
                        last = e.seq;
                        Ok(())
                    })
                    .await?;
                    last.saturating_sub(10)
                }
            };
            loop {
                let v = c
                    .get(&format!("/v1/audit/events?since={after}&limit=1000"))
                    .await?;
                let page: Vec<Event> = serde_json::from_value(v["events"].clone())?;
                for e in &page {
                    if as_json {
                        println!("{}", serde_json::to_string(e)?);
                    } else {
                        println!(
                            "{:>6} {} {:<22} {:<8} agent={} task={} tool={} {}",
                            e.seq,
                            e.time_ms,
                            e.kind.as_str(),
                            e.decision.as_deref().unwrap_or("-"),
                            e.agent.as_deref().unwrap_or("-"),
                            e.task.as_deref().unwrap_or("-"),
                            e.tool.as_deref().unwrap_or("-"),
                            e.reasons.join("; ")
                        );
                    }
                    after = e.seq;
                }
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
