use crate::{
    AgentName, Environment, Invalid, OwnerName, SpiffeId, ToolName, TrustDomain, UnixTime,
};
use serde::{Deserialize, Serialize};

/// Whether an agent may still authenticate. Revocation is final: a revoked
/// workload is re-registered under a new name, never silently revived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Active,
    Revoked,
}

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: AgentName,
    pub spiffe_id: String,
    pub owner: OwnerName,
    pub environment: Environment,
    pub allowed_tools: Vec<ToolName>,
    pub description: String,
    pub state: AgentState,
    /// Public JWK the agent enrolled with a join token; used for `private_key_jwt`.
    pub enrolled_key: Option<serde_json::Value>,
    pub created_at: UnixTime,
    /// The model it runs on, as its operator declared it (a login may
    /// declare its own instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::Model>,
}

impl Agent {
    pub fn is_active(&self) -> bool {
        self.state == AgentState::Active
    }
}

/// An agent registration request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: AgentName,
    pub owner: OwnerName,
    pub environment: Environment,
    #[serde(default)]
    pub allowed_tools: Vec<ToolName>,
    #[serde(default)]
    pub description: String,
    pub model: Option<String>,
    pub model_version: Option<String>,
}

impl NewAgent {
    pub fn into_agent(self, trust_domain: &TrustDomain, now: UnixTime) -> Result<Agent, Invalid> {
        if self.allowed_tools.len() > 256 {
            return Err(Invalid::new("allowed_tools", "must list at most 256 tools"));
        }
        for (i, t) in self.allowed_tools.iter().enumerate() {
            if self.allowed_tools[..i].contains(t) {
                return Err(Invalid::new(
                    format!("allowed_tools[{i}]"),
                    format!("`{t}` is listed twice"),
                ));
            }
        }
        let model = crate::Model::declared(self.model.as_deref(), self.model_version.as_deref())?;
        if self.description.len() > 1024 {
            return Err(Invalid::new("description", "must be at most 1024 bytes"));
        }
        Ok(Agent {
            spiffe_id: SpiffeId::new(trust_domain.clone(), self.name.clone()).to_string(),
            name: self.name,
            owner: self.owner,
            environment: self.environment,
            allowed_tools: self.allowed_tools,
            description: self.description,
            state: AgentState::Active,
            enrolled_key: None,
            created_at: now,
            model,
        })
    }
}
