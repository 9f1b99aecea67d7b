//! What the broker knows, gathered for one report: its registry, its
//! secrets' metadata, the use its audit log shows, and its limits.

use mandate_core::{
    Agent, AgentName, Grant, Lease, Owner, RotationPolicy, Secret, Task, Tool, ToolName, UnixTime,
};
use std::collections::{BTreeMap, BTreeSet};

/// One `anomaly.detected` event nobody acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAnomaly {
    pub seq: u64,
    pub at: UnixTime,
    pub rule: String,
    pub task: Option<String>,
    pub agent: Option<String>,
}

/// A permit that lets any action through on a restricted tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardPermit {
    pub policy: String,
    pub tool: ToolName,
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub now: UnixTime,
    /// The period use is counted over (days).
    pub period_days: u32,
    pub owners: Vec<Owner>,
    pub agents: Vec<Agent>,
    /// Agents a federation binding maps workload JWTs to.
    pub federated: BTreeSet<AgentName>,
    pub tools: Vec<Tool>,
    pub secrets: Vec<Secret>,
    /// Live grants (unexpired, unrevoked, of active tasks).
    pub grants: Vec<Grant>,
    /// Dynamic credentials not yet confirmed gone at their source.
    pub leases: Vec<Lease>,
    /// Each agent's latest audit event, ever (ms).
    pub last_seen_ms: BTreeMap<AgentName, i64>,
    /// Per tool, agents whose calls reached it in the period.
    pub tool_users: BTreeMap<ToolName, BTreeSet<AgentName>>,
    /// Per agent, tokens minted in the period and how many were DPoP-bound.
    pub tokens: BTreeMap<AgentName, (u64, u64)>,
    /// Break-glass tasks opened in the period.
    pub breakglass: Vec<Task>,
    pub open_anomalies: Vec<OpenAnomaly>,
    pub wildcard_permits: Vec<WildcardPermit>,
    pub rotation: RotationPolicy,
    pub task_max_ttl_secs: i64,
    pub max_delegation_depth: u32,
    /// The deepest delegation the operator considers reviewable.
    pub delegation_depth_limit: u32,
}

impl Facts {
    pub fn period_start(&self) -> UnixTime {
        self.now - i64::from(self.period_days) * 86_400
    }
}
