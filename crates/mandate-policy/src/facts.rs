//! What a caller tells the policy engine, and what it answers. Facts are
//! borrowed: the caller already holds the agent, tool and task rows.

use mandate_core::{Agent, Environment, Link, Sensitivity, Task, TaskState, Tool};

/// The principal: `Mandate::Agent::"<name>"`.
#[derive(Debug, Clone, Copy)]
pub struct AgentFacts<'a> {
    pub name: &'a str,
    pub environment: Environment,
    pub owner: &'a str,
}

/// The resource: `Mandate::Tool::"<name>"`.
#[derive(Debug, Clone, Copy)]
pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub environment: Environment,
    pub sensitivity: Sensitivity,
}

/// `context.task`.
#[derive(Debug, Clone, Copy)]
pub struct TaskFacts<'a> {
    pub id: &'a str,
    pub state: TaskState,
    pub intent: &'a str,
    pub environment: Environment,
    /// A person approved its start, or it is break-glass.
    pub approved: bool,
    /// An emergency task an operator opened (it skips approval).
    pub breakglass: bool,
    pub delegation_depth: i64,
    /// The agents that delegated down to this task, the root's first.
    pub delegation_chain: &'a [Link],
    /// The root task's intent (this task's own for a root).
    pub root_intent: &'a str,
}

impl<'a> AgentFacts<'a> {
    pub fn of(agent: &'a Agent) -> Self {
        AgentFacts {
            name: agent.name.as_str(),
            environment: agent.environment,
            owner: agent.owner.as_str(),
        }
    }
}

impl<'a> ToolFacts<'a> {
    pub fn of(tool: &'a Tool) -> Self {
        ToolFacts {
            name: tool.name.as_str(),
            environment: tool.environment,
            sensitivity: tool.sensitivity,
        }
    }
}

impl<'a> TaskFacts<'a> {
    /// The task as policy sees it at `now`; `approved` when a person
    /// approved its start.
    pub fn of(task: &'a Task, now: i64) -> Self {
        let d = task.delegation.as_ref();
        TaskFacts {
            id: task.id.as_str(),
            state: task.state_at(now),
            intent: &task.intent,
            environment: task.environment,
            approved: (task.approval.is_some() && task.state != TaskState::PendingApproval)
                || task.breakglass.is_some(),
            breakglass: task.breakglass.is_some(),
            delegation_depth: d.map_or(0, |d| i64::from(d.depth())),
            delegation_chain: d.map_or(&[], |d| d.chain.as_slice()),
            root_intent: d.map_or(&task.intent, |d| &d.root_intent),
        }
    }
}

/// One request an agent makes with a grant (Cedar action `invoke`).
#[derive(Debug, Clone, Copy)]
pub struct InvokeRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    /// The tool action asked for, e.g. `issues:read`.
    pub action: &'a str,
    /// The tool resource asked for, e.g. `repo:acme/widgets`.
    pub resource: &'a str,
    /// The actions the grant allows on this tool.
    pub grant_actions: &'a [String],
    /// Whether `resource` matches the grant's resource patterns.
    pub resource_in_scope: bool,
    /// Where the request is going; `None` means the task's environment.
    pub request_environment: Option<Environment>,
    /// How sensitive the data in the request is; `None` means public.
    pub data_sensitivity: Option<Sensitivity>,
    /// An amount the asker states (a payment's), for policies that hold
    /// large ones for a person.
    pub amount: Option<i64>,
    pub anomaly_score: i64,
    /// Unix seconds.
    pub now: i64,
}

/// Where a person's approval may be required (`context.stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStage {
    /// A new task, before it starts.
    Task,
    /// A token for one tool of a live task.
    Grant,
    /// One request `invoke` allowed.
    Request,
}

impl HoldStage {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStage::Task => "task",
            HoldStage::Grant => "grant",
            HoldStage::Request => "request",
        }
    }
}

/// Must a person approve this first (Cedar action `require_approval`)?
#[derive(Debug, Clone, Copy)]
pub struct HoldRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    pub stage: HoldStage,
    pub requested_actions: &'a [String],
    /// The request, at stage `Request`: its action, resource, environment,
    /// data sensitivity and amount.
    pub request: Option<RequestFacts<'a>>,
    pub anomaly_score: i64,
    /// Unix seconds.
    pub now: i64,
}

/// `context.request` of a held request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub action: &'a str,
    pub resource: &'a str,
    pub environment: Environment,
    pub data_sensitivity: Option<Sensitivity>,
    pub amount: Option<i64>,
}

/// The policies that want a person's approval, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApprovalNeed {
    pub reasons: Vec<String>,
    pub policy_ids: Vec<String>,
}

/// The answer to a [`HoldRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No policy holds it.
    Free,
    /// A person must approve first.
    Held(ApprovalNeed),
    /// A rule could not be evaluated: fail closed (deny, with the reasons).
    Failed(Decision),
}

/// An agent asking for a task that touches one tool (Cedar actions
/// `start_task`, then `require_approval`).
#[derive(Debug, Clone, Copy)]
pub struct TaskStartRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    pub requested_actions: &'a [String],
    pub anomaly_score: i64,
    /// Unix seconds.
    pub now: i64,
}

/// A live task whose context changed under it (Cedar action
/// `continue_task`), for one tool of its scope.
#[derive(Debug, Clone, Copy)]
pub struct ContinueRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    /// What changed: `model`.
    pub change: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// A task asking for a tool's secret value itself (Cedar action
/// `reveal_secret`): the flagged exception to injection by the proxy.
#[derive(Debug, Clone, Copy)]
pub struct RevealRequest<'a> {
    pub agent: AgentFacts<'a>,
    pub tool: ToolFacts<'a>,
    pub task: TaskFacts<'a>,
    /// The tool's delivery mode: `inject` or `reveal`.
    pub delivery: &'a str,
    pub secret_name: &'a str,
    pub secret_class: &'a str,
    pub human_credential: bool,
    pub shared: bool,
    pub anomaly_score: i64,
    /// Unix seconds.
    pub now: i64,
}

/// The answer to an [`InvokeRequest`].
///
/// `reasons` are sentences for people: `"<policy id>: <@reason>"` for each
/// determining policy, `"no-permit: …"` when nothing permitted, and
/// `"policy-error: <policy id>: <message>"` when a policy could not be
/// evaluated (which always denies). `policy_ids` are the determining
/// policies: the permits for an allow, the forbids (and failing policies)
/// for a deny.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub reasons: Vec<String>,
    pub policy_ids: Vec<String>,
    /// For an allowed request: the policies that still want a person's
    /// approval first (Cedar `require_approval` at stage `request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalNeed>,
}

/// The answer to a [`TaskStartRequest`]: start it, refuse it, or start it
/// in `pending_approval` until a person approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDecision {
    Allow {
        policy_ids: Vec<String>,
    },
    Deny {
        reasons: Vec<String>,
        policy_ids: Vec<String>,
    },
    PendingApproval {
        reasons: Vec<String>,
        policy_ids: Vec<String>,
    },
}
