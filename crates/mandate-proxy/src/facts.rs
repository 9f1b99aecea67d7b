//! Agent and task facts for policy, fetched from the broker on first sight
//! and cached. A revocation entry for the task or agent drops its entry
//! (and the revocation set denies); entries are also refetched after
//! [`MAX_AGE`] so a state change the feed does not carry is seen.

use crate::broker::{Broker, BrokerError};
use crate::error::{Code, Deny};
use mandate_core::{Agent, Task};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub const MAX_AGE: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 100_000;

struct Cache<T> {
    map: RwLock<HashMap<String, (Arc<T>, Instant)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> Cache<T> {
    fn get(&self, key: &str) -> Option<Arc<T>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let (v, at) = map.get(key)?;
        (at.elapsed() < MAX_AGE).then(|| v.clone())
    }
    fn put(&self, key: &str, v: Arc<T>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, at)| at.elapsed() < MAX_AGE);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key.to_owned(), (v, Instant::now()));
    }
    fn forget(&self, key: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[derive(Default)]
pub struct Facts {
    agents: Cache<Agent>,
    tasks: Cache<Task>,
}

fn lookup_failed(what: &str, e: BrokerError) -> Deny {
    tracing::warn!(error = %e, "{what} lookup failed");
    Deny::unavailable(
        Code::BrokerUnavailable,
        format!("cannot look up the token's {what} at the broker"),
    )
}

impl Facts {
    /// The agent, or `None` if the broker does not know it.
    pub async fn agent(&self, broker: &Broker, name: &str) -> Result<Option<Arc<Agent>>, Deny> {
        if let Some(a) = self.agents.get(name) {
            return Ok(Some(a));
        }
        let a = match broker.agent(name).await {
            Ok(a) => Arc::new(a),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(lookup_failed("agent", e)),
        };
        if a.name.as_str() != name {
            return Err(Deny::unavailable(
                Code::BrokerUnavailable,
                "the broker answered for a different agent",
            ));
        }
        self.agents.put(name, a.clone());
        Ok(Some(a))
    }

    /// The task, or `None` if the broker does not know it.
    pub async fn task(&self, broker: &Broker, id: &str) -> Result<Option<Arc<Task>>, Deny> {
        if let Some(t) = self.tasks.get(id) {
            return Ok(Some(t));
        }
        let t = match broker.task(id).await {
            Ok(t) => Arc::new(t),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(lookup_failed("task", e)),
        };
        if t.id.as_str() != id {
            return Err(Deny::unavailable(
                Code::BrokerUnavailable,
                "the broker answered for a different task",
            ));
        }
        self.tasks.put(id, t.clone());
        Ok(Some(t))
    }

    pub fn forget_agent(&self, name: &str) {
        self.agents.forget(name);
    }

    pub fn forget_task(&self, id: &str) {
        self.tasks.forget(id);
    }
}
