//! Tool-call records: built per request, written to the spool by the
//! request's own task (`writer`: outcomes buffered, and the file synced at
//! most once per 5 ms, by a thread of its own), then shipped to the broker
//! (`POST /v1/audit/tool-invocations`) by a task that advances the
//! committed offset only after a 2xx. Each record carries its spool
//! position as `seq` and each batch the spool's `source` id; the broker
//! skips what it has already chained from that source, so a batch resent
//! after a crash is chained once. An allowed call whose two records are in
//! the same batch is shipped as one `call` record (half the events to
//! chain); the broker chains that as `tool.completed` if a resend finds
//! the call's opening already chained.
//!
//! The records and batches are `mandate_wire`'s (`ToolCall`, `Batch`),
//! which the broker reads; appending them to the spool is `writer`'s job.

use crate::broker::{Broker, BrokerError};
use crate::metrics::Metrics;
use crate::spool::{Position, Spool};
use crate::writer::{Landing, SpoolLog};
use mandate_wire::Batch;
pub use mandate_wire::{Stage, ToolCall};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
/// The front of the audit pipeline.
#[derive(Clone)]
pub struct AuditLog {
    spool: Arc<SpoolLog>,
}

impl AuditLog {
    /// Whether the last spool write succeeded: calls are refused while
    /// not, since they could not be audited.
    pub fn is_writable(&self) -> bool {
        !self.spool.is_broken()
    }

    /// Write a record to the spool file. A call's opening record survives
    /// the proxy being killed once this returns true; its outcome record,
    /// within 5 ms, as every record survives a power loss once synced.
    /// False if it could not be written.
    pub fn record(&self, mut call: ToolCall) -> bool {
        // Cut to the broker's limits: one odd request never makes a batch
        // unacceptable.
        call.fit();
        // An outcome may wait for the next write (see `writer`); what opens
        // a call, and a denied call's only record, may not.
        let landing = match call.stage {
            Stage::Completed => Landing::Soon,
            Stage::Invoked | Stage::Call => Landing::Now,
        };
        self.spool.append(&mut call, landing)
    }
}

/// The running pipeline's handles.
pub struct Pipeline {
    pub log: AuditLog,
    syncer: Option<std::thread::JoinHandle<()>>,
    shipper: tokio::task::JoinHandle<()>,
    stop_shipping: watch::Sender<bool>,
}

pub struct ShipSettings {
    pub batch_max: usize,
    pub flush_every: Duration,
}

/// Open the spool and start the sync thread and the shipper task.
pub fn start(
    dir: &std::path::Path,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    settings: ShipSettings,
) -> std::io::Result<Pipeline> {
    let (spool, writer, committed) = Spool::open(dir)?;
    let (written_tx, written_rx) = watch::channel(writer.position());
    let log = Arc::new(SpoolLog::new(writer));
    let syncer = {
        let log = log.clone();
        std::thread::Builder::new()
            .name("mandate-audit-sync".into())
            .spawn(move || crate::writer::run(log, written_tx))?
    };
    let (stop_shipping, stop_rx) = watch::channel(false);
    let shipper = tokio::spawn(ship_loop(ShipLoop {
        spool,
        committed,
        acked: committed,
        written: written_rx,
        broker,
        metrics,
        settings,
        rotate: log.clone(),
        stop: stop_rx,
        caught_up_at: None,
    }));
    Ok(Pipeline {
        log: AuditLog { spool: log },
        syncer: Some(syncer),
        shipper,
        stop_shipping,
    })
}

impl Pipeline {
    /// Sync what was written, make one last attempt to ship (bounded by
    /// `grace`), stop. What is not shipped stays in the spool for next time.
    pub async fn stop(mut self, grace: Duration) {
        self.log.spool.stop();
        if let Some(t) = self.syncer.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = self.stop_shipping.send(true);
        if tokio::time::timeout(grace, &mut self.shipper)
            .await
            .is_err()
        {
            self.shipper.abort();
        }
    }

    /// Stop as a crash would: nothing more is written, synced or shipped.
    pub async fn kill(mut self) {
        self.log.spool.kill();
        self.shipper.abort();
        if let Some(t) = self.syncer.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = (&mut self.shipper).await;
    }
}

struct ShipLoop {
    spool: Spool,
    /// How far the broker's acknowledgements are recorded on disk.
    committed: Position,
    /// How far the broker has acknowledged (at or past `committed`).
    acked: Position,
    /// How far the writer has synced: never ship past it.
    written: watch::Receiver<Position>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    settings: ShipSettings,
    rotate: Arc<SpoolLog>,
    stop: watch::Receiver<bool>,
    /// Where the shipper last found itself caught up (to spot an idle spool).
    caught_up_at: Option<Position>,
}

/// A busy spool starts a new segment once the current one is this large.
const SEGMENT_BYTES: u64 = 1 << 20;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

async fn ship_loop(mut s: ShipLoop) {
    let mut backoff = BACKOFF_MIN;
    let mut wait = Duration::ZERO; // ship what a previous run left, at once
    loop {
        let stopping = *s.stop.borrow();
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = s.stop.changed() => {}
            }
        }
        let stopping = *s.stop.borrow();
        match drain(&mut s).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                wait = s.settings.flush_every;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "audit shipping failed; records stay spooled");
                wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        if stopping {
            return;
        }
    }
}

/// Record the broker's acknowledgements on disk once per this many
/// batches (and whenever the shipper catches up): a crash in between
/// resends those batches, which the broker skips.
const COMMIT_EVERY: usize = 16;

/// Ship everything written so far, batch by batch.
async fn drain(s: &mut ShipLoop) -> Result<(), String> {
    let mut unsaved = 0;
    loop {
        let upto = *s.written.borrow();
        let backlog = s.spool.backlog(s.acked, upto);
        s.metrics.spool_backlog.set(backlog as i64);
        if s.acked >= upto {
            commit(s).await?;
            // Caught up. Compact: start a fresh segment (so this one can be
            // deleted) when it is large, or when nothing new came in since
            // the last round.
            let idle = s.caught_up_at == Some(upto);
            if s.committed.offset > 0 && (idle || s.committed.offset >= SEGMENT_BYTES) {
                s.rotate.request_rotate();
            }
            s.caught_up_at = Some(upto);
            return Ok(());
        }
        let (spool, from, max) = (s.spool.clone(), s.acked, s.settings.batch_max);
        let batch = tokio::task::spawn_blocking(move || spool.read(from, upto, max))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the spool: {e}"))?;
        if batch.end == s.acked {
            return commit(s).await; // nothing readable yet
        }
        let records: Vec<ToolCall> = batch
            .lines
            .iter()
            .filter_map(|l| {
                let r = spooled(l);
                if r.is_none() {
                    tracing::error!("unreadable line in the audit spool; skipped");
                }
                r
            })
            .collect();
        let records = merge_calls(records);
        if !records.is_empty()
            && let Err(e) = ship(s, records).await
        {
            commit(s).await?;
            return Err(e);
        }
        s.acked = batch.end;
        unsaved += 1;
        if unsaved == COMMIT_EVERY {
            commit(s).await?;
            unsaved = 0;
        }
    }
}

/// Record on disk how far the broker has acknowledged.
async fn commit(s: &mut ShipLoop) -> Result<(), String> {
    if s.acked == s.committed {
        return Ok(());
    }
    let (spool, end) = (s.spool.clone(), s.acked);
    tokio::task::spawn_blocking(move || spool.commit(end))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("committing the spool offset: {e}"))?;
    s.committed = end;
    Ok(())
}

/// Merge each allowed call's `invoked` record with its `completed` record
/// when both are in `records` (spool order): one `call` record, at the
/// completion's place and position, so the order stays strictly
/// increasing. Calls that span batches keep their two records.
fn merge_calls(records: Vec<ToolCall>) -> Vec<ToolCall> {
    let mut out: Vec<Option<ToolCall>> = Vec::with_capacity(records.len());
    let mut open: HashMap<String, usize> = HashMap::new();
    for r in records {
        match r.stage {
            Stage::Invoked if r.decision == "allow" => {
                open.insert(r.id.clone(), out.len());
                out.push(Some(r));
            }
            Stage::Completed => match open.remove(&r.id).and_then(|i| out[i].take()) {
                Some(mut call) => {
                    call.stage = Stage::Call;
                    call.opened_seq = Some(call.seq);
                    call.seq = r.seq;
                    call.status = r.status;
                    call.latency_ms = r.latency_ms;
                    call.bytes = r.bytes;
                    call.bytes_up = r.bytes_up;
                    call.reasons.extend(r.reasons);
                    call.fit();
                    out.push(Some(call));
                }
                None => out.push(Some(r)),
            },
            _ => out.push(Some(r)),
        }
    }
    out.into_iter().flatten().collect()
}

async fn ship(s: &ShipLoop, events: Vec<ToolCall>) -> Result<(), String> {
    let batch = Batch {
        // A spool id is hex (checked when read).
        source: s.spool.source().to_owned(),
        events,
    };
    match s.broker.post_audit(&batch).await {
        Ok(a) => {
            tracing::debug!(
                accepted = a.accepted,
                duplicates = a.duplicates,
                "audit batch shipped"
            );
            Ok(())
        }
        Err(BrokerError::Status {
            status: 400 | 422,
            message,
            ..
        }) if batch.events.len() > 1 => {
            // One bad record refuses the whole batch: find it, one by one.
            tracing::warn!(%message, "audit batch refused; sending records one at a time");
            for record in batch.events {
                Box::pin(ship(s, vec![record])).await?;
            }
            Ok(())
        }
        Err(BrokerError::Status {
            status: 400 | 422,
            message,
            ..
        }) => {
            tracing::error!(%message, "broker refuses an audit record; kept in rejected.jsonl");
            let line = serde_json::to_vec(&batch.events[0]).map_err(|e| e.to_string())?;
            let spool = s.spool.clone();
            tokio::task::spawn_blocking(move || spool.set_aside(&line))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("keeping a refused record: {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A record read back from the spool. A field this proxy does not know
/// (written by a newer proxy before a downgrade) is dropped, not the
/// record: an audit record is never lost to a version change.
fn spooled(line: &[u8]) -> Option<ToolCall> {
    if let Ok(r) = serde_json::from_slice(line) {
        return Some(r);
    }
    let serde_json::Value::Object(mut fields) = serde_json::from_slice(line).ok()? else {
        return None;
    };
    fields.retain(|k, _| ToolCall::FIELDS.contains(&k.as_str()));
    serde_json::from_value(serde_json::Value::Object(fields)).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mandate_wire::batch::MAX_REASONS;

    pub(crate) fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            stage: Stage::Invoked,
            seq: 0,
            opened_seq: None,
            at: 0,
            agent: None,
            task: None,
            tool: None,
            action: None,
            jti: None,
            client: None,
            chain: vec![],
            misuse: None,
            mode: Default::default(),
            method: "GET".into(),
            path: "/".into(),
            status: Some(200),
            latency_ms: 0,
            bytes: 0,
            bytes_up: None,
            decision: "allow".into(),
            reasons: vec![],
            breakglass: false,
        }
    }

    /// What the shipper makes of a batch: each allowed call whose
    /// records are both in it becomes one `call` record at its completion's
    /// position; anything else is passed on as it was.
    #[test]
    fn a_calls_two_records_in_one_batch_are_shipped_as_one() {
        let rec =
            |id: &str, seq: u64, stage: Stage, decision: &'static str, reason: &str| ToolCall {
                seq,
                stage,
                decision: decision.into(),
                status: (stage != Stage::Invoked || decision == "deny").then_some(200),
                latency_ms: seq,
                bytes: seq * 10,
                reasons: vec![reason.into()],
                ..call(id)
            };
        let merged = merge_calls(vec![
            rec("late", 1, Stage::Completed, "allow", "upstream"), // opened in an earlier batch
            rec("a", 2, Stage::Invoked, "allow", "allow-in-scope"),
            rec("d", 3, Stage::Invoked, "deny", "deny-out-of-scope"),
            rec("b", 4, Stage::Invoked, "allow", "allow-in-scope"), // completes in a later batch
            rec("a", 5, Stage::Completed, "allow", "upstream_failed"),
        ]);
        let shape: Vec<(&str, u64, Stage, Option<u64>)> = merged
            .iter()
            .map(|r| (r.id.as_str(), r.seq, r.stage, r.opened_seq))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("late", 1, Stage::Completed, None),
                ("d", 3, Stage::Invoked, None),
                ("b", 4, Stage::Invoked, None),
                ("a", 5, Stage::Call, Some(2)),
            ]
        );
        let a = &merged[3];
        assert_eq!((a.status, a.latency_ms, a.bytes), (Some(200), 5, 50));
        assert_eq!(a.reasons, vec!["allow-in-scope", "upstream_failed"]);
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(
            (json["stage"].as_str(), json["opened_seq"].as_u64()),
            (Some("call"), Some(2))
        );
        assert!(
            serde_json::to_value(&merged[0])
                .unwrap()
                .get("opened_seq")
                .is_none()
        );
        // Reasons of both stay within the broker's limit.
        let mut many = rec("m", 6, Stage::Invoked, "allow", "r");
        many.reasons = vec!["r".into(); MAX_REASONS];
        let done = rec("m", 7, Stage::Completed, "allow", "x");
        assert_eq!(merge_calls(vec![many, done])[0].reasons.len(), MAX_REASONS);
    }

    #[test]
    fn spooled_lines_read_back_as_records() {
        let line = serde_json::to_vec(&call("a")).unwrap();
        let back: ToolCall = serde_json::from_slice(&line).unwrap();
        assert_eq!((back.id.as_str(), back.decision.as_ref()), ("a", "allow"));
        // A line written before `opened_seq` existed still reads.
        let old = br#"{"id":"o","stage":"invoked","seq":3,"at":0,"agent":null,"task":null,"tool":null,"action":null,"jti":null,"method":"GET","path":"/","status":null,"latency_ms":0,"bytes":0,"decision":"allow","reasons":[]}"#;
        assert!(serde_json::from_slice::<ToolCall>(old).is_ok());
        // One from a newer proxy (before a downgrade) keeps what we know.
        let newer = br#"{"id":"n","stage":"invoked","seq":3,"at":0,"agent":"bot","task":null,"tool":null,"action":null,"jti":null,"method":"GET","path":"/","status":403,"latency_ms":0,"bytes":0,"decision":"deny","reasons":["r"],"future":{"x":1}}"#;
        let r = spooled(newer).expect("the record is kept");
        assert_eq!(
            (r.id.as_str(), r.agent.as_deref(), r.reasons.len()),
            ("n", Some("bot"), 1)
        );
        for bad in [
            &b"[1]"[..],
            b"\"s\"",
            b"{\"id\":",
            b"{} {}",
            b"",
            b"garbage",
        ] {
            assert!(serde_json::from_slice::<ToolCall>(bad).is_err());
            assert!(spooled(bad).is_none());
        }
    }
}
