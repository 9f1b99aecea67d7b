//! The one answer to "may this token do this action on this resource right
//! now?". The broker's `/v1/authorize`, its introspection (`active`) and the
//! proxy all call [`authorize_request`] — introspection only its first
//! stage, [`check_token`] — and none of them keeps a check of its own.
//!
//! Callers look the facts up (the broker in its store and caches, the proxy
//! at the broker and in its revocation feed) and pass them in; the checks
//! run here, always in this order:
//!
//! 1. the token: times, subject, revocation, its agent and task alive and
//!    belonging together ([`Stage::Token`](crate::Stage::Token));
//! 2. its presentation: a DPoP-bound token only with a good proof, an
//!    unbound one never as if bound;
//! 3. the request: a registered tool, the token's audience, a scope entry
//!    for the tool, one environment, a route (for HTTP), then Cedar.

use crate::recent::{Inputs, RecentDecisions};
use crate::{
    AgentFacts, ApprovalNeed, Decision, InvokeRequest, PolicySet, Refusal, TaskFacts, ToolFacts,
};
use mandate_core::{
    Agent, AgentName, Approval, ApprovalId, Environment, Held, Misuse, MisuseCheck, RevocationKind,
    Sensitivity, SpiffeId, Task, TaskId, TaskState, Tool,
};
use mandate_token::claims::{AuthorizationDetail, VerifiedAccess};
use mandate_token::dpop;
use std::sync::Arc;

/// How far a token's `nbf` may be ahead of our clock: the broker that
/// minted it may run on another host. Expiry has no leeway: a token is
/// dead at its `exp` everywhere.
pub const NBF_LEEWAY_SECS: i64 = 10;

/// Who a token speaks for: its holder's agent and task (`txn`), and for a
/// delegated task every agent and task it was handed down through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The holder: `sub`, or the outermost `act` of a delegated token.
    pub agent: AgentName,
    pub task: TaskId,
    /// The root (`sub`, `root_txn`) and each earlier actor; empty for a
    /// task nobody delegated. Revoking any of them revokes the token.
    pub chain: Vec<(AgentName, TaskId)>,
}

impl Subject {
    /// Read from the claims; callers use it to know what to look up.
    pub fn of(token: &VerifiedAccess) -> Result<Subject, Refused> {
        let c = &token.claims;
        let agent = |s: &str| {
            SpiffeId::parse("sub", s).map(|id| id.agent).map_err(|_| {
                Refused::new(
                    Refusal::InvalidToken,
                    "token `sub` or `act.sub` is not an agent SPIFFE ID",
                )
            })
        };
        let task = |t: &str| {
            TaskId::parse(t).map_err(|_| {
                Refused::new(
                    Refusal::InvalidToken,
                    "token `txn`, `act.txn` or `root_txn` is not a task id",
                )
            })
        };
        let chain = c
            .ancestors()
            .into_iter()
            .map(|(a, t)| Ok((agent(a)?, task(t)?)))
            .collect::<Result<_, Refused>>()?;
        Ok(Subject {
            agent: agent(c.holder())?,
            task: task(&c.txn)?,
            chain,
        })
    }

    /// The agents the token was handed down through, root first, parent
    /// last (an audit record's `chain`); empty for an undelegated token.
    pub fn chain_names(&self) -> Vec<String> {
        // `chain` is the root, then the other ancestors most recent first.
        let mut names: Vec<String> = self.chain.iter().map(|(a, _)| a.to_string()).collect();
        if names.len() > 2 {
            names[1..].reverse();
        }
        names
    }

    /// Every agent and task the token depends on: its holder's, then the
    /// chain's.
    pub fn parties(&self) -> impl Iterator<Item = (&AgentName, &TaskId)> {
        std::iter::once((&self.agent, &self.task)).chain(self.chain.iter().map(|(a, t)| (a, t)))
    }
}

/// What the caller's live view says about the token's holder.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    /// Which of the token, its task, its agent or its signing key the
    /// caller knows to be revoked, if any.
    pub revoked: Option<RevocationKind>,
    /// The agent named by `sub`; `None`: not registered.
    pub agent: Option<&'a Arc<Agent>>,
    /// The task named by `txn`; `None`: unknown.
    pub task: Option<&'a Arc<Task>>,
}

/// A DPoP proof as a resource received it, with the request it came with.
#[derive(Clone, Copy)]
pub struct DpopProof<'a> {
    pub proof: &'a str,
    pub method: &'a str,
    /// The URL the client addressed (the proof's `htu`).
    pub url: &'a str,
    /// The access token the proof came with (its `ath`).
    pub token: &'a str,
}

/// How the token was presented.
#[derive(Clone, Copy)]
pub enum Presentation<'a> {
    /// As a bearer token, no proof.
    Bearer,
    /// Under the DPoP scheme: its proof, or why the request carries no
    /// usable one.
    Dpop(Result<DpopProof<'a>, &'a str>),
}

/// What is asked of the tool.
#[derive(Clone, Copy)]
pub enum Operation<'a> {
    /// A resource server names the action and resource itself.
    Named { action: &'a str, resource: &'a str },
    /// An HTTP request through the proxy: the tool's routes name them.
    Http { method: &'a str, path: &'a str },
}

/// The request a token comes with.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// The tool the request is for, or (`Err`) what the request named
    /// where no tool is registered.
    pub tool: Result<&'a Arc<Tool>, &'a str>,
    pub operation: Operation<'a>,
    /// Where the request goes, when the asker says (a proxy serving one
    /// environment); it must be the tool's.
    pub environment: Option<Environment>,
    /// How sensitive the request's data is; `None`: public.
    pub data_sensitivity: Option<Sensitivity>,
    /// An amount the asker states (a payment's); `None`: none stated.
    pub amount: Option<i64>,
    pub presentation: Presentation<'a>,
}

/// The policy and the state a decision may touch.
#[derive(Clone, Copy)]
pub struct Judge<'a> {
    pub policy: &'a Arc<PolicySet>,
    /// DPoP proofs already seen here (RFC 9449 §11.1).
    pub replay: &'a dpop::ReplayGuard,
    pub recent: &'a RecentDecisions,
    /// Unix seconds.
    pub now: i64,
}

/// A refusal: its code, a sentence for people, and (when policy decided)
/// the policy's reasons and ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
    pub reasons: Vec<String>,
    pub policy_ids: Vec<String>,
    /// The tool action, when the request got as far as naming one.
    pub action: Option<String>,
    /// Set when the refusal is evidence that the token left its holder
    /// or outlived its task (see [`MisuseCheck`]).
    pub misuse: Option<Box<Misuse>>,
    /// Set on `approval_pending` by [`authorize_request`]: what waits for
    /// a person. The caller looks its approval up and [`settle`]s it.
    pub pending: Option<Box<Pending>>,
}

/// A request policy allowed but holds for a person: the held thing on its
/// task, and the allowance a granted approval for exactly it releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub task: TaskId,
    pub held: Held,
    pub need: ApprovalNeed,
    pub allowed: Allowed,
    /// Once settled: the approval request a person decides
    /// (`approval_pending`) or denied (`approval_denied`).
    pub approval: Option<ApprovalId>,
}

/// What the approval store answered for a held request.
#[derive(Debug, Clone, Copy)]
pub enum Settled<'a> {
    /// Granted (a `once` one now spent by this request).
    Allowed(&'a Approval),
    Waiting(&'a Approval),
    Denied(&'a Approval),
}

impl Refused {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> Self {
        Refused {
            refusal,
            message: message.into(),
            reasons: Vec::new(),
            policy_ids: Vec::new(),
            action: None,
            misuse: None,
            pending: None,
        }
    }

    /// The approval request this refusal names, once settled.
    pub fn approval(&self) -> Option<&ApprovalId> {
        self.pending.as_ref().and_then(|p| p.approval.as_ref())
    }

    fn misuse(mut self, m: Misuse) -> Self {
        self.misuse = Some(Box::new(m));
        self
    }

    /// `revoked`, naming what was.
    pub fn revoked(kind: RevocationKind) -> Self {
        let what = match kind {
            RevocationKind::Token => "the token",
            RevocationKind::Task => "the token's task",
            RevocationKind::Agent => "the token's agent",
            RevocationKind::Key => "the key that signed the token",
        };
        Refused::new(Refusal::Revoked, format!("{what} has been revoked"))
    }

    /// A failed signature, type or issuer check.
    pub fn token_error(e: &mandate_token::TokenError) -> Self {
        Refused::new(Refusal::of_token_error(e), e.to_string())
    }

    /// How the refusal reads in an audit record or a decision: the
    /// policy's reasons, or `code: message`.
    pub fn reasons(&self) -> Vec<String> {
        if self.reasons.is_empty() {
            vec![format!("{}: {}", self.refusal, self.message)]
        } else {
            self.reasons.clone()
        }
    }
}

/// An allowed request: what it does and the policy decision that allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub tool: Arc<Tool>,
    pub action: String,
    pub resource: String,
    pub decision: Arc<Decision>,
}

/// A live token's holder: its subject, agent and task.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    pub agent: &'a Arc<Agent>,
    pub task: &'a Arc<Task>,
}

/// Stage 1's first half, before any lookup: times, subject, and a
/// revoked token or signing key. Callers look up the subject it returns,
/// and nothing for a token it refuses ([`check_token`] refuses it the
/// same way).
pub fn check_claims(
    token: &VerifiedAccess,
    revoked: Option<RevocationKind>,
    now: i64,
) -> Result<Subject, Refused> {
    let c = &token.claims;
    if now >= c.exp {
        return Err(Refused::new(Refusal::TokenExpired, "token has expired"));
    }
    if now.saturating_add(NBF_LEEWAY_SECS) < c.nbf {
        return Err(Refused::new(
            Refusal::TokenNotYetValid,
            "token is not yet valid",
        ));
    }
    let subject = Subject::of(token)?;
    match revoked {
        Some(kind @ (RevocationKind::Token | RevocationKind::Key)) => Err(Refused::revoked(kind)),
        _ => Ok(subject),
    }
}

/// Stage 1 alone: is the token alive? This is introspection's `active`.
///
/// The agent's and task's own state is read before a revocation entry
/// for them: an entry only says "dead", the row says why (a completed
/// task is `task_not_active`, not `revoked`), and a proxy drops a cached
/// row when such an entry arrives, so both see the same row.
pub fn check_token<'a>(
    token: &VerifiedAccess,
    holder: &Holder<'a>,
    now: i64,
) -> Result<Live<'a>, Refused> {
    let subject = check_claims(token, holder.revoked, now)?;
    let agent = holder.agent.ok_or_else(|| {
        Refused::new(Refusal::UnknownAgent, "the token's agent is not registered")
    })?;
    let task = holder
        .task
        .ok_or_else(|| Refused::new(Refusal::UnknownTask, "the token's task is not known"))?;
    if agent.name != subject.agent || task.agent != subject.agent {
        return Err(Refused::new(
            Refusal::InvalidToken,
            "token's task belongs to another agent",
        ));
    }
    // A token used after its task (or, for a delegated one, any task
    // or agent of its chain) ended is misuse; one merely early or paused
    // (pending approval, suspended) is not.
    let ended = Misuse::new(match token.claims.act {
        Some(_) => MisuseCheck::RevokedChain,
        None => MisuseCheck::EndedTask,
    });
    if !agent.is_active() {
        return Err(Refused::revoked(RevocationKind::Agent).misuse(ended));
    }
    match task.state_at(now) {
        TaskState::Active => {}
        TaskState::Revoked => return Err(Refused::revoked(RevocationKind::Task).misuse(ended)),
        other => {
            let refused = Refused::new(
                Refusal::TaskNotActive,
                format!("the token's task is {other}"),
            );
            return Err(match other {
                TaskState::Completed | TaskState::Expired => refused.misuse(ended),
                _ => refused,
            });
        }
    }
    match holder.revoked {
        Some(kind @ (RevocationKind::Task | RevocationKind::Agent)) => {
            Err(Refused::revoked(kind).misuse(ended))
        }
        Some(kind) => Err(Refused::revoked(kind)),
        None => Ok(Live { agent, task }),
    }
}

/// Stage 2: RFC 9449 at a resource. A bound token needs a fresh proof by
/// its key for this very request and token; an unbound one must not pose
/// as bound.
fn check_presentation(
    token: &VerifiedAccess,
    presentation: &Presentation<'_>,
    judge: &Judge<'_>,
) -> Result<(), Refused> {
    match (&token.claims.cnf, presentation) {
        (None, Presentation::Bearer) => Ok(()),
        (None, Presentation::Dpop(_)) => Err(Refused::new(
            Refusal::NotDpopBound,
            "token is not DPoP-bound; send it with the Bearer scheme and no proof",
        )),
        (Some(cnf), Presentation::Bearer) => Err(Refused::new(
            Refusal::DpopRequired,
            "token is DPoP-bound: send it as `Authorization: DPoP <token>` with a DPoP proof",
        )
        .misuse(Misuse {
            bound_jkt: Some(cnf.jkt.clone()),
            ..Misuse::new(MisuseCheck::DpopAsBearer)
        })),
        (Some(_), Presentation::Dpop(Err(why))) => {
            Err(Refused::new(Refusal::InvalidDpopProof, why.to_string()))
        }
        (Some(cnf), Presentation::Dpop(Ok(p))) => {
            let expect = dpop::Expect {
                method: p.method,
                url: p.url,
                access_token: Some(p.token),
                now: judge.now,
            };
            let refused =
                |e: &dpop::BoundError| Refused::new(Refusal::InvalidDpopProof, e.to_string());
            let evidence = |check, proof: &dpop::Proof| Misuse {
                bound_jkt: Some(cnf.jkt.clone()),
                presented_jkt: Some(proof.jkt.clone()),
                proof_jti: Some(proof.jti.clone()),
                ..Misuse::new(check)
            };
            match dpop::verify_bound(&cnf.jkt, p.proof, &expect, judge.replay) {
                Ok(_) => Ok(()),
                Err(e @ dpop::BoundError::Proof(_)) => Err(refused(&e)),
                Err(ref e @ dpop::BoundError::OtherKey(ref proof)) => {
                    Err(refused(e).misuse(evidence(MisuseCheck::DpopOtherKey, proof)))
                }
                Err(ref e @ dpop::BoundError::Replayed(ref proof)) => {
                    Err(refused(e).misuse(evidence(MisuseCheck::DpopReplayed, proof)))
                }
            }
        }
    }
}

fn env_mismatch(what: &str, env: &str, tool: &Tool) -> Refused {
    Refused::new(
        Refusal::WrongEnvironment,
        format!(
            "{what} is for `{env}` but tool `{}` is in `{}`",
            tool.name, tool.environment
        ),
    )
}

/// Stage 3 up to policy: the tool, the token's entry for it, and the
/// action and resource asked.
fn check_request<'t, 'a>(
    token: &'t VerifiedAccess,
    asked: &Asked<'a>,
) -> Result<(&'a Arc<Tool>, &'t AuthorizationDetail, String, String), Refused> {
    let tool = asked.tool.map_err(|named| {
        Refused::new(
            Refusal::UnknownTool,
            format!(
                "no tool `{}` is registered",
                named.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let c = &token.claims;
    if c.aud != tool.audience {
        return Err(Refused::new(
            Refusal::WrongAudience,
            format!("token is not for tool `{}` (audience mismatch)", tool.name),
        )
        .misuse(Misuse::new(MisuseCheck::WrongAudience)));
    }
    let detail = c.detail_for(tool.name.as_str()).ok_or_else(|| {
        Refused::new(
            Refusal::OutOfScope,
            format!("token grants nothing on tool `{}`", tool.name),
        )
    })?;
    if detail.environment.as_deref() != Some(tool.environment.as_str()) {
        let env = detail.environment.as_deref().unwrap_or("no environment");
        return Err(env_mismatch("token", env, tool));
    }
    if let Some(env) = asked.environment
        && env != tool.environment
    {
        return Err(env_mismatch("this request", env.as_str(), tool));
    }
    let (action, resource) = match asked.operation {
        Operation::Named { action, resource } => (action.to_owned(), resource.to_owned()),
        Operation::Http { method, path } => {
            let routed = tool.route(method, path).ok_or_else(|| {
                Refused::new(
                    Refusal::NoRoute,
                    format!("no route of tool `{}` matches {method} {path}", tool.name),
                )
            })?;
            (routed.action.to_string(), routed.resource)
        }
    };
    Ok((tool, detail, action, resource))
}

/// The whole decision for one request with one token.
pub fn authorize_request(
    token: &Arc<VerifiedAccess>,
    holder: &Holder<'_>,
    asked: &Asked<'_>,
    judge: &Judge<'_>,
) -> Result<Allowed, Refused> {
    let Live { agent, task } = check_token(token, holder, judge.now)?;
    check_presentation(token, &asked.presentation, judge)?;
    let (tool, detail, action, resource) = check_request(token, asked)?;
    let inputs = Inputs {
        policy: judge.policy.clone(),
        tool: tool.clone(),
        agent: agent.clone(),
        task: task.clone(),
        token: token.clone(),
        data_sensitivity: asked.data_sensitivity,
        amount: asked.amount,
    };
    let now = judge.now;
    let decision = judge.recent.decide(&inputs, &action, &resource, now, || {
        judge.policy.decide_request(&InvokeRequest {
            agent: AgentFacts::of(agent),
            tool: ToolFacts::of(tool),
            task: TaskFacts::of(task, now),
            action: &action,
            resource: &resource,
            grant_actions: &detail.actions,
            resource_in_scope: detail.covers_resource(&resource),
            request_environment: Some(tool.environment),
            data_sensitivity: asked.data_sensitivity,
            amount: asked.amount,
            anomaly_score: 0,
            now,
        })
    });
    if !decision.allowed {
        let message = if decision.reasons.is_empty() {
            "no policy permits this request".to_owned()
        } else {
            decision.reasons.join("; ")
        };
        return Err(Refused {
            refusal: Refusal::PolicyDenied,
            message,
            reasons: decision.reasons.clone(),
            policy_ids: decision.policy_ids.clone(),
            action: Some(action),
            ..Refused::new(Refusal::PolicyDenied, "")
        });
    }
    let allowed = Allowed {
        tool: tool.clone(),
        action,
        resource,
        decision,
    };
    match allowed.decision.approval.clone() {
        None => Ok(allowed),
        Some(need) => Err(Refused {
            message: format!(
                "a person must approve this request first ({})",
                need.reasons.join("; ")
            ),
            reasons: need.reasons.clone(),
            policy_ids: need.policy_ids.clone(),
            action: Some(allowed.action.clone()),
            pending: Some(Box::new(Pending {
                task: task.id.clone(),
                held: Held::Request {
                    tool: tool.name.clone(),
                    action: allowed.action.clone(),
                    resource: allowed.resource.clone(),
                    amount: asked.amount,
                },
                need,
                allowed,
                approval: None,
            })),
            ..Refused::new(Refusal::ApprovalPending, "")
        }),
    }
}

/// A held request once its approval was looked up: a granted approval for
/// exactly what is held releases the allowance; otherwise it stays
/// refused, naming the approval (`approval_pending` or, final,
/// `approval_denied`). Any other refusal is returned as it is.
pub fn settle(refused: Refused, settled: Settled<'_>) -> Result<Allowed, Refused> {
    let Some(pending) = refused.pending.as_deref() else {
        return Err(refused);
    };
    let approval = match settled {
        Settled::Allowed(a) | Settled::Waiting(a) | Settled::Denied(a) => a,
    };
    if !approval.covers(&pending.task, &pending.held) {
        return Err(Refused {
            pending: None,
            ..Refused::new(
                Refusal::PolicyDenied,
                format!("approval {} is for something else", approval.id),
            )
        });
    }
    let named = |id: &ApprovalId| {
        let mut p = refused.pending.clone();
        if let Some(p) = p.as_mut() {
            p.approval = Some(id.clone());
        }
        p
    };
    match settled {
        Settled::Allowed(_) => Ok(pending.allowed.clone()),
        Settled::Waiting(a) => Err(Refused {
            message: format!(
                "{}; approval {} is waiting for a person (until {})",
                refused.message, a.id, a.valid_until
            ),
            pending: named(&a.id),
            ..refused
        }),
        Settled::Denied(a) => Err(Refused {
            refusal: Refusal::ApprovalDenied,
            message: format!("a person denied this request (approval {})", a.id),
            pending: named(&a.id),
            ..refused
        }),
    }
}

#[cfg(test)]
#[path = "authorize_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "hold_tests.rs"]
mod hold_tests;
