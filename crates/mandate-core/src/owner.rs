//! Owners: the accountable team or service behind agents, tools and
//! secrets. A person may own things for a while (a prototype, an
//! exception), but never be the only one answerable for a production agent:
//! when that person leaves, nobody is.

use crate::{Environment, Invalid, OwnerName, UnixTime};
use serde::{Deserialize, Serialize};

closed_enum!(
    /// What an owner is.
    OwnerKind, "kind", {
        /// A group of people with an on-call rotation.
        Team => "team",
        /// A service (a platform, a pipeline) accountable through its team.
        Service => "service",
        /// One person.
        Person => "person",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub name: OwnerName,
    /// Owners registered before kinds existed were teams.
    #[serde(default = "team")]
    pub kind: OwnerKind,
    pub description: String,
    pub created_at: UnixTime,
}

fn team() -> OwnerKind {
    OwnerKind::Team
}

impl OwnerKind {
    /// Whether an owner of this kind outlasts any one person.
    pub fn is_accountable(self) -> bool {
        self != OwnerKind::Person
    }

    /// A production agent answers to a team or a service, never to one
    /// person alone.
    pub fn may_own_agent_in(self, env: Environment) -> Result<(), Invalid> {
        if env == Environment::Production && !self.is_accountable() {
            return Err(Invalid::new(
                "owner",
                "a production agent must be owned by a team or a service, not by a person alone",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_cannot_solely_own_a_production_agent() {
        let e = OwnerKind::Person
            .may_own_agent_in(Environment::Production)
            .unwrap_err();
        assert_eq!(e.field, "owner");
        assert!(
            OwnerKind::Person
                .may_own_agent_in(Environment::Staging)
                .is_ok()
        );
        for k in [OwnerKind::Team, OwnerKind::Service] {
            assert!(k.may_own_agent_in(Environment::Production).is_ok());
        }
    }

    #[test]
    fn kind_defaults_to_team_and_rejects_unknown() {
        let o: Owner = serde_json::from_value(
            serde_json::json!({"name": "platform", "description": "", "created_at": 1}),
        )
        .unwrap();
        assert_eq!(o.kind, OwnerKind::Team);
        let e = "bot".parse::<OwnerKind>().unwrap_err();
        assert!(e.to_string().contains("team, service, person"), "{e}");
    }
}
