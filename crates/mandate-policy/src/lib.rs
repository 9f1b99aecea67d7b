//! Mandate's policy engine: Cedar, with a schema and default policies shipped
//! in this crate's `policies/` directory, policy files validated against the
//! schema (strict mode) when loaded, and decisions for Mandate's three Cedar
//! actions: `invoke` (every request an agent makes with a grant),
//! `start_task` (an agent asking for a task on a tool) and `require_approval`
//! (does that task wait for a person).
//!
//! Decisions are pure functions of the request facts and the loaded set, and
//! fail closed: an evaluation error denies. The only I/O is
//! [`PolicySet::load_dir`]. Which agent, tool and task the facts describe is
//! the caller's business (the server reads them from its store).

#![forbid(unsafe_code)]

mod authorize;
mod decide;
mod error;
mod facts;
mod load;
mod probe;
mod recent;
mod refusal;

pub use authorize::{
    Allowed, Asked, DpopProof, Holder, Judge, Live, NBF_LEEWAY_SECS, Operation, Pending,
    Presentation, Refused, Settled, Subject, authorize_request, check_claims, check_token, settle,
};
pub use error::{PolicyError, Problem};
pub use facts::{
    AgentFacts, ApprovalNeed, ContinueRequest, Decision, Hold, HoldRequest, HoldStage,
    InvokeRequest, RequestFacts, RevealRequest, TaskDecision, TaskFacts, TaskStartRequest,
    ToolFacts,
};
pub use recent::RecentDecisions;
pub use refusal::{Refusal, Stage};

use cedar_policy::{Authorizer, EntityTypeName, EntityUid, PolicyId};
use std::collections::HashMap;
use std::sync::Arc;

/// The Cedar schema Mandate's requests follow (`policies/schema.cedarschema`).
pub const DEFAULT_SCHEMA: &str = include_str!("../policies/schema.cedarschema");
/// The policies a fresh data dir starts with (`policies/default.cedar`).
pub const DEFAULT_POLICIES: &str = include_str!("../policies/default.cedar");

/// The Cedar actions Mandate evaluates; the discriminant indexes
/// [`Loaded::slices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MandateAction {
    Invoke = 0,
    StartTask = 1,
    RequireApproval = 2,
    RevealSecret = 3,
    ContinueTask = 4,
}

impl MandateAction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MandateAction::Invoke => "invoke",
            MandateAction::StartTask => "start_task",
            MandateAction::RequireApproval => "require_approval",
            MandateAction::RevealSecret => "reveal_secret",
            MandateAction::ContinueTask => "continue_task",
        }
    }
}

/// The policies that can apply to one action, and that action's uid, both
/// built at load so a decision neither parses nor scans other actions'
/// policies.
pub(crate) struct Slice {
    pub action: EntityUid,
    /// Policies that may apply to any tool.
    pub general: cedar_policy::PolicySet,
    /// For each tool some policy names (`resource == Mandate::Tool::"x"`):
    /// the general policies plus those naming it.
    pub by_tool: HashMap<String, cedar_policy::PolicySet>,
}

impl Slice {
    pub(crate) fn for_tool(&self, tool: &str) -> &cedar_policy::PolicySet {
        self.by_tool.get(tool).unwrap_or(&self.general)
    }
}

pub(crate) struct Loaded {
    /// Indexed by `MandateAction as usize`.
    pub slices: [Slice; 5],
    /// `"<id>: <@reason>"` by policy id, ready to copy into a decision.
    pub reasons: HashMap<PolicyId, String>,
    /// Policy ids in load order (file name, then position in the file).
    pub ids: Vec<String>,
    pub agent_type: EntityTypeName,
    pub tool_type: EntityTypeName,
    pub authorizer: Authorizer,
    pub sources: PolicySources,
    /// Cedar entities for an agent and a tool, by their full attribute
    /// content: built once, not on every decision.
    pub parties: decide::PartiesCache,
}

/// The text the set was built from, so others (a proxy) can build the
/// very same set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicySources {
    pub schema: String,
    /// `(file name, text)` in load order.
    pub files: Vec<(String, String)>,
}

/// A validated, immutable policy set.
///
/// Cloning is cheap (an `Arc` inside), so callers can hand copies to request
/// handlers and swap in a new set on reload without locking decisions.
#[derive(Clone)]
pub struct PolicySet(pub(crate) Arc<Loaded>);

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PolicySet").field(&self.0.ids).finish()
    }
}

impl PolicySet {
    /// The shipped schema and default policies.
    pub fn defaults() -> Self {
        Self::from_sources(
            DEFAULT_SCHEMA,
            &[("default.cedar".into(), DEFAULT_POLICIES.into())],
        )
        .expect("shipped default policies validate (pinned by tests)")
    }

    pub fn policy_count(&self) -> usize {
        self.0.ids.len()
    }

    /// Policy ids (their `@id`) in load order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.0.ids.clone()
    }

    /// What the set was built from.
    pub fn sources(&self) -> &PolicySources {
        &self.0.sources
    }

    pub(crate) fn slice(&self, action: MandateAction) -> &Slice {
        &self.0.slices[action as usize]
    }
}
