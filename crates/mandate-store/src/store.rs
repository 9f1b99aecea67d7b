//! The one implementation of [`Store`]: each method is one write (a job
//! for the backend's writer, with its audit events) or one read, done by
//! the room that holds its rows.

use crate::backend::Backend;
use crate::{
    AgentRevoked, ApprovalFilter, DecidedApproval, Ingested, Invocation, LeaseFilter, Resolved,
    SealedValue, Store, StoreError, StoredWebhook, TaskFilter, TaskMoved, Usage, admin_tokens,
    agents, approvals, events, feed, grants, ingest, leases, owners, rescope, secrets, tasks,
    tools, usage, webhooks,
};
use async_trait::async_trait;
use mandate_audit::{Event, NewEvent, Webhook, WebhookProgress};
use mandate_core::{
    AdminToken, Agent, AgentName, Approval, ApprovalId, Approver, Binding, Grant, Lease, LeaseId,
    Owner, Revocation, RevocationKind, Secret, SecretClass, SecretName, Task, TaskId, TaskState,
    Tool, ToolName, UnixTime, Verdict, WebhookId,
};

#[async_trait]
impl<B: Backend> Store for B {
    async fn create_owner(&self, owner: Owner, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| owners::create(w, &owner, ev)).await
    }

    async fn list_owners(&self) -> Result<Vec<Owner>, StoreError> {
        self.read(owners::list).await
    }

    async fn create_agent(&self, agent: Agent, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| agents::create(w, &agent, ev)).await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        let name = name.to_string();
        self.read(move |db| agents::get(db, &name)).await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.read(agents::list).await
    }

    async fn revoke_agent(
        &self,
        name: &AgentName,
        now: UnixTime,
        feed_expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<AgentRevoked, StoreError> {
        let name = name.clone();
        self.write(move |w| agents::revoke(w, &name, now, feed_expires_at, ev))
            .await
    }

    async fn add_binding(&self, binding: Binding, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| agents::add_binding(w, &binding, ev))
            .await
    }

    async fn bindings_for(&self, issuer: &str, subject: &str) -> Result<Vec<Binding>, StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.read(move |db| agents::bindings_for(db, &issuer, &subject))
            .await
    }

    async fn list_bindings(&self, agent: &AgentName) -> Result<Vec<Binding>, StoreError> {
        let agent = agent.to_string();
        self.read(move |db| agents::bindings_of(db, &agent)).await
    }

    async fn create_join_token(
        &self,
        hash: String,
        agent: &AgentName,
        expires_at: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        let agent = agent.to_string();
        self.write(move |w| agents::create_join_token(w, &hash, &agent, expires_at, ev))
            .await
    }

    async fn enroll_agent_key(
        &self,
        join_token_hash: String,
        key: serde_json::Value,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Agent, StoreError> {
        self.write(move |w| agents::enroll_key(w, &join_token_hash, key, now, ev))
            .await
    }

    async fn record_login(
        &self,
        assertion: Option<(String, UnixTime)>,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |w| {
            let assertion = assertion.as_ref().map(|(jti, exp)| (jti.as_str(), *exp));
            agents::record_login(w, assertion, ev)
        })
        .await
    }

    async fn create_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| tools::create(w, &tool, ev)).await
    }

    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>, StoreError> {
        let name = name.to_string();
        self.read(move |db| tools::get(db, &name)).await
    }

    async fn update_tool(&self, tool: Tool, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| tools::update(w, &tool, ev)).await
    }

    async fn list_tools(&self) -> Result<Vec<Tool>, StoreError> {
        self.read(tools::list).await
    }

    async fn create_task(&self, task: Task, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| tasks::create(w, &task, ev)).await
    }

    async fn create_held_task(
        &self,
        task: Task,
        ev: NewEvent,
        approval: Approval,
        approval_ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |w| approvals::create_held_task(w, &task, ev, &approval, approval_ev))
            .await
    }

    async fn resolve_approval(
        &self,
        candidate: Approval,
        ev: NewEvent,
        now: UnixTime,
    ) -> Result<Resolved, StoreError> {
        self.write(move |w| approvals::resolve(w, candidate, ev, now))
            .await
    }

    async fn decide_approval(
        &self,
        id: &ApprovalId,
        verdict: Verdict,
        approver: Approver,
        note: Option<String>,
        now: UnixTime,
        max_secs: u32,
        ev: NewEvent,
    ) -> Result<DecidedApproval, StoreError> {
        let id = id.to_string();
        self.write(move |w| approvals::decide(w, &id, verdict, &approver, note, now, max_secs, ev))
            .await
    }

    async fn suspend_for_review(
        &self,
        approval: Approval,
        suspend_ev: NewEvent,
        approval_ev: NewEvent,
        now: UnixTime,
    ) -> Result<TaskMoved, StoreError> {
        self.write(move |w| {
            approvals::suspend_for_review(w, &approval, suspend_ev, approval_ev, now)
        })
        .await
    }

    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let id = id.to_string();
        self.read(move |db| approvals::get(db, &id)).await
    }

    async fn list_approvals(&self, filter: ApprovalFilter) -> Result<Vec<Approval>, StoreError> {
        self.read(move |db| approvals::list(db, &filter)).await
    }

    async fn delegate_task(
        &self,
        task: Task,
        now: UnixTime,
        ev: NewEvent,
        first: Option<(Grant, NewEvent)>,
    ) -> Result<(), StoreError> {
        self.write(move |w| {
            tasks::delegate(w, &task, now, ev)?;
            match first {
                Some((grant, ev)) => grants::mint(w, &grant, ev),
                None => Ok(()),
            }
        })
        .await
    }

    async fn task_subtree(&self, id: &TaskId) -> Result<Vec<Task>, StoreError> {
        let id = id.to_string();
        self.read(move |db| tasks::subtree(db, &id)).await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let id = id.to_string();
        self.read(move |db| tasks::get(db, &id)).await
    }

    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |db| tasks::list(db, &filter)).await
    }

    async fn transition_task(
        &self,
        id: &TaskId,
        to: TaskState,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<TaskMoved, StoreError> {
        let id = id.to_string();
        self.write(move |w| tasks::transition_by_id(w, &id, to, now, ev))
            .await
    }

    async fn rescope_task(
        &self,
        next: Task,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<TaskMoved, StoreError> {
        self.write(move |w| rescope::rescope(w, &next, now, ev))
            .await
    }

    async fn expire_due_tasks(&self, now: UnixTime) -> Result<Vec<TaskMoved>, StoreError> {
        self.write(move |w| tasks::expire_due(w, now)).await
    }

    async fn insert_grant(&self, grant: Grant, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| grants::mint(w, &grant, ev)).await
    }

    async fn get_grant(&self, jti: &str) -> Result<Option<Grant>, StoreError> {
        let jti = jti.to_owned();
        self.read(move |db| grants::get(db, &jti)).await
    }

    async fn revoke_by_id(
        &self,
        kind: RevocationKind,
        id: &str,
        expires_at: UnixTime,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Revocation, StoreError> {
        let id = id.to_owned();
        self.write(move |w| feed::revoke_by_id(w, kind, &id, expires_at, now, ev))
            .await
    }

    async fn revocations_since(
        &self,
        seq: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.read(move |db| feed::since(db, seq, now, limit)).await
    }

    async fn create_admin_token(&self, token: AdminToken, ev: NewEvent) -> Result<(), StoreError> {
        self.write(move |w| admin_tokens::create(w, &token, ev))
            .await
    }

    async fn admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminToken>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |db| admin_tokens::by_hash(db, &hash)).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.read(admin_tokens::list).await
    }

    async fn revoke_admin_token(
        &self,
        id: &str,
        at: UnixTime,
        ev: NewEvent,
    ) -> Result<AdminToken, StoreError> {
        let id = id.to_owned();
        self.write(move |w| admin_tokens::revoke(w, &id, at, ev))
            .await
    }

    async fn count_admin_tokens(&self) -> Result<u64, StoreError> {
        self.read(admin_tokens::count).await
    }

    async fn data_key(
        &self,
        wrapped: Vec<u8>,
        now: UnixTime,
    ) -> Result<(i64, Vec<u8>), StoreError> {
        self.write(move |w| secrets::data_key(w, wrapped, now))
            .await
    }

    async fn put_secret(
        &self,
        secret: Secret,
        value: SealedValue,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |w| secrets::put(w, &secret, &value, ev))
            .await
    }

    async fn rotate_secret(
        &self,
        name: &SecretName,
        expected_version: u32,
        class: Option<SecretClass>,
        value: SealedValue,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<Secret, StoreError> {
        let name = name.clone();
        self.write(move |w| secrets::rotate(w, &name, expected_version, class, &value, now, ev))
            .await
    }

    async fn delete_secret(&self, name: &SecretName, ev: NewEvent) -> Result<Secret, StoreError> {
        let name = name.clone();
        self.write(move |w| secrets::delete(w, &name, ev)).await
    }

    async fn get_secret(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        let name = name.clone();
        self.read(move |db| secrets::by_name(db, &name)).await
    }

    async fn secret_for_tool(
        &self,
        tool: &ToolName,
    ) -> Result<Option<(Secret, SealedValue)>, StoreError> {
        let tool = tool.clone();
        self.read(move |db| secrets::for_tool(db, &tool)).await
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError> {
        self.read(secrets::list).await
    }

    async fn record_secret_use(
        &self,
        name: &SecretName,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        self.write(move |w| secrets::record_use(w, &name, now, ev))
            .await
    }

    async fn ingest_invocations(
        &self,
        source: String,
        batch: Vec<Invocation>,
        now: UnixTime,
    ) -> Result<Ingested, StoreError> {
        self.write(move |w| ingest::invocations(w, &source, batch, now))
            .await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        self.write(move |w| events::append(w, events)).await
    }

    async fn anomalies(
        &self,
        task: Option<TaskId>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |db| events::anomalies(db, task.as_ref().map(TaskId::as_str), before, limit))
            .await
    }

    async fn events_since(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(move |db| events::since(db, after, limit)).await
    }

    async fn last_event(&self) -> Result<Option<Event>, StoreError> {
        self.read(events::last).await
    }

    async fn usage_since(&self, since_ms: i64) -> Result<Usage, StoreError> {
        self.read(move |db| usage::since(db, since_ms)).await
    }

    async fn create_lease(
        &self,
        lease: Lease,
        now: UnixTime,
        evs: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        self.write(move |w| leases::create(w, &lease, now, evs))
            .await
    }

    async fn update_lease(&self, lease: Lease, ev: Option<NewEvent>) -> Result<(), StoreError> {
        self.write(move |w| leases::update(w, &lease, ev)).await
    }

    async fn due_leases(&self, now: UnixTime, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.read(move |db| leases::due(db, now, limit)).await
    }

    async fn list_leases(&self, filter: LeaseFilter) -> Result<Vec<Lease>, StoreError> {
        self.read(move |db| leases::list(db, &filter)).await
    }

    async fn get_lease(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        let id = id.clone();
        self.read(move |db| leases::get(db, id.as_str())).await
    }

    async fn count_failed_leases(&self) -> Result<u64, StoreError> {
        self.read(leases::count_failed).await
    }

    async fn open_leases(&self, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.read(move |db| leases::open(db, limit)).await
    }

    async fn acknowledged_anomalies(&self) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        self.read(usage::acknowledged).await
    }

    async fn live_grants(&self, now: UnixTime, limit: usize) -> Result<Vec<Grant>, StoreError> {
        self.read(move |db| usage::live_grants(db, now, limit))
            .await
    }

    async fn notice_secret(
        &self,
        secret: SecretName,
        kind: &'static str,
        marker: i64,
        now: UnixTime,
        ev: NewEvent,
    ) -> Result<bool, StoreError> {
        self.write(move |w| usage::notice(w, secret.as_str(), kind, marker, now, ev))
            .await
    }

    fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head()
    }

    async fn create_webhook(
        &self,
        hook: Webhook,
        secret: SealedValue,
        after: u64,
        ev: NewEvent,
    ) -> Result<(), StoreError> {
        self.write(move |w| webhooks::create(w, &hook, &secret, after, ev))
            .await
    }

    async fn get_webhook(&self, id: &WebhookId) -> Result<Option<StoredWebhook>, StoreError> {
        let id = id.clone();
        self.read(move |db| webhooks::get(db, &id)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<StoredWebhook>, StoreError> {
        self.read(webhooks::list).await
    }

    async fn delete_webhook(&self, id: &WebhookId, ev: NewEvent) -> Result<Webhook, StoreError> {
        let id = id.clone();
        self.write(move |w| webhooks::delete(w, &id, ev)).await
    }

    async fn save_webhook_progress(
        &self,
        id: &WebhookId,
        progress: WebhookProgress,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(move |w| webhooks::save_progress(w, &id, &progress))
            .await
    }

    async fn prune(&self, now: UnixTime) -> Result<(), StoreError> {
        self.write(move |w| {
            agents::forget_expired(w, now)?;
            feed::forget_expired(w, now)
        })
        .await
    }

    fn close(&self) {
        self.shut()
    }
}
