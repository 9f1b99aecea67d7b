//! How long each class of secret may live and lie unused. AI credentials
//! are rotated faster than ordinary application secrets: a model-provider
//! key is a billable bearer key with no scope of its own and the most
//! commonly leaked kind (notebooks, `.env` files, MCP configs), and a
//! person's credential carries everything that person can do and leaves
//! with them.

use crate::{Invalid, Secret, SecretClass, UnixTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// One class's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPolicy {
    /// Longest time since it was stored or last rotated.
    pub max_age_secs: i64,
    /// Unused for this long (or never used this long after it was
    /// stored): revoke it.
    pub unused_after_secs: i64,
    /// The longest task that may use a tool holding a secret of this class.
    pub max_task_ttl_secs: i64,
}

impl ClassPolicy {
    /// The defaults, strictest for model keys and a person's credential.
    pub fn default_for(class: SecretClass) -> ClassPolicy {
        let (age, unused, ttl) = match class {
            SecretClass::Model => (30 * DAY, 14 * DAY, HOUR),
            SecretClass::HumanException => (14 * DAY, 7 * DAY, HOUR),
            SecretClass::Deployment => (30 * DAY, 30 * DAY, HOUR),
            SecretClass::Tool | SecretClass::Retrieval | SecretClass::Database => {
                (90 * DAY, 30 * DAY, 8 * HOUR)
            }
        };
        ClassPolicy {
            max_age_secs: age,
            unused_after_secs: unused,
            max_task_ttl_secs: ttl,
        }
    }

    fn check(&self, class: SecretClass) -> Result<(), Invalid> {
        for (field, v) in [
            ("max_age_secs", self.max_age_secs),
            ("unused_after_secs", self.unused_after_secs),
            ("max_task_ttl_secs", self.max_task_ttl_secs),
        ] {
            if !(1..=3650 * DAY).contains(&v) {
                return Err(Invalid::new(
                    format!("rotation.{class}.{field}"),
                    "must be between 1 second and 10 years",
                ));
            }
        }
        Ok(())
    }
}

/// Every class's limits: the defaults, with the configured ones over them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RotationPolicy(BTreeMap<SecretClass, ClassPolicy>);

impl RotationPolicy {
    pub fn new(configured: BTreeMap<SecretClass, ClassPolicy>) -> Result<Self, Invalid> {
        for (class, p) in &configured {
            p.check(*class)?;
        }
        Ok(RotationPolicy(configured))
    }

    pub fn of(&self, class: SecretClass) -> ClassPolicy {
        self.0
            .get(&class)
            .copied()
            .unwrap_or_else(|| ClassPolicy::default_for(class))
    }

    /// Every class with its limits, in class order.
    pub fn all(&self) -> Vec<(SecretClass, ClassPolicy)> {
        SecretClass::ALL.iter().map(|c| (*c, self.of(*c))).collect()
    }

    pub fn status(&self, secret: &Secret, now: UnixTime) -> RotationStatus {
        let p = self.of(secret.class);
        let rotation_due_at = secret.rotated_at.unwrap_or(secret.created_at) + p.max_age_secs;
        let idle_since = secret.last_used_at.unwrap_or(secret.created_at);
        RotationStatus {
            rotation_due_at,
            overdue: now >= rotation_due_at,
            unused: now >= idle_since + p.unused_after_secs,
            idle_since,
        }
    }
}

/// Where one secret stands against its class's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatus {
    pub rotation_due_at: UnixTime,
    pub overdue: bool,
    /// Its last use, or its creation if it was never used.
    pub idle_since: UnixTime,
    pub unused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(class: SecretClass) -> Secret {
        serde_json::from_value(serde_json::json!({"name": "k", "tool": "t", "class": class,
            "owner": "o", "human_credential": false, "shared": false, "expires_at": null,
            "description": "", "version": 1, "created_at": 0, "rotated_at": null,
            "last_used_at": null}))
        .unwrap()
    }

    #[test]
    fn model_and_human_keys_are_held_to_stricter_limits_than_tool_keys() {
        let tool = ClassPolicy::default_for(SecretClass::Tool);
        for c in [SecretClass::Model, SecretClass::HumanException] {
            let p = ClassPolicy::default_for(c);
            assert!(p.max_age_secs < tool.max_age_secs, "{c}");
            assert!(p.unused_after_secs < tool.unused_after_secs, "{c}");
            assert!(p.max_task_ttl_secs < tool.max_task_ttl_secs, "{c}");
        }
    }

    #[test]
    fn age_counts_from_the_last_rotation_and_idleness_from_the_last_use() {
        let policy = RotationPolicy::default();
        let mut s = secret(SecretClass::Model);
        let st = policy.status(&s, 30 * DAY - 1);
        assert_eq!(st.rotation_due_at, 30 * DAY);
        assert!(!st.overdue && st.unused, "never used in 14 days");
        assert!(policy.status(&s, 30 * DAY).overdue);
        s.rotated_at = Some(20 * DAY);
        s.last_used_at = Some(29 * DAY);
        let st = policy.status(&s, 30 * DAY);
        assert!(!st.overdue && !st.unused);
        assert_eq!(st.idle_since, 29 * DAY);
    }

    #[test]
    fn configured_limits_override_the_defaults_and_are_bounded() {
        let mine = ClassPolicy {
            max_age_secs: DAY,
            unused_after_secs: DAY,
            max_task_ttl_secs: 600,
        };
        let p = RotationPolicy::new([(SecretClass::Tool, mine)].into()).unwrap();
        assert_eq!(p.of(SecretClass::Tool), mine);
        assert_eq!(
            p.of(SecretClass::Model),
            ClassPolicy::default_for(SecretClass::Model)
        );
        let bad = ClassPolicy {
            max_task_ttl_secs: 0,
            ..mine
        };
        let e = RotationPolicy::new([(SecretClass::Model, bad)].into()).unwrap_err();
        assert_eq!(e.field, "rotation.model.max_task_ttl_secs");
    }
}
