//! Delegation: an agent hands part of its task to another agent as a child
//! task. The child only ever narrows: its scope lies inside the parent's,
//! its deadline is no later, its environment is the same, and the chain of
//! who delegated to whom is fixed when the child is made.

use crate::{
    Agent, AgentName, RuleViolation, Scope, Task, TaskId, TaskState, Tool, ToolName, UnixTime,
};
use serde::{Deserialize, Serialize};

/// Deepest delegation any configuration may allow.
pub const MAX_DELEGATION_DEPTH: u32 = 16;

/// One task up the chain: whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub agent: AgentName,
    pub task: TaskId,
}

/// Where a delegated task sits in its tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    pub parent: TaskId,
    pub root: TaskId,
    /// Every ancestor, the root first and the parent last.
    pub chain: Vec<Link>,
    /// What the root task is for: policy judges every descendant by it.
    pub root_intent: String,
}

impl Delegation {
    /// How many hops below the root: 1 for the root's children.
    pub fn depth(&self) -> u32 {
        u32::try_from(self.chain.len()).unwrap_or(u32::MAX)
    }
}

/// What the child agent asks for.
pub struct ChildRequest<'a> {
    pub agent: &'a Agent,
    pub intent: String,
    pub scope: Scope,
    /// Seconds from `now`; `None`: what is left of the parent.
    pub ttl_secs: Option<u32>,
    /// The model the child agent's session declares.
    pub model: Option<crate::Model>,
}

/// The child task of `parent` for `req`, or the rule it breaks (each
/// naming the field). `tool` looks a registered tool up; `id` is the
/// child's new id.
pub fn delegate<'t>(
    parent: &Task,
    req: ChildRequest<'_>,
    max_depth: u32,
    tool: impl Fn(&ToolName) -> Option<&'t Tool>,
    id: TaskId,
    now: UnixTime,
) -> Result<Task, RuleViolation> {
    let refuse = |field: &str, why: String| {
        Err(RuleViolation::Delegation {
            field: field.into(),
            why,
        })
    };
    if !parent.is_live(now) {
        return Err(RuleViolation::TaskNotActive {
            state: parent.state_at(now).to_string(),
        });
    }
    if parent.breakglass.is_some() {
        return refuse(
            "subject_token",
            "a break-glass task is not handed on: open one for the other agent".to_owned(),
        );
    }
    if req.agent.name == parent.agent {
        return refuse(
            "actor_token",
            "an agent cannot delegate to itself".to_owned(),
        );
    }
    if let Some(d) = &parent.delegation
        && d.chain.iter().any(|l| l.agent == req.agent.name)
    {
        return refuse(
            "actor_token",
            format!("agent `{}` is already in this task's chain", req.agent.name),
        );
    }
    if req.agent.environment != parent.environment {
        return refuse(
            "actor_token",
            format!(
                "agent `{}` is in environment `{}`, the task in `{}`",
                req.agent.name, req.agent.environment, parent.environment
            ),
        );
    }
    let depth = parent.delegation.as_ref().map_or(0, Delegation::depth) + 1;
    if depth > max_depth {
        return refuse(
            "subject_token",
            format!("delegation depth {depth} is above the limit of {max_depth}"),
        );
    }
    for (i, item) in req.scope.items().iter().enumerate() {
        parent.scope.contains(item, i)?;
        if tool(&item.tool).is_some_and(|t| t.no_delegation) {
            return refuse(
                &format!("scope[{i}].tool"),
                format!("tool `{}` cannot be delegated", item.tool),
            );
        }
    }
    req.scope.check_against(req.agent, &tool)?;
    let left = parent.deadline - now;
    let deadline = match req.ttl_secs {
        None => parent.deadline,
        Some(0) => return refuse("ttl_secs", "must be at least 1".to_owned()),
        Some(ttl) if i64::from(ttl) > left => {
            return refuse(
                "ttl_secs",
                format!("{ttl}s would outlive the parent task, which has {left}s left"),
            );
        }
        Some(ttl) => now + i64::from(ttl),
    };
    let mut chain = parent
        .delegation
        .as_ref()
        .map(|d| d.chain.clone())
        .unwrap_or_default();
    chain.push(Link {
        agent: parent.agent.clone(),
        task: parent.id.clone(),
    });
    Ok(Task {
        id,
        agent: req.agent.name.clone(),
        intent: req.intent,
        scope: req.scope,
        environment: parent.environment,
        state: TaskState::Active,
        requested_by: Some(format!("task:{}", parent.id)),
        reasons: Vec::new(),
        created_at: now,
        deadline,
        ended_at: None,
        delegation: Some(Delegation {
            parent: parent.id.clone(),
            root: parent
                .delegation
                .as_ref()
                .map_or_else(|| parent.id.clone(), |d| d.root.clone()),
            root_intent: parent
                .delegation
                .as_ref()
                .map_or_else(|| parent.intent.clone(), |d| d.root_intent.clone()),
            chain,
        }),
        model: req.model,
        approval: None,
        breakglass: None,
    })
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;
