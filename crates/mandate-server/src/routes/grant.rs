//! Minting one access token for one tool of a task: what the client asked
//! for (`scope` or `authorization_details`, a DPoP binding), the claims
//! (with the delegation chain of a delegated task), the grant row and its
//! event, durable before the token leaves.

use crate::app::App;
use crate::error::OAuthError;
use crate::extract::OAuthForm;
use crate::tokens::new_jti;
use axum::Json;
use axum::response::{IntoResponse, Response};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{
    Action, Agent, Grant, Held, ResourcePattern, RuleViolation, ScopeItem, SpiffeId, Task, Tool,
    ToolName,
};
use mandate_policy::{
    AgentFacts, ApprovalNeed, Hold, HoldRequest, HoldStage, TaskFacts, ToolFacts,
};
use mandate_token::claims::{AccessClaims, Actor, AuthorizationDetail, Confirmation, DETAIL_TYPE};
use mandate_token::{dpop, jwt};
use serde_json::json;

pub const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 6749 §5.1: token responses must not be cached.
pub fn no_store(body: serde_json::Value) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

pub fn rule_error(e: RuleViolation) -> OAuthError {
    match &e {
        RuleViolation::TaskNotActive { .. } => OAuthError::invalid_grant(e.to_string()),
        RuleViolation::OutsideScope { field, .. } if field == "resource" => {
            OAuthError::new("invalid_target", e.to_string())
        }
        _ => OAuthError::new("invalid_scope", e.to_string()),
    }
}

/// What the client asked for, from `scope` or `authorization_details`.
pub struct Requested {
    pub actions: Option<Vec<Action>>,
    pub resources: Option<Vec<ResourcePattern>>,
}

pub fn requested(form: &OAuthForm, tool: &ToolName) -> Result<Requested, OAuthError> {
    match (form.get("scope"), form.get("authorization_details")) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "send `scope` or `authorization_details`, not both",
        )),
        (Some(scope), None) => {
            let actions = scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    Action::parse(s).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Requested {
                actions: Some(actions),
                resources: None,
            })
        }
        (None, Some(details)) => {
            let bad = |m: String| OAuthError::new("invalid_authorization_details", m);
            let list: Vec<AuthorizationDetail> = serde_json::from_str(details)
                .map_err(|e| bad(format!("authorization_details: {e}")))?;
            let [d] = list.as_slice() else {
                return Err(bad(
                    "authorization_details: send exactly one entry (one tool per token)".into(),
                ));
            };
            if d.type_ != DETAIL_TYPE {
                return Err(bad(format!(
                    "authorization_details[0].type: must be `{DETAIL_TYPE}`"
                )));
            }
            if d.tool != tool.as_str() {
                return Err(bad(
                    "authorization_details[0].tool: does not match `resource`".into(),
                ));
            }
            let actions = d
                .actions
                .iter()
                .map(|a| {
                    Action::parse(a).map_err(|e| {
                        bad(format!("authorization_details[0].actions: {}", e.message))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let resources = d
                .resources
                .iter()
                .map(|r| {
                    ResourcePattern::parse(r).map_err(|e| {
                        bad(format!("authorization_details[0].resources: {}", e.message))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Requested {
                actions: Some(actions),
                resources: (!resources.is_empty()).then_some(resources),
            })
        }
        (None, None) => Ok(Requested {
            actions: None,
            resources: None,
        }),
    }
}

/// The `DPoP` header, if any: at most one (RFC 9449 §4.3).
pub fn dpop_header(headers: &http::HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut all = headers.get_all("dpop").iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(Some)
            .map_err(|_| OAuthError::new("invalid_dpop_proof", "DPoP header is not ASCII")),
        (Some(_), Some(_)) => Err(OAuthError::new(
            "invalid_dpop_proof",
            "send exactly one DPoP header",
        )),
    }
}

/// A DPoP proof at the token endpoint binds the new token to its key.
pub fn bind_to_proof(app: &App, proof: &str, now: i64) -> Result<Confirmation, OAuthError> {
    let expect = dpop::Expect {
        method: "POST",
        url: &format!("{}/oauth/token", app.issuer),
        access_token: None,
        now,
    };
    let p = dpop::verify_proof(proof, &expect)
        .and_then(|p| app.dpop_replay.first_use(&p, now).map(|()| p))
        .map_err(|e| OAuthError::new("invalid_dpop_proof", e.to_string()))?;
    Ok(Confirmation { jkt: p.jkt })
}

/// Does policy hold this grant (a token for `item` on `tool`) for a
/// person (Cedar `require_approval` at stage `grant`)? `Ok(None)`: no.
pub fn grant_hold(
    app: &App,
    agent: &Agent,
    task: &Task,
    tool: &Tool,
    item: &ScopeItem,
    t: i64,
) -> Result<Option<ApprovalNeed>, OAuthError> {
    // Break-glass skips approval, and nothing else.
    if task.breakglass.is_some() {
        return Ok(None);
    }
    let actions: Vec<String> = item.actions.iter().map(|a| a.to_string()).collect();
    let hold = app.policy().decide_hold(&HoldRequest {
        agent: AgentFacts::of(agent),
        tool: ToolFacts::of(tool),
        task: TaskFacts::of(task, t),
        stage: HoldStage::Grant,
        requested_actions: &actions,
        request: None,
        anomaly_score: 0,
        now: t,
    });
    match hold {
        Hold::Free => Ok(None),
        Hold::Held(need) => Ok(Some(need)),
        Hold::Failed(d) => Err(OAuthError::new(
            "invalid_scope",
            format!(
                "policy could not decide this grant: {}",
                d.reasons.join("; ")
            ),
        )),
    }
}

/// The grant as an approval holds it: exactly these actions and resources.
pub fn held_grant(tool: &Tool, item: &ScopeItem) -> Held {
    Held::Grant {
        tool: tool.name.clone(),
        actions: item.actions.clone(),
        resources: Some(item.resources.clone()),
    }
}

/// What one token is minted for, already decided.
pub struct Minted<'a> {
    pub agent: &'a Agent,
    pub task: &'a Task,
    pub tool: &'a Tool,
    pub item: ScopeItem,
    pub ttl: u32,
    pub cnf: Option<Confirmation>,
    /// The `jti` of the session (or parent token) it was exchanged for.
    pub session: &'a str,
}

/// The agents of a delegated task's chain, root first, by name: what an
/// audit event's `chain` lists.
pub fn chain_names(task: &Task) -> Vec<String> {
    task.delegation
        .iter()
        .flat_map(|d| d.chain.iter().map(|l| l.agent.to_string()))
        .collect()
}

/// `sub`, `act` and `root_txn` for `task`'s holder (RFC 8693 §4.1): the
/// agent itself for a root task; for a delegated one the root's agent,
/// with the holder as the outermost actor and earlier ones nested.
fn subject_claims(
    app: &App,
    agent: &Agent,
    task: &Task,
) -> (String, Option<Actor>, Option<String>) {
    let Some(d) = &task.delegation else {
        return (agent.spiffe_id.clone(), None, None);
    };
    let ancestors: Vec<(String, String)> = d
        .chain
        .iter()
        .map(|l| {
            let id = SpiffeId::new(app.settings.trust_domain.clone(), l.agent.clone());
            (id.to_string(), l.task.to_string())
        })
        .collect();
    let act = Actor::chain(&agent.spiffe_id, task.id.as_str(), &ancestors);
    let root = ancestors.first().map(|(sub, _)| sub.clone());
    (
        root.unwrap_or_else(|| agent.spiffe_id.clone()),
        act,
        Some(d.root.to_string()),
    )
}

/// A signed token with its grant row and `grant.minted` event, not yet
/// stored: it may leave only once they are.
pub struct Signed {
    pub grant: Grant,
    pub event: NewEvent,
    body: serde_json::Value,
}

impl Signed {
    /// The RFC 8693 §2.2.1 answer (after the grant is stored).
    pub fn answer(self, app: &App) -> Response {
        app.metrics.grant(true);
        no_store(self.body)
    }
}

/// Sign the token, store the grant with its `grant.minted` event, and
/// answer as RFC 8693 §2.2.1 says.
pub async fn mint(app: &App, rid: &str, m: Minted<'_>, t: i64) -> Result<Response, OAuthError> {
    let used = m.task.breakglass.is_some().then(|| {
        NewEvent::new(EventKind::BreakglassUsed, format!("agent:{}", m.agent.name))
            .agent(&m.agent.name)
            .task(&m.task.id)
            .decision("allow")
            .request_id(Some(rid.to_owned()))
            .detail(json!({"via": "token", "tool": m.tool.name}))
    });
    let signed = sign(app, rid, m, t)?;
    // Durable before the token leaves: the grant and its event commit first.
    app.store
        .insert_grant(signed.grant.clone(), signed.event.clone())
        .await?;
    // Announced on its own (webhooks follow it); the grant's event above
    // already carries the flag.
    if let Some(used) = used {
        app.store.append_events(vec![used]).await?;
    }
    Ok(signed.answer(app))
}

/// The token for `m`, its grant and event.
pub fn sign(app: &App, rid: &str, m: Minted<'_>, t: i64) -> Result<Signed, OAuthError> {
    let (agent, task, tool) = (m.agent, m.task, m.tool);
    let jti = new_jti();
    let actions: Vec<String> = m.item.actions.iter().map(|a| a.to_string()).collect();
    let (sub, act, root_txn) = subject_claims(app, agent, task);
    let claims = AccessClaims {
        iss: app.issuer.clone(),
        sub,
        aud: tool.audience.clone(),
        exp: t + m.ttl as i64,
        iat: t,
        nbf: t,
        jti: jti.to_string(),
        client_id: agent.spiffe_id.clone(),
        txn: task.id.to_string(),
        scope: actions.join(" "),
        authorization_details: vec![AuthorizationDetail {
            type_: DETAIL_TYPE.into(),
            tool: tool.name.to_string(),
            actions,
            resources: m
                .item
                .resources
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            environment: Some(tool.environment.to_string()),
            sensitivity: Some(tool.sensitivity.to_string()),
        }],
        cnf: m.cnf,
        act,
        root_txn,
        breakglass: task.breakglass.is_some(),
    };
    let token =
        jwt::encode(&app.keys.current(), jwt::TYP_ACCESS, &claims).map_err(OAuthError::server)?;
    let grant = Grant {
        jti: jti.clone(),
        task: task.id.clone(),
        agent: agent.name.clone(),
        scope: m.item,
        audience: tool.audience.clone(),
        issued_at: t,
        expires_at: claims.exp,
    };
    let mut detail = json!({"scope": claims.scope, "exp": claims.exp, "session": m.session,
        "dpop_jkt": claims.cnf.as_ref().map(|c| &c.jkt)});
    if task.delegation.is_some() {
        detail["chain"] = json!(chain_names(task));
    }
    if task.breakglass.is_some() {
        detail["breakglass"] = json!(true);
    }
    let ev = NewEvent::new(EventKind::GrantMinted, format!("agent:{}", agent.name))
        .agent(&agent.name)
        .task(&task.id)
        .tool(&tool.name)
        .jti(&jti)
        .request_id(Some(rid.to_owned()))
        .decision("allow")
        .detail(detail);
    let body = json!({
        "access_token": token,
        "issued_token_type": TT_ACCESS,
        "token_type": if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": m.ttl,
        "scope": claims.scope,
        "authorization_details": claims.authorization_details,
    });
    Ok(Signed {
        grant,
        event: ev,
        body,
    })
}
