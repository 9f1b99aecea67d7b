//! In-memory views of agents, tools, tasks and revoked tokens, kept current
//! by write-through on every change this process makes. With SQLite this
//! process is the only writer, so the views are exact; they spare the hot
//! paths (token exchange, authorize) a database read per request.

use mandate_core::{Agent, AgentName, Task, TaskId, Tool, ToolName, UnixTime};
use mandate_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
}

impl Directory {
    pub async fn load(store: &dyn Store, now: UnixTime) -> Result<Self, StoreError> {
        let d = Directory::default();
        for a in store.list_agents().await? {
            d.put_agent(a);
        }
        for t in store.list_tools().await? {
            d.put_tool(t);
        }
        for r in store.revocations_since(0, now).await? {
            if r.kind == mandate_core::RevocationKind::Token {
                d.revoke_token(r.id, r.expires_at);
            }
        }
        Ok(d)
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

    /// Drop what can no longer matter: tasks past their deadline (reloaded
    /// from the store if asked for again) and revocations of expired tokens.
    pub fn forget_expired(&self, now: UnixTime) {
        write(&self.tasks).retain(|_, t| t.deadline > now);
        write(&self.revoked_tokens).retain(|_, exp| *exp > now);
    }
}
