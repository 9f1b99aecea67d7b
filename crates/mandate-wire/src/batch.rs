//! `POST /v1/audit/tool-invocations` (admin right `proxy`): a proxy's
//! tool-call records, the limits the broker holds them to, and its answer.
//!
//! The broker refuses a batch with a field it does not know
//! (`deny_unknown_fields`), so a proxy never sends what a broker would
//! drop unseen; what an older broker cannot take is announced by the
//! protocol number instead ([`crate::PROXY_PROTOCOL`]). The proxy's spool
//! holds the same records, one JSON line each.

pub use mandate_core::{Misuse, MisuseCheck};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Most records one batch may carry.
pub const MAX_BATCH: usize = 1000;
/// Longest record `id` and batch `source` (letters, digits, `-`, `_`).
pub const MAX_ID: usize = 64;
/// Longest `method`, in bytes.
pub const MAX_METHOD: usize = 16;
/// Longest `path`, in bytes.
pub const MAX_PATH: usize = 2048;
/// Longest `agent`, `task`, `tool`, `action` and `jti`, in bytes.
pub const MAX_FIELD: usize = 256;
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 512;
/// Most reasons on one record.
pub const MAX_REASONS: usize = 16;
/// Most agents a record's `chain` names (a delegation's depth is at
/// most this).
pub const MAX_CHAIN: usize = mandate_core::MAX_DELEGATION_DEPTH as usize;

/// Which record of a call this is. An allowed call has two: `invoked`,
/// in the proxy's spool before the request goes upstream (so no upstream
/// effect is ever without its record; no status yet), and `completed`
/// with the outcome. A denied call has one `invoked` record, outcome
/// included. `call` is never spooled: it is what the proxy's shipper
/// sends for an `invoked` and a `completed` record of one call that are
/// in the same batch (protocol 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Invoked,
    Completed,
    Call,
}

/// Which of the proxy's listeners a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A call to `/{tool}/…` with the secret injected: `tool.invoked`,
    /// `tool.completed`.
    #[default]
    Inject,
    /// A `CONNECT` tunnel on the egress listener (protocol 5): `method`
    /// is `CONNECT`, `path` the `host:port` asked for, `bytes` what came
    /// back to the agent and `bytes_up` what it sent; chained as
    /// `egress.allowed`, `egress.denied` and `egress.closed`.
    Egress,
}

impl Mode {
    fn is_inject(&self) -> bool {
        *self == Mode::Inject
    }
}

/// One record of a call through a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The call's id (the proxy's `x-request-id`), chained as the
    /// event's request id.
    pub id: String,
    pub stage: Stage,
    /// The record's position in the proxy's spool: strictly increasing
    /// per source, so a resent record (at or below what was chained) is
    /// recognised.
    pub seq: u64,
    /// On a `call` record (and only there): the `seq` its `invoked`
    /// record had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_seq: Option<u64>,
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub jti: Option<String>,
    /// The agent's address as the proxy saw it (protocol 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// A delegated token's earlier agents, root first (protocol 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The token was a break-glass task's (its `breakglass` claim): the
    /// broker flags the record and announces the use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breakglass: bool,
    /// On a denied call whose refusal is evidence that the token left its
    /// holder or outlived its task (protocol 4): the broker records
    /// `token.misuse` and acts on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misuse: Option<Misuse>,
    /// Absent on a call to `/{tool}/…` (protocol 5).
    #[serde(default, skip_serializing_if = "Mode::is_inject")]
    pub mode: Mode,
    pub method: String,
    /// Without the query (which may carry data, or an injected secret).
    pub path: String,
    /// The answer's status; none yet on an allowed call's `invoked` record.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Bytes sent to the agent: the answer's body, or what a tunnel
    /// carried from the upstream.
    pub bytes: u64,
    /// What an egress tunnel carried from the agent (protocol 5); only on
    /// an egress record's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    /// `allow` or `deny`.
    pub decision: Cow<'static, str>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl ToolCall {
    /// Every field a record may carry (its JSON keys), so a proxy can read
    /// back a record a newer proxy spooled before a downgrade: it drops the
    /// fields it does not know rather than the record. Pinned against the
    /// type by a test.
    pub const FIELDS: &'static [&'static str] = &[
        "id",
        "stage",
        "seq",
        "opened_seq",
        "at",
        "agent",
        "task",
        "tool",
        "action",
        "jti",
        "client",
        "chain",
        "misuse",
        "mode",
        "method",
        "path",
        "status",
        "latency_ms",
        "bytes",
        "bytes_up",
        "decision",
        "reasons",
    ];
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl ToolCall {
    /// Cut the free-text fields to the broker's limits (at a character
    /// boundary), so that one odd request can never make a batch
    /// unacceptable.
    pub fn fit(&mut self) {
        cut(&mut self.path, MAX_PATH);
        cut(&mut self.method, MAX_METHOD);
        for f in [
            &mut self.agent,
            &mut self.task,
            &mut self.tool,
            &mut self.action,
            &mut self.jti,
        ]
        .into_iter()
        .flatten()
        {
            cut(f, MAX_FIELD);
        }
        self.chain.truncate(MAX_CHAIN);
        for a in &mut self.chain {
            cut(a, MAX_FIELD);
        }
        if let Some(m) = &mut self.misuse {
            for f in [&mut m.bound_jkt, &mut m.presented_jkt, &mut m.proof_jti]
                .into_iter()
                .flatten()
            {
                cut(f, MAX_FIELD);
            }
        }
        self.reasons.truncate(MAX_REASONS);
        for r in &mut self.reasons {
            cut(r, MAX_REASON);
        }
    }
}

/// What a proxy sends: records in spool order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The sending spool's id (stable across the proxy's restarts).
    pub source: String,
    pub events: Vec<ToolCall>,
}

/// The broker's answer to a batch: records chained now, and records
/// skipped as already chained (a resend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: u64,
    pub duplicates: u64,
}
