//! The inventory: every stored secret, live grant and agent, with what the
//! log says about their use. Served as JSON by the broker and printed by
//! the CLI, so the type is declared here once.

use crate::facts::Facts;
use mandate_core::{
    AgentName, AgentState, AuthFacts, AuthStrength, Environment, Jti, Lease, Model, Owner,
    OwnerKind, OwnerName, RotationStatus, Secret, SecretClass, TaskId, ToolName, UnixTime,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub generated_at: UnixTime,
    pub period_days: u32,
    pub owners: Vec<Owner>,
    pub secrets: Vec<SecretEntry>,
    pub grants: Vec<GrantEntry>,
    /// Dynamic credentials not yet confirmed gone at their source.
    pub leases: Vec<Lease>,
    pub agents: Vec<AgentEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretEntry {
    #[serde(flatten)]
    pub secret: Secret,
    pub owner_kind: OwnerKind,
    /// `inject` or `reveal`.
    pub delivery: Option<String>,
    pub rotation: RotationStatus,
    /// Agents whose calls reached its tool in the period.
    pub used_by: Vec<AgentName>,
    /// Agents registered for its tool.
    pub allowed_agents: Vec<AgentName>,
    /// `human`, `shared`, `expired`, `rotation_overdue`, `unused`, `reveal`.
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantEntry {
    pub jti: Jti,
    pub agent: AgentName,
    pub task: TaskId,
    pub tool: ToolName,
    pub class: Option<SecretClass>,
    pub expires_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    pub name: AgentName,
    pub owner: OwnerName,
    pub owner_kind: OwnerKind,
    pub environment: Environment,
    pub state: AgentState,
    pub auth: AuthFacts,
    pub auth_strength: AuthStrength,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    /// Its latest audit event (seconds), if any.
    pub last_seen: Option<UnixTime>,
    pub tools: Vec<ToolName>,
}

/// What to keep: secrets (and grants) of one class, things of one owner.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub class: Option<SecretClass>,
    pub owner: Option<OwnerName>,
}

impl Inventory {
    pub fn of(f: &Facts) -> Inventory {
        let owner_kind = |o: &OwnerName| {
            f.owners
                .iter()
                .find(|x| &x.name == o)
                .map_or(OwnerKind::Team, |x| x.kind)
        };
        let secrets = f
            .secrets
            .iter()
            .map(|s| {
                let delivery = f
                    .tools
                    .iter()
                    .find(|t| t.name == s.tool)
                    .map(|t| t.delivery.mode.as_str().to_owned());
                let rotation = f.rotation.status(s, f.now);
                let used_by: Vec<AgentName> = f
                    .tool_users
                    .get(&s.tool)
                    .map(|u| u.iter().cloned().collect())
                    .unwrap_or_default();
                let allowed_agents = f
                    .agents
                    .iter()
                    .filter(|a| a.is_active() && a.allowed_tools.contains(&s.tool))
                    .map(|a| a.name.clone())
                    .collect();
                let mut flags = Vec::new();
                for (on, flag) in [
                    (s.human_credential, "human"),
                    (s.shared, "shared"),
                    (s.is_expired(f.now), "expired"),
                    (rotation.overdue, "rotation_overdue"),
                    (rotation.unused, "unused"),
                    (delivery.as_deref() == Some("reveal"), "reveal"),
                ] {
                    if on {
                        flags.push(flag.to_owned());
                    }
                }
                SecretEntry {
                    secret: s.clone(),
                    owner_kind: owner_kind(&s.owner),
                    delivery,
                    rotation,
                    used_by,
                    allowed_agents,
                    flags,
                }
            })
            .collect();
        let class_of =
            |tool: &ToolName| f.secrets.iter().find(|s| &s.tool == tool).map(|s| s.class);
        let grants = f
            .grants
            .iter()
            .map(|g| GrantEntry {
                jti: g.jti.clone(),
                agent: g.agent.clone(),
                task: g.task.clone(),
                tool: g.scope.tool.clone(),
                class: class_of(&g.scope.tool),
                expires_at: g.expires_at,
            })
            .collect();
        let agents = f
            .agents
            .iter()
            .map(|a| {
                let (tokens, dpop_tokens) = f.tokens.get(&a.name).copied().unwrap_or((0, 0));
                let auth = AuthFacts {
                    enrolled_key: a.enrolled_key.is_some(),
                    federated: f.federated.contains(&a.name),
                    tokens,
                    dpop_tokens,
                };
                AgentEntry {
                    name: a.name.clone(),
                    owner: a.owner.clone(),
                    owner_kind: owner_kind(&a.owner),
                    environment: a.environment,
                    state: a.state,
                    auth_strength: auth.strength(),
                    auth,
                    model: a.model.clone(),
                    last_seen: f.last_seen_ms.get(&a.name).map(|ms| ms / 1000),
                    tools: a.allowed_tools.clone(),
                }
            })
            .collect();
        Inventory {
            generated_at: f.now,
            period_days: f.period_days,
            owners: f.owners.clone(),
            secrets,
            grants,
            leases: f.leases.clone(),
            agents,
        }
    }

    /// Keep what `filter` names: a class narrows secrets and grants; an
    /// owner narrows secrets, agents and the grants of its agents.
    pub fn filtered(mut self, filter: &Filter) -> Inventory {
        if let Some(c) = filter.class {
            self.secrets.retain(|s| s.secret.class == c);
            self.grants.retain(|g| g.class == Some(c));
            // Dynamic credentials are database logins (or the engine's kind).
            let dynamic = [SecretClass::Database, SecretClass::Deployment].contains(&c);
            if !dynamic {
                self.leases.clear();
            }
        }
        if let Some(o) = &filter.owner {
            self.secrets.retain(|s| &s.secret.owner == o);
            self.agents.retain(|a| &a.owner == o);
            let mine: BTreeSet<&AgentName> = self.agents.iter().map(|a| &a.name).collect();
            self.grants.retain(|g| mine.contains(&g.agent));
            self.leases.retain(|l| mine.contains(&l.agent));
            self.owners.retain(|x| &x.name == o);
        }
        self
    }
}
