//! Storage for Mandate behind one [`Store`] trait.
//!
//! Every write method takes the audit event that describes it and commits
//! both in one transaction, so no change is visible without its record and
//! no record exists for a change that did not happen. The SQLite backend
//! ([`SqliteStore`]) funnels writes through one thread that commits them in
//! groups (one fsync for many requests); reads use a small connection pool.
//! [`PostgresStore`] is the same design against a PostgreSQL server. The
//! trait speaks domain types only, so callers never know which one they have.
//!
//! What the store does is written once: `store.rs` implements [`Store`] for
//! any backend, by way of one room per noun (`owners`, `agents`, `tools`,
//! `tasks`, `grants`, `approvals`, `feed`, `secrets`, `ingest`,
//! `events`, `admin_tokens`, `webhooks`, `usage`) whose SQL runs on both dialects through one small
//! interface (`sql`). A backend (`sqlite/`, `postgres/`) brings only its
//! connections, its writer thread, its migrations and its dialect's
//! conversions. `tests/contract/` holds both backends to the same behaviour.

#![forbid(unsafe_code)]

mod admin_tokens;
mod agents;
mod approvals;
mod backend;
mod error;
mod events;
mod feed;
mod grants;
mod ingest;
mod leases;
mod owners;
mod pool;
mod postgres;
mod rescope;
mod rules;
mod schema;
mod secrets;
mod sql;
mod sqlite;
mod store;
mod tasks;
mod tools;
mod usage;
mod webhooks;

pub use crate::postgres::{PostgresAuditReader, PostgresStore, PostgresTls};
pub use error::StoreError;
pub use leases::LeaseFilter;
pub use sqlite::{SqliteStore, read_events};
pub use usage::Usage;

use async_trait::async_trait;
use mandate_audit::{Event, NewEvent, Webhook, WebhookProgress};
use mandate_core::{
    AdminToken, Agent, AgentName, Approval, ApprovalId, ApprovalState, Approver, Binding, Grant,
    Lease, LeaseId, Owner, Revocation, RevocationKind, Secret, SecretClass, SecretName, Task,
    TaskId, TaskState, Tool, ToolName, UnixTime, Verdict, WebhookId,
};

/// A webhook endpoint as stored: the endpoint, its signing secret (sealed
/// like an upstream secret) and how far delivery to it has got.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWebhook {
    pub webhook: Webhook,
    pub secret: SealedValue,
    pub progress: WebhookProgress,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub agent: Option<AgentName>,
    pub state: Option<TaskState>,
    /// Only break-glass tasks.
    pub breakglass: bool,
    pub limit: usize,
}

/// Which approval requests to list.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    /// As of `now` (a pending request past its validity is `expired`).
    pub state: Option<ApprovalState>,
    pub task: Option<TaskId>,
    pub now: UnixTime,
    pub limit: usize,
}

/// What stands for a held thing once the store has looked.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A granted approval covers it (a `once` one is now used).
    Allowed(Approval),
    /// Waiting for a person; `opened` when this call opened the request.
    Waiting { approval: Approval, opened: bool },
    /// A person denied exactly this; final.
    Denied(Approval),
}

/// A recorded verdict: the approval, its task as it now is, and for a
/// denied task start what revoking it wrote.
#[derive(Debug, Clone)]
pub struct DecidedApproval {
    pub approval: Approval,
    pub task: Task,
    pub moved: Option<TaskMoved>,
}

/// A secret's value as stored: sealed under the data key `data_key`.
/// Opaque to the store; only the server holds the keys to open it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub data_key: i64,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedValue(data_key={}, {} bytes)",
            self.data_key,
            self.bytes.len()
        )
    }
}

/// A tool call a proxy reports: its place in the sender's log (strictly
/// increasing per source, across restarts) and the event.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub seq: u64,
    /// Set when one record carries a whole call (its `invoked` and
    /// `completed` records merged): where the `invoked` record was. If
    /// that much was already chained (a batch resent with other
    /// boundaries), only the outcome is new, and it is chained as
    /// `tool.completed`.
    pub opened: Option<u64>,
    pub event: NewEvent,
    /// Events chained right after it (and, like it, once): the
    /// `token.misuse` it gave evidence for, the `breakglass.used` it was.
    pub also: Vec<NewEvent>,
}

/// What a batch of proxy records did.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// Records chained now.
    pub accepted: usize,
    /// Records skipped as already chained.
    pub duplicates: usize,
    /// The `token.misuse` events chained now, for the broker to act on.
    pub misuse: Vec<NewEvent>,
}

/// A task after a state change, the live tasks delegated below it that the
/// change revoked (their ids, oldest first: read them again for their
/// rows), and the feed entries written.
#[derive(Debug, Clone)]
pub struct TaskMoved {
    pub task: Task,
    pub subtree: Vec<TaskId>,
    pub revocations: Vec<Revocation>,
}

/// What revoking an agent took down with it: its own live tasks, and the
/// ids of the tasks delegated below them.
#[derive(Debug, Clone)]
pub struct AgentRevoked {
    pub agent: Agent,
    pub tasks: Vec<Task>,
    pub below: Vec<TaskId>,
    pub revocations: Vec<Revocation>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_owner(&self, owner: Owner, ev: NewEvent) -> Result<(), StoreError>;
    /// By name, in byte order (as are agents, tools and secrets).
    async fn list_owners(&self) -> Result<Vec<Owner>, StoreError>;

    async fn create_agent(&self, agent: Agent, ev: NewEvent) -> Result<(), StoreError>;
    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError>;
    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError>;
    /// Revoke the agent and every task of it that is not yet terminal,
    /// oldest first (`created_at`, then id), each with its delegated
    /// subtree; one feed entry for the agent (expiring at
    /// `feed_expires_at`), then one per task in that order. The audit chain
    /// gets one `task.revoked` per task, then `ev`. `tasks` holds every
    /// task changed, subtrees included.
    async fn revoke_agent(
        &self,
        name: &AgentName,
        now: UnixTime,
        feed_expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<AgentRevoked, StoreError>;

    async fn add_binding(&self, binding: Binding, ev: NewEvent) -> Result<(), StoreError>;
    async fn bindings_for(&self, issuer: &str, subject: &str) -> Result<Vec<Binding>, StoreError>;
    /// In the order they were added (as is `bindings_for`).
    async fn list_bindings(&self, agent: &AgentName) -> Result<Vec<Binding>, StoreError>;

    /// Store a join token by its hash.
    async fn create_join_token(
        &self,
        hash: String,
        agent: &AgentName,
        expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError>;
    /// Use up a join token (once, before expiry) and set the agent's public key.
    async fn enroll_agent_key(
        &self,
        join_token_hash: String,
        key: serde_json::Value,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Agent, StoreError>;
    /// Record a login. With a client assertion `(jti, exp)`, the jti is
    /// remembered until `exp`; a second use fails with [`StoreError::Replay`].
    async fn record_login(
        &self,
        assertion: Option<(String, UnixTime)>,
        ev: NewEvent,
    ) -> Result<(), StoreError>;

    async fn create_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError>;
    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>, StoreError>;
    /// Replace a tool's stored definition (same name and audience).
    async fn update_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError>;
    async fn list_tools(&self) -> Result<Vec<Tool>, StoreError>;

    async fn create_task(&self, task: Task, ev: NewEvent) -> Result<(), StoreError>;
    /// Create a task held for a person (`pending_approval`) together with
    /// its approval request (which holds the task's scope).
    async fn create_held_task(
        &self,
        task: Task,
        ev: NewEvent,
        approval: Approval,
        approval_ev: NewEvent,
    ) -> Result<(), StoreError>;
    /// What stands for `candidate`'s held thing at `now`: the latest
    /// request for the same thing on the same task while it still speaks
    /// (a granted `once` one is used up by this call, with an
    /// `approval.used` event), else `candidate`, opened with `ev`.
    async fn resolve_approval(
        &self,
        candidate: Approval,
        ev: NewEvent,
        now: UnixTime,
    ) -> Result<Resolved, StoreError>;
    /// Record a person's verdict (the rules are [`Approval::decide`]'s);
    /// `ev` (`approval.granted` or `approval.denied`) gets the outcome as
    /// its detail. A held task starts or is revoked in the same write.
    #[allow(clippy::too_many_arguments)]
    async fn decide_approval(
        &self,
        id: &ApprovalId,
        verdict: Verdict,
        approver: Approver,
        note: Option<String>,
        now: UnixTime,
        max_secs: u32,
        ev: NewEvent,
    ) -> Result<DecidedApproval, StoreError>;
    /// Suspend `approval.task` (live) and open `approval` (`Held::Resume`)
    /// in one write: a person's yes resumes the task, a no revokes it.
    async fn suspend_for_review(
        &self,
        approval: Approval,
        suspend_ev: NewEvent,
        approval_ev: NewEvent,
        now: UnixTime,
    ) -> Result<TaskMoved, StoreError>;
    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;
    /// Newest first; 100 by default, at most 1000.
    async fn list_approvals(&self, filter: ApprovalFilter) -> Result<Vec<Approval>, StoreError>;
    /// Create a delegated task (its `delegation` names the parent), refused
    /// with [`RuleViolation::TaskNotActive`](mandate_core::RuleViolation)
    /// unless the parent is active at `now` as this write reads it; with
    /// `first`, the child's first grant and its event in the same write.
    async fn delegate_task(
        &self,
        task: Task,
        now: UnixTime,
        ev: NewEvent,
        first: Option<(Grant, NewEvent)>,
    ) -> Result<(), StoreError>;
    /// Every task delegated below `id`, at any depth, oldest first.
    async fn task_subtree(&self, id: &TaskId) -> Result<Vec<Task>, StoreError>;
    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError>;
    /// Newest first (`created_at`, then id); 100 by default, at most 1000.
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Apply a state-machine edge in one transaction. Completion and
    /// revocation add a feed entry for the task, expiring at its deadline;
    /// ending or suspending it revokes its live delegated subtree.
    async fn transition_task(
        &self,
        id: &TaskId,
        to: TaskState,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<TaskMoved, StoreError>;
    /// A live task's context switch: store `next` (same task, new scope
    /// and intent) with `ev` if the task is active as the write reads it,
    /// revoking in the same write each unexpired token and each live
    /// delegated child (with its subtree) that the new scope no longer
    /// covers. `subtree`: the tasks revoked.
    async fn rescope_task(
        &self,
        next: Task,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<TaskMoved, StoreError>;
    /// Move every live task whose deadline is at or before `now` to
    /// `expired`, oldest first, each with a `task.expired` event; returns
    /// every task changed (subtrees revoked with them included).
    async fn expire_due_tasks(&self, now: UnixTime) -> Result<Vec<TaskMoved>, StoreError>;

    async fn insert_grant(&self, grant: Grant, ev: NewEvent) -> Result<(), StoreError>;
    async fn get_grant(&self, jti: &str) -> Result<Option<Grant>, StoreError>;
    /// A feed entry (until `expires_at`) and its event for one token (`Token`, by `jti`) or one
    /// signing key (`Key`, by `kid`); tasks and agents have their own methods.
    async fn revoke_by_id(
        &self,
        kind: RevocationKind,
        id: &str,
        expires_at: UnixTime,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Revocation, StoreError>;
    /// Up to `limit` feed entries after `seq` that still matter at `now`,
    /// oldest first; callers page with the last `seq` until a short page.
    async fn revocations_since(
        &self,
        seq: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError>;

    async fn create_admin_token(&self, token: AdminToken, ev: NewEvent) -> Result<(), StoreError>;
    async fn admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminToken>, StoreError>;
    /// Oldest first, then by id; revoked ones included.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError>;
    /// Revoke one admin token at `at`. Refused if it is the last live root
    /// token (nobody could administer the broker any more).
    async fn revoke_admin_token(
        &self,
        id: &str,
        at: UnixTime,
        ev: NewEvent,
    ) -> Result<AdminToken, StoreError>;
    async fn count_admin_tokens(&self) -> Result<u64, StoreError>;

    /// The data key secrets are sealed under: the stored one if there is
    /// one, else `wrapped` (a fresh key sealed by the master key) is stored.
    /// Returns its id and wrapped bytes.
    async fn data_key(&self, wrapped: Vec<u8>, now: UnixTime)
    -> Result<(i64, Vec<u8>), StoreError>;
    /// Store a new secret for a tool that has none (`Conflict` otherwise).
    async fn put_secret(
        &self,
        secret: Secret,
        value: SealedValue,
        ev: NewEvent,
    ) -> Result<(), StoreError>;
    /// Replace the value of a secret at `expected_version` (sealed for
    /// `expected_version + 1`), saying what it is now if `class` is given;
    /// `Conflict` if someone rotated it meanwhile.
    async fn rotate_secret(
        &self,
        name: &SecretName,
        expected_version: u32,
        class: Option<SecretClass>,
        value: SealedValue,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Secret, StoreError>;
    /// Forget a secret (revoked at its provider): its row and sealed
    /// value go; the proxy has nothing to inject for its tool after it.
    async fn delete_secret(&self, name: &SecretName, ev: NewEvent) -> Result<Secret, StoreError>;
    async fn get_secret(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError>;
    async fn secret_for_tool(
        &self,
        tool: &ToolName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError>;
    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError>;
    /// A secret's value is handed out (`reveal`): mark it used and audit
    /// it in one transaction.
    async fn record_secret_use(
        &self,
        name: &SecretName,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError>;
    /// Chain proxy tool-call records from one `source` (a proxy's spool),
    /// skipping those at or below the highest `seq` already chained from it
    /// (resends), and mark the tools' secrets used. `batch` is in `seq`
    /// order. Returns (accepted, duplicates).
    async fn ingest_invocations(
        &self,
        source: String,
        batch: Vec<Invocation>,
        now: UnixTime,
    ) -> Result<Ingested, StoreError>;

    /// Audit events with no other change (decisions, refusals).
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError>;
    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn events_since(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// `anomaly.detected` events, newest first: of `task` if given, with
    /// `seq < before` if given, at most `limit`.
    async fn anomalies(
        &self,
        task: Option<TaskId>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// The chain's head: the event with the highest `seq`, if any.
    async fn last_event(&self) -> Result<Option<Event>, StoreError>;
    /// What the log says about use since `since_ms` (see [`Usage`]).
    async fn usage_since(&self, since_ms: i64) -> Result<Usage, StoreError>;
    /// Record a lease for a live task (refused if the task is not active),
    /// before its credential is made, with its events.
    async fn create_lease(
        &self,
        lease: Lease,
        now: UnixTime,
        evs: Vec<NewEvent>,
    ) -> Result<(), StoreError>;
    /// Store a lease's new state, with its event if any.
    async fn update_lease(&self, lease: Lease, ev: Option<NewEvent>) -> Result<(), StoreError>;
    /// Leases to destroy now (see `leases::due`), at most `limit`.
    async fn due_leases(&self, now: UnixTime, limit: usize) -> Result<Vec<Lease>, StoreError>;
    async fn list_leases(&self, filter: LeaseFilter) -> Result<Vec<Lease>, StoreError>;
    async fn get_lease(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError>;
    /// How many leases' revocation failed and is being retried.
    async fn count_failed_leases(&self) -> Result<u64, StoreError>;
    /// Leases not yet confirmed gone, at most `limit`.
    async fn open_leases(&self, limit: usize) -> Result<Vec<Lease>, StoreError>;
    /// The `seq` of every acknowledged anomaly event.
    async fn acknowledged_anomalies(&self) -> Result<std::collections::BTreeSet<u64>, StoreError>;
    /// Unexpired, unrevoked grants of active tasks, soonest to expire
    /// first, at most `limit`.
    async fn live_grants(&self, now: UnixTime, limit: usize) -> Result<Vec<Grant>, StoreError>;
    /// Raise a secret's rotation notice (`kind`, e.g. overdue for version
    /// 3) with `ev`, once: `false` and nothing written if it was raised.
    async fn notice_secret(
        &self,
        secret: SecretName,
        kind: &'static str,
        marker: i64,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<bool, StoreError>;
    /// The chain's last `seq` (0 while empty), updated after each commit
    /// that appended events: a follower of the chain waits on it rather
    /// than polling.
    fn appended(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Add a webhook endpoint whose delivery starts after event `after`.
    async fn create_webhook(
        &self,
        hook: Webhook,
        secret: SealedValue,
        after: u64,
        ev: NewEvent,
    ) -> Result<(), StoreError>;
    async fn get_webhook(&self, id: &WebhookId) -> Result<Option<StoredWebhook>, StoreError>;
    /// Oldest first, then by id.
    async fn list_webhooks(&self) -> Result<Vec<StoredWebhook>, StoreError>;
    /// Remove an endpoint with its secret and progress (`NotFound` if none).
    async fn delete_webhook(&self, id: &WebhookId, ev: NewEvent) -> Result<Webhook, StoreError>;
    /// Record how far delivery has got (not audited); the cursor never
    /// moves back. `NotFound` once the endpoint is deleted.
    async fn save_webhook_progress(
        &self,
        id: &WebhookId,
        progress: WebhookProgress,
    ) -> Result<(), StoreError>;

    /// Forget what no longer matters: join tokens and assertion ids past
    /// their expiry, feed entries whose tokens have all expired.
    async fn prune(&self, now: UnixTime) -> Result<(), StoreError>;

    /// Finish queued writes and release the database. Blocks; later calls fail with `Closed`.
    fn close(&self);
}
