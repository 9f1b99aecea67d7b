//! In-memory views of agents, tools, tasks and revoked tokens, kept current
//! by write-through on every change this process makes. With SQLite this
//! process is the only writer, so the views are exact; they spare the hot
//! paths (token exchange, authorize) a database read per request.

use mandate_core::{
    AdminToken, Agent, AgentName, RevocationKind, RuleViolation, Scope, Task, TaskId, Tool,
    ToolName, UnixTime,
};
use mandate_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Revocations read per store call when loading at start.
const LOAD_PAGE: u32 = 1000;

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct Directory {
    agents: RwLock<HashMap<AgentName, Arc<Agent>>>,
    tools: RwLock<HashMap<ToolName, Arc<Tool>>>,
    audiences: RwLock<HashMap<String, Arc<Tool>>>,
    tasks: RwLock<HashMap<TaskId, Arc<Task>>>,
    /// Revoked token ids with the time they would expire anyway.
    revoked_tokens: RwLock<HashMap<String, UnixTime>>,
    revoked_keys: RwLock<HashMap<String, UnixTime>>,
    /// Live admin tokens by hash, so authenticating one is not a database
    /// read. Emptied on every revocation; expiry is checked on each use.
    admin_tokens: RwLock<AdminTokens>,
}

/// The cache plus a generation bumped by every revocation, so a lookup
/// that read the store before a revocation cannot cache what it read after.
#[derive(Default)]
struct AdminTokens {
    by_hash: HashMap<String, Arc<AdminToken>>,
    generation: u64,
}

impl Directory {
    /// The views, and the signing keys the feed says were withdrawn (the
    /// caller makes sure they are gone from the key ring: a crash may
    /// have come between the feed entry and the withdrawal).
    pub async fn load(store: &dyn Store, now: UnixTime) -> Result<(Self, Vec<String>), StoreError> {
        let d = Directory::default();
        let mut withdrawn_keys = Vec::new();
        for a in store.list_agents().await? {
            d.put_agent(a);
        }
        for t in store.list_tools().await? {
            d.put_tool(t);
        }
        let mut since = 0;
        loop {
            let page = store.revocations_since(since, now, LOAD_PAGE).await?;
            let Some(last) = page.last() else { break };
            since = last.seq;
            let short = page.len() < LOAD_PAGE as usize;
            for r in page {
                match r.kind {
                    RevocationKind::Token => d.revoke_token(r.id, r.expires_at),
                    RevocationKind::Key => {
                        d.revoke_key(r.id.clone(), r.expires_at);
                        withdrawn_keys.push(r.id)
                    }
                    // Task and agent state live in their own rows.
                    RevocationKind::Task | RevocationKind::Agent => {}
                }
            }
            if short {
                break;
            }
        }
        Ok((d, withdrawn_keys))
    }

    /// The cached token for `hash`, or the generation to pass to
    /// [`Directory::put_admin_token`] after reading the store.
    pub fn admin_token(&self, hash: &str) -> Result<Arc<AdminToken>, u64> {
        let c = read(&self.admin_tokens);
        c.by_hash.get(hash).cloned().ok_or(c.generation)
    }
    /// Cache `t`, read from the store during `generation`, unless a
    /// revocation happened since.
    pub fn put_admin_token(&self, t: Arc<AdminToken>, generation: u64) {
        let mut c = write(&self.admin_tokens);
        if c.generation != generation {
            return;
        }
        if c.by_hash.len() >= 10_000 {
            c.by_hash.clear(); // bounded; a miss is one read
        }
        c.by_hash.insert(t.hash.clone(), t);
    }
    /// Call after a revocation is committed.
    pub fn forget_admin_tokens(&self) {
        let mut c = write(&self.admin_tokens);
        c.by_hash.clear();
        c.generation += 1;
    }

    pub fn agent(&self, name: &AgentName) -> Option<Arc<Agent>> {
        read(&self.agents).get(name).cloned()
    }
    pub fn put_agent(&self, a: Agent) {
        write(&self.agents).insert(a.name.clone(), Arc::new(a));
    }
    pub fn tool(&self, name: &ToolName) -> Option<Arc<Tool>> {
        read(&self.tools).get(name).cloned()
    }
    pub fn tool_by_audience(&self, aud: &str) -> Option<Arc<Tool>> {
        read(&self.audiences).get(aud).cloned()
    }
    /// The registered tools a scope names (an unknown one is left out:
    /// the scope's own check names it).
    pub fn tools_of(&self, scope: &Scope) -> Vec<Arc<Tool>> {
        scope
            .items()
            .iter()
            .filter_map(|i| self.tool(&i.tool))
            .collect()
    }
    /// A new task's scope against the registered tools: the agent's own
    /// tools, their actions, one environment (`Scope::check_against`).
    pub fn check_scope(&self, scope: &Scope, agent: &Agent) -> Result<(), RuleViolation> {
        let tools = self.tools_of(scope);
        scope.check_against(agent, |name| {
            tools.iter().find(|t| &t.name == name).map(Arc::as_ref)
        })
    }
    pub fn put_tool(&self, t: Tool) {
        let t = Arc::new(t);
        write(&self.audiences).insert(t.audience.clone(), t.clone());
        write(&self.tools).insert(t.name.clone(), t);
    }

    /// A task from the view, loading it from the store on a miss.
    pub async fn task(
        &self,
        store: &dyn Store,
        id: &TaskId,
    ) -> Result<Option<Arc<Task>>, StoreError> {
        if let Some(t) = read(&self.tasks).get(id).cloned() {
            return Ok(Some(t));
        }
        Ok(store.get_task(id).await?.map(|t| self.put_task(t)))
    }
    /// Drop a task whose row changed in the store (a cascade ended it): the
    /// next lookup reads it again.
    pub fn forget_task(&self, id: &TaskId) {
        write(&self.tasks).remove(id);
    }
    pub fn put_task(&self, t: Task) -> Arc<Task> {
        let t = Arc::new(t);
        write(&self.tasks).insert(t.id.clone(), t.clone());
        t
    }

    pub fn revoke_token(&self, jti: String, expires_at: UnixTime) {
        write(&self.revoked_tokens).insert(jti, expires_at);
    }
    pub fn is_token_revoked(&self, jti: &str) -> bool {
        read(&self.revoked_tokens).contains_key(jti)
    }

    /// A withdrawn signing key, kept until every token it signed expired,
    /// so such a token is refused as revoked rather than as unknown.
    pub fn revoke_key(&self, kid: String, expires_at: UnixTime) {
        write(&self.revoked_keys).insert(kid, expires_at);
    }
    pub fn is_key_revoked(&self, kid: &str) -> bool {
        read(&self.revoked_keys).contains_key(kid)
    }

    /// Drop what can no longer matter: tasks past their deadline (reloaded
    /// from the store if asked for again) and revocations of expired tokens.
    pub fn forget_expired(&self, now: UnixTime) {
        write(&self.tasks).retain(|_, t| t.deadline > now);
        write(&self.revoked_tokens).retain(|_, exp| *exp > now);
        write(&self.revoked_keys).retain(|_, exp| *exp > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> Arc<AdminToken> {
        Arc::new(AdminToken {
            id: id.into(),
            hash: format!("h-{id}"),
            rights: vec![],
            description: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            agent: None,
        })
    }

    /// A lookup that read the store before a revocation must not cache what
    /// it read once the revocation has cleared the cache.
    #[test]
    fn a_revocation_wins_over_a_lookup_in_flight() {
        let d = Directory::default();
        let generation = d.admin_token("h-a").unwrap_err();
        d.forget_admin_tokens(); // revocation commits meanwhile
        d.put_admin_token(token("a"), generation);
        assert!(d.admin_token("h-a").is_err(), "stale token cached");
        let generation = d.admin_token("h-b").unwrap_err();
        d.put_admin_token(token("b"), generation);
        assert_eq!(d.admin_token("h-b").unwrap().id, "b");
        d.forget_admin_tokens();
        assert!(d.admin_token("h-b").is_err());
    }
}
