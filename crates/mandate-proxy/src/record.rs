//! One call's audit record, from the moment a request arrives until its
//! answer has gone out (or the agent hung up): written once, as an
//! `invoked` record for a denied call, or an `invoked` record before the
//! call goes upstream and a `completed` one after.

use crate::decide::Known;
use crate::error::Deny;
use crate::state::State;
use axum::response::Response;
use mandate_wire::{Mode, Stage, ToolCall};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A call id unique across requests, restarts and proxies (upstream logs
/// and the audit chain are joined by it): 64 random bits drawn once per
/// process, then a counter passed through a bijective mixer (so ids look
/// unrelated but never repeat within a process). Cheaper than 128 fresh
/// random bits per call.
fn call_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    fn random_u64() -> u64 {
        u64::from_le_bytes(mandate_token::random_bytes::<8>())
    }
    static PREFIX: LazyLock<(u64, u64)> = LazyLock::new(|| (random_u64(), random_u64()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (hi, lo) = *PREFIX;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{hi:016x}{:016x}", mix(lo.wrapping_add(n)))
}

/// The SplitMix64 finaliser: a bijection on u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One call's audit record in the making. It is written exactly once:
/// when the call is denied, when the response body ends or fails, or —
/// if the agent goes away mid-body — when it is dropped.
pub struct CallRecord {
    st: Arc<State>,
    pub id: String,
    at: i64,
    started: Instant,
    pub known: Known,
    /// The agent's address, as the connection came in.
    client: Option<String>,
    method: String,
    path: String,
    /// Which listener: a call to `/{tool}/…`, or an egress tunnel.
    mode: Mode,
    pub status: u16,
    /// Bytes to the agent.
    pub bytes: u64,
    /// Bytes from the agent (a tunnel's only).
    pub bytes_up: Option<u64>,
    pub allowed: bool,
    pub reasons: Vec<String>,
    /// How many of `reasons` the `invoked` record already carries.
    reasons_written: usize,
    written: bool,
}

impl CallRecord {
    pub fn new(st: Arc<State>, client: Option<SocketAddr>, method: &str, path: &str) -> Self {
        CallRecord {
            st,
            id: call_id(),
            at: crate::now_ms(),
            started: Instant::now(),
            known: Known::default(),
            client: client.map(|a| a.ip().to_canonical().to_string()),
            method: method.to_owned(),
            path: path.to_owned(),
            mode: Mode::Inject,
            status: 0,
            bytes: 0,
            bytes_up: None,
            allowed: false,
            reasons: Vec::new(),
            reasons_written: 0,
            written: false,
        }
    }

    /// The record of a `CONNECT` to `target` on the egress listener.
    pub fn egress(st: Arc<State>, client: Option<SocketAddr>, target: &str) -> Self {
        let mut r = CallRecord::new(st, client, "CONNECT", target);
        r.mode = Mode::Egress;
        r
    }

    /// Answer with `d`. After an allow (upstream failures) the decision
    /// stays `allow` and the failure is added to the reasons.
    pub fn deny(self, d: Deny) -> Response {
        let id = self.refused(&d);
        d.into_response(&id)
    }

    /// Record that the agent is answered `d` (the answer is the caller's
    /// to send); the call's id.
    pub fn refused(mut self, d: &Deny) -> String {
        self.status = d.status.as_u16();
        self.reasons.extend(d.audit_reasons());
        self.bytes = d.body().len() as u64;
        self.complete();
        std::mem::take(&mut self.id)
    }

    /// An allowed call's `invoked` record, in the spool file before
    /// anything goes upstream: a proxy killed mid-call still leaves the
    /// record of what it was doing. False if the spool would not take it.
    pub fn write_ahead(&mut self) -> bool {
        let k = &self.known;
        self.reasons_written = self.reasons.len();
        self.st.audit.record(ToolCall {
            id: self.id.clone(),
            stage: Stage::Invoked,
            seq: 0, // the spool writer sets it
            opened_seq: None,
            at: self.at,
            agent: k.agent.clone(),
            task: k.task.clone(),
            tool: k.tool.clone(),
            action: k.action.clone(),
            jti: k.jti.clone(),
            client: self.client.clone(),
            chain: k.chain.clone(),
            misuse: None,
            mode: self.mode,
            method: self.method.clone(),
            path: self.path.clone(),
            status: None,
            latency_ms: self.started.elapsed().as_millis() as u64,
            bytes: 0,
            bytes_up: None,
            decision: "allow".into(),
            reasons: self.reasons.clone(),
            breakglass: k.breakglass,
        })
    }

    pub fn upstream_latency(&self, d: Duration) {
        self.st.metrics.upstream_latency.observe(d.as_secs_f64());
    }

    /// The response broke off: note why and write the record.
    pub fn fail(&mut self, reason: &str) {
        self.reasons.push(reason.to_owned());
        self.complete();
    }

    pub fn complete(&mut self) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let k = std::mem::take(&mut self.known);
        let latency_ms = self.started.elapsed().as_millis() as u64;
        let decision = if self.allowed { "allow" } else { "deny" };
        self.st.metrics.request(k.tool.as_deref(), self.status);
        self.st
            .metrics
            .decision(self.allowed, self.reasons.first().map(String::as_str));
        tracing::info!(
            status = self.status,
            decision,
            latency_ms,
            bytes = self.bytes,
            reason = self.reasons.first().map(String::as_str).unwrap_or(""),
            "call"
        );
        // An allowed call's outcome completes the `invoked` record written
        // ahead; a denied call's one record carries its outcome.
        let (stage, reasons) = if self.allowed {
            let after = self
                .reasons
                .split_off(self.reasons_written.min(self.reasons.len()));
            (Stage::Completed, after)
        } else {
            (Stage::Invoked, std::mem::take(&mut self.reasons))
        };
        // A failed write marks the spool broken: the next calls are refused.
        let _ = self.st.audit.record(ToolCall {
            id: self.id.clone(),
            stage,
            seq: 0, // the spool writer sets it
            opened_seq: None,
            at: self.at,
            agent: k.agent,
            task: k.task,
            tool: k.tool,
            action: k.action,
            jti: k.jti,
            client: self.client.take(),
            // Said once per call: on its opening record.
            chain: if self.allowed { Vec::new() } else { k.chain },
            misuse: k.misuse,
            mode: self.mode,
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: Some(self.status),
            latency_ms,
            bytes: self.bytes,
            bytes_up: self.bytes_up,
            decision: decision.into(),
            reasons,
            breakglass: k.breakglass,
        });
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.written {
            self.reasons.push(
                "client_closed: the agent closed the connection before the response ended".into(),
            );
            if self.status == 0 {
                // No answer yet: record it as nginx does (a status the
                // broker accepts), not as 0, which it would refuse.
                self.status = 499;
            }
            self.complete();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn call_ids_are_distinct_32_hex_digits() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| super::call_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
