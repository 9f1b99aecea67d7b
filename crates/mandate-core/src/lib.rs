//! Mandate's domain: its nouns (Owner, Agent, Tool, Task, Grant)
//! and the rules between them (scope narrowing, TTL capping, task state
//! machine). Pure values and functions: no I/O, no async, no clocks — callers
//! pass `now` in, so every rule is testable in isolation.

#![forbid(unsafe_code)]

#[macro_use]
mod macros;

mod admin;
mod agent;
mod anomaly;
mod approval;
mod authentication;
mod breakglass;
mod delegation;
mod delivery;
mod egress;
mod engine_spec;
mod error;
mod grant;
mod ids;
mod lease;
mod misuse;
mod model;
mod owner;
mod rescope;
mod rotation;
mod route;
mod scope;
mod secret;
mod task;
mod tool;

pub use admin::{AdminRight, AdminToken};
pub use authentication::{AuthFacts, AuthStrength};

pub use agent::{Agent, AgentState, NewAgent};
pub use anomaly::{AnomalyAction, AnomalyRule};
pub use approval::{
    Approval, ApprovalError, ApprovalState, Approver, Decided, Extent, Held, Standing, Verdict,
};
pub use breakglass::{BreakGlass, duration as breakglass_duration, justification};
pub use delegation::{ChildRequest, Delegation, Link, MAX_DELEGATION_DEPTH, delegate};
pub use delivery::{Delivery, DeliveryMode, Injection, check_upstream};
pub use egress::{EgressHost, Host, MAX_EGRESS_HOSTS, Target, host_name_problem};
pub use engine_spec::{DbRole, EngineSpec};
pub use error::{Invalid, RuleViolation};
pub use grant::{Binding, Grant, Revocation, RevocationKind};
pub use ids::{
    AgentName, ApprovalId, Jti, LeaseId, OwnerName, RandomId, SecretName, SpiffeId, TaskId,
    ToolName, TrustDomain, WebhookId,
};
pub use lease::{Lease, LeaseState, lease_backoff, role_name};
pub use misuse::{Misuse, MisuseCheck, OnMisuse};
pub use model::Model;
pub use owner::{Owner, OwnerKind};
pub use rescope::{RescopeRequest, Rescoped, child_fits, grant_fits, rescope};
pub use rotation::{ClassPolicy, RotationPolicy, RotationStatus};
pub use route::{RouteRule, RoutedRequest, route};
pub use scope::{Action, ResourcePattern, Scope, ScopeItem};
pub use secret::{NewSecret, Secret, SecretClass};
pub use task::{Task, TaskState, cap_grant_ttl, intent};
pub use tool::{Environment, NewTool, Sensitivity, Tool};

/// Seconds since the Unix epoch. All domain times use this unit.
pub type UnixTime = i64;
