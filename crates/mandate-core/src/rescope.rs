//! A task's context switch: a new scope (and intent) for a live task.
//! Narrowing takes effect at once and cuts off what no longer fits;
//! anything wider is a new policy decision, and a delegated task may never
//! be widened (its parent's scope bounds it).

use crate::{Agent, Grant, RuleViolation, Scope, Task, TaskState, Tool, ToolName, UnixTime};

/// What the agent asks the task to become.
pub struct RescopeRequest<'a> {
    pub agent: &'a Agent,
    pub scope: Scope,
    /// `None`: the intent stays.
    pub intent: Option<String>,
}

/// The task as it would be, and whether any of it is wider than before
/// (then policy must decide it like a new task).
#[derive(Debug, Clone, PartialEq)]
pub struct Rescoped {
    pub task: Task,
    pub widened: bool,
}

/// `task` with `req`'s scope and intent, or the rule it breaks (naming
/// the field). `tool` looks a registered tool up.
pub fn rescope<'t>(
    task: &Task,
    req: RescopeRequest<'_>,
    tool: impl Fn(&ToolName) -> Option<&'t Tool>,
    now: UnixTime,
) -> Result<Rescoped, RuleViolation> {
    let state = task.state_at(now);
    if state != TaskState::Active {
        return Err(RuleViolation::TaskNotActive {
            state: state.to_string(),
        });
    }
    req.scope.check_against(req.agent, &tool)?;
    let mut widened = false;
    for (i, item) in req.scope.items().iter().enumerate() {
        if let Err(outside) = task.scope.contains(item, i) {
            if task.delegation.is_some() {
                return Err(RuleViolation::Delegation {
                    field: format!("scope[{i}]"),
                    why: format!("a delegated task cannot be widened ({outside})"),
                });
            }
            widened = true;
        }
    }
    let mut next = task.clone();
    next.scope = req.scope;
    if let Some(intent) = req.intent {
        next.intent = intent;
    }
    Ok(Rescoped {
        task: next,
        widened,
    })
}

/// Does a grant minted before the switch still fit `scope`?
pub fn grant_fits(scope: &Scope, grant: &Grant) -> bool {
    scope.contains(&grant.scope, 0).is_ok()
}

/// Does a task delegated below still fit `scope` (every item of its own)?
pub fn child_fits(scope: &Scope, child: &Task) -> bool {
    child
        .scope
        .items()
        .iter()
        .enumerate()
        .all(|(i, item)| scope.contains(item, i).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn tool(name: &str) -> Tool {
        from(json!({
            "name": name, "audience": format!("https://{name}.test"), "owner": "platform",
            "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
            "actions": ["read", "write"], "description": "", "created_at": 0
        }))
    }

    fn agent() -> Agent {
        from(json!({
            "name": "bot", "spiffe_id": "spiffe://t/agent/bot", "owner": "platform",
            "environment": "staging", "allowed_tools": ["a", "b"], "description": "",
            "state": "active", "enrolled_key": null, "created_at": 0
        }))
    }

    fn scope(v: serde_json::Value) -> Scope {
        from(v)
    }

    fn task(state: &str) -> Task {
        from(json!({
            "id": "task_0123456789abcdef0123456789abcdef", "agent": "bot", "intent": "triage",
            "scope": [{"tool": "a", "actions": ["read", "write"], "resources": ["repo:x/*"]}],
            "environment": "staging", "state": state, "requested_by": null,
            "reasons": [], "created_at": 0, "deadline": 1000, "ended_at": null
        }))
    }

    fn run(t: &Task, s: serde_json::Value) -> Result<Rescoped, RuleViolation> {
        let tools = [tool("a"), tool("b")];
        let a = agent();
        let req = RescopeRequest {
            agent: &a,
            scope: scope(s),
            intent: Some("new".into()),
        };
        rescope(t, req, |n| tools.iter().find(|t| &t.name == n), 10)
    }

    #[test]
    fn narrowing_is_not_widening_and_anything_new_is() {
        let t = task("active");
        let r = run(
            &t,
            json!([{"tool": "a", "actions": ["read"], "resources": ["repo:x/y"]}]),
        )
        .unwrap();
        assert!(!r.widened);
        assert_eq!(r.task.intent, "new");
        assert_eq!(
            r.task.deadline, t.deadline,
            "a switch never moves the deadline"
        );
        for wider in [
            json!([{"tool": "a", "actions": ["read"], "resources": ["repo:*"]}]),
            json!([{"tool": "b", "actions": ["read"]}]),
            json!([{"tool": "a", "actions": ["read", "write"], "resources": ["*"]}]),
        ] {
            assert!(run(&t, wider.clone()).unwrap().widened, "{wider}");
        }
    }

    #[test]
    fn a_delegated_task_cannot_be_widened_and_only_a_live_task_switches() {
        let mut t = task("active");
        t.delegation = Some(from(json!({
            "parent": "task_fedcba9876543210fedcba9876543210",
            "root": "task_fedcba9876543210fedcba9876543210",
            "chain": [{"agent": "lead", "task": "task_fedcba9876543210fedcba9876543210"}],
            "root_intent": "release"
        })));
        let err = run(&t, json!([{"tool": "b", "actions": ["read"]}])).unwrap_err();
        assert!(
            matches!(&err, RuleViolation::Delegation { field, .. } if field == "scope[0]"),
            "{err:?}"
        );
        // Narrowing it is fine.
        let narrowed = run(
            &t,
            json!([{"tool": "a", "actions": ["read"], "resources": ["repo:x/1"]}]),
        );
        assert!(!narrowed.unwrap().widened);
        for state in ["suspended", "completed", "pending_approval"] {
            assert!(matches!(
                run(&task(state), json!([{"tool": "a", "actions": ["read"]}])),
                Err(RuleViolation::TaskNotActive { .. })
            ));
        }
        // The agent's own limits still hold.
        let err = run(&task("active"), json!([{"tool": "c", "actions": ["read"]}])).unwrap_err();
        assert!(
            matches!(err, RuleViolation::ToolNotAllowed { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn what_no_longer_fits_is_found() {
        let narrow = scope(json!([{"tool": "a", "actions": ["read"], "resources": ["repo:x/y*"]}]));
        let grant = |actions: serde_json::Value, resources: serde_json::Value| -> Grant {
            from(
                json!({"jti": "jti_0123456789abcdef0123456789abcdef", "task": "task_0123456789abcdef0123456789abcdef",
                "agent": "bot", "scope": {"tool": "a", "actions": actions, "resources": resources},
                "audience": "https://a.test", "issued_at": 0, "expires_at": 100}),
            )
        };
        assert!(grant_fits(
            &narrow,
            &grant(json!(["read"]), json!(["repo:x/y1"]))
        ));
        assert!(!grant_fits(
            &narrow,
            &grant(json!(["read", "write"]), json!(["repo:x/y1"]))
        ));
        assert!(!grant_fits(
            &narrow,
            &grant(json!(["read"]), json!(["repo:x/*"]))
        ));
        let mut child = task("active");
        child.scope =
            scope(json!([{"tool": "a", "actions": ["read"], "resources": ["repo:x/y2"]}]));
        assert!(child_fits(&narrow, &child));
        child.scope = scope(json!([{"tool": "b", "actions": ["read"]}]));
        assert!(!child_fits(&narrow, &child));
    }
}
