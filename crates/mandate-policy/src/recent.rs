//! Cedar decisions reused for identical inputs within the same second.
//! The broker and the proxy both keep one table of these.
//!
//! A Cedar decision is a pure function of the policy set, the entities and
//! the request. An agent calling the same endpoint again with the same
//! token presents exactly the same inputs, so the answer is looked up
//! instead of evaluated — but only when *every* input is the same object
//! (policy set, tool, agent and task facts, verified token: held here, so
//! compared by identity without reuse of freed addresses), for the same
//! action and resource, within the same Unix second (policy sees `now` in
//! seconds and the task's state at `now`). A catalog or policy reload, a
//! refetched agent or task, another token or the next second each make a
//! fresh evaluation. Revocation is not a policy input: it is checked on
//! every request before this.

use crate::{Decision, PolicySet};
use mandate_core::{Agent, Sensitivity, Task, Tool};
use mandate_token::claims::VerifiedAccess;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Entries kept at most; past it, the table is cleared.
const MAX_ENTRIES: usize = 10_000;
/// Past this many entries, those of earlier seconds (never reused again)
/// are dropped, so old policy sets and facts are not held for long.
const SWEEP_AT: usize = 1024;

/// Everything a decision depends on besides the action, resource and second.
#[derive(Clone)]
pub struct Inputs {
    pub policy: Arc<PolicySet>,
    pub tool: Arc<Tool>,
    pub agent: Arc<Agent>,
    pub task: Arc<Task>,
    pub token: Arc<VerifiedAccess>,
    /// Request facts, not objects: compared by value.
    pub data_sensitivity: Option<Sensitivity>,
    pub amount: Option<i64>,
}

impl Inputs {
    fn same(&self, o: &Inputs) -> bool {
        Arc::ptr_eq(&self.policy, &o.policy)
            && Arc::ptr_eq(&self.tool, &o.tool)
            && Arc::ptr_eq(&self.agent, &o.agent)
            && Arc::ptr_eq(&self.task, &o.task)
            && Arc::ptr_eq(&self.token, &o.token)
            && self.data_sensitivity == o.data_sensitivity
            && self.amount == o.amount
    }
}

struct Entry {
    inputs: Inputs,
    second: i64,
    decision: Arc<Decision>,
}

type Key = (String, String, String);

#[derive(Default)]
struct Table {
    /// `(jti, action, resource)` → the last decision for them.
    map: HashMap<Key, Entry>,
    /// The second of the last sweep: at most one per second.
    swept: i64,
}

#[derive(Default)]
pub struct RecentDecisions {
    table: Mutex<Table>,
}

impl RecentDecisions {
    /// The decision for these inputs at `now`: reused if one was made for
    /// the very same inputs this second, else `evaluate`d and kept.
    pub fn decide(
        &self,
        inputs: &Inputs,
        action: &str,
        resource: &str,
        now: i64,
        evaluate: impl FnOnce() -> Decision,
    ) -> Arc<Decision> {
        let key = (
            inputs.token.claims.jti.clone(),
            action.to_owned(),
            resource.to_owned(),
        );
        if let Some(e) = self.lock().map.get(&key)
            && e.second == now
            && e.inputs.same(inputs)
        {
            return e.decision.clone();
        }
        // Evaluated outside the lock: two workers may both evaluate the
        // same inputs once, which is harmless.
        let decision = Arc::new(evaluate());
        let mut t = self.lock();
        if t.map.len() >= SWEEP_AT && t.swept != now {
            t.map.retain(|_, e| e.second == now);
            t.swept = now;
        }
        if t.map.len() >= MAX_ENTRIES && !t.map.contains_key(&key) {
            t.map.clear();
        }
        t.map.insert(
            key,
            Entry {
                inputs: inputs.clone(),
                second: now,
                decision: decision.clone(),
            },
        );
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn inputs(jti: &str) -> Inputs {
        Inputs {
            policy: Arc::new(PolicySet::defaults()),
            tool: from(json!({
                "name": "github", "audience": "https://api.github.com", "owner": "platform",
                "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
                "actions": ["issues:read"], "description": "", "created_at": 0
            })),
            agent: from(json!({
                "name": "bot", "spiffe_id": "spiffe://example.org/agent/bot", "owner": "platform",
                "environment": "staging", "allowed_tools": ["github"], "description": "",
                "state": "active", "enrolled_key": null, "created_at": 0
            })),
            task: from(json!({
                "id": "task_0123456789abcdef0123456789abcdef", "agent": "bot", "intent": "triage",
                "scope": [{"tool": "github", "actions": ["issues:read"], "resources": ["*"]}],
                "environment": "staging", "state": "active", "requested_by": null,
                "reasons": [], "created_at": 0, "deadline": 100, "ended_at": null
            })),
            token: Arc::new(VerifiedAccess {
                kid: "k1".into(),
                claims: serde_json::from_value(json!({
                    "iss": "https://mandate.example", "sub": "spiffe://example.org/agent/bot",
                    "aud": "https://api.github.com", "exp": 100, "iat": 0, "nbf": 0,
                    "jti": jti, "client_id": "bot", "txn": "task_0123456789abcdef0123456789abcdef",
                    "scope": "issues:read", "authorization_details": []
                }))
                .unwrap(),
            }),
            data_sensitivity: None,
            amount: None,
        }
    }

    /// Counts evaluations; each answers with its own number as a reason,
    /// so a reused decision is recognisable.
    struct Counter(AtomicUsize);

    impl Counter {
        fn eval(&self) -> impl FnOnce() -> Decision + '_ {
            move || {
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                Decision {
                    allowed: true,
                    reasons: vec![n.to_string()],
                    policy_ids: vec![],
                    approval: None,
                }
            }
        }
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn identical_inputs_in_the_same_second_are_evaluated_once() {
        let (d, c, i) = (
            RecentDecisions::default(),
            Counter(AtomicUsize::new(0)),
            inputs("j1"),
        );
        let first = d.decide(&i, "issues:read", "repo:a/b", 10, c.eval());
        let again = d.decide(&i.clone(), "issues:read", "repo:a/b", 10, c.eval());
        assert_eq!(c.count(), 1);
        assert_eq!(again.reasons, first.reasons);
    }

    #[test]
    fn any_changed_input_is_evaluated_afresh() {
        let d = RecentDecisions::default();
        let c = Counter(AtomicUsize::new(0));
        let base = inputs("j1");
        let other = inputs("j1"); // equal content, other objects
        d.decide(&base, "issues:read", "repo:a/b", 10, c.eval());
        let mut expected = 1;
        let variants: Vec<(&str, Inputs, &str, &str, i64)> = vec![
            ("next second", base.clone(), "issues:read", "repo:a/b", 11),
            // Right after the same inputs without it: only this differs.
            (
                "other data sensitivity",
                Inputs {
                    data_sensitivity: Some(Sensitivity::Restricted),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
            ("other action", base.clone(), "issues:write", "repo:a/b", 11),
            (
                "other resource",
                base.clone(),
                "issues:read",
                "repo:a/c",
                11,
            ),
            ("other token", inputs("j2"), "issues:read", "repo:a/b", 11),
            (
                "reloaded policy",
                Inputs {
                    policy: other.policy.clone(),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
            (
                "refreshed tool",
                Inputs {
                    tool: other.tool.clone(),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
            (
                "refetched agent",
                Inputs {
                    agent: other.agent.clone(),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
            (
                "refetched task",
                Inputs {
                    task: other.task.clone(),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
            (
                "re-verified token",
                Inputs {
                    token: other.token.clone(),
                    ..base.clone()
                },
                "issues:read",
                "repo:a/b",
                11,
            ),
        ];
        for (what, i, action, resource, now) in variants {
            let got = d.decide(&i, action, resource, now, c.eval());
            expected += 1;
            assert_eq!(c.count(), expected, "{what} reused a decision");
            assert_eq!(got.reasons, vec![expected.to_string()], "{what}");
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let d = RecentDecisions::default();
        let c = Counter(AtomicUsize::new(0));
        let i = inputs("j1");
        for n in 0..MAX_ENTRIES {
            d.decide(&i, "issues:read", &format!("r{n}"), 1, c.eval());
        }
        assert_eq!(d.len(), MAX_ENTRIES);
        // A new second: the old second's entries go first.
        d.decide(&i, "issues:read", "fresh", 2, c.eval());
        assert_eq!(d.len(), 1);
        // Below the sweep mark, earlier seconds stay; past it they go.
        for n in 1..SWEEP_AT {
            d.decide(&i, "issues:read", &format!("t{n}"), 3, c.eval());
        }
        assert_eq!(d.len(), SWEEP_AT);
        d.decide(&i, "issues:read", "later", 4, c.eval());
        assert_eq!(d.len(), 1, "entries of earlier seconds are swept");
        // A full table of this second is cleared, not grown.
        for n in 1..MAX_ENTRIES {
            d.decide(&i, "issues:read", &format!("s{n}"), 4, c.eval());
        }
        assert_eq!(d.len(), MAX_ENTRIES);
        d.decide(&i, "issues:read", "one more", 4, c.eval());
        assert_eq!(d.len(), 1);
    }
}
