//! Secrets as metadata: who owns an upstream credential, what it is for,
//! which exceptions it carries. The value itself never enters this crate.

use crate::{Invalid, OwnerName, SecretName, ToolName, UnixTime};
use serde::{Deserialize, Serialize};

closed_enum!(
    /// What kind of credential it is: each class has its own inventory
    /// and its own rotation policy.
    SecretClass, "class", {
        /// Model-provider API keys.
        Model => "model",
        /// Tokens for the tools agents call.
        Tool => "tool",
        /// Vector stores and document connectors.
        Retrieval => "retrieval",
        /// CI/CD and cloud credentials.
        Deployment => "deployment",
        /// Database logins.
        Database => "database",
        /// A person's own credential, tolerated for a time.
        HumanException => "human-exception",
    }
);

/// An upstream credential the broker keeps for one tool, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub name: SecretName,
    pub tool: ToolName,
    pub class: SecretClass,
    pub owner: OwnerName,
    /// A person's own credential: an exception, so it must expire.
    pub human_credential: bool,
    /// Used by several agents: an exception worth seeing in every listing.
    pub shared: bool,
    pub expires_at: Option<UnixTime>,
    pub description: String,
    /// Starts at 1; each rotation adds one.
    pub version: u32,
    pub created_at: UnixTime,
    pub rotated_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
}

impl Secret {
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Say what the credential is now, at a rotation: a person's token
    /// replaced by an application's stops being a human credential; one
    /// that becomes a `human-exception` must already carry an expiry.
    pub fn reclassify(&mut self, class: SecretClass) -> Result<(), Invalid> {
        let human = class == SecretClass::HumanException;
        if human && self.expires_at.is_none() {
            return Err(Invalid::new(
                "class",
                "a human-exception needs an expiry date; store it anew with one",
            ));
        }
        self.class = class;
        self.human_credential = human;
        Ok(())
    }
}

/// Metadata of a secret being stored, validated by [`NewSecret::into_secret`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    pub name: SecretName,
    pub tool: ToolName,
    pub class: SecretClass,
    pub owner: OwnerName,
    #[serde(default)]
    pub human_credential: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub expires_at: Option<UnixTime>,
    #[serde(default)]
    pub description: String,
}

impl NewSecret {
    pub fn into_secret(self, now: UnixTime) -> Result<Secret, Invalid> {
        // The class says it outright; the flag stays for tool secrets that
        // are a person's token (a `ghp_` used as the github tool's key).
        let human_credential = self.human_credential || self.class == SecretClass::HumanException;
        if human_credential && self.expires_at.is_none() {
            return Err(Invalid::new(
                "expires_at",
                "a human_credential secret is an exception and needs an expiry date",
            ));
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(Invalid::new("expires_at", "must be in the future"));
        }
        if self.description.len() > 1024 {
            return Err(Invalid::new("description", "must be at most 1024 bytes"));
        }
        Ok(Secret {
            name: self.name,
            tool: self.tool,
            class: self.class,
            owner: self.owner,
            human_credential,
            shared: self.shared,
            expires_at: self.expires_at,
            description: self.description,
            version: 1,
            created_at: now,
            rotated_at: None,
            last_used_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(v: serde_json::Value) -> Result<NewSecret, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn human_credentials_need_a_future_expiry() {
        let base = serde_json::json!({"name": "gh", "tool": "github", "class": "tool",
            "owner": "platform", "human_credential": true});
        let e = new(base.clone()).unwrap().into_secret(100).unwrap_err();
        assert_eq!(e.field, "expires_at");
        let mut past = base.clone();
        past["expires_at"] = 50.into();
        assert!(new(past).unwrap().into_secret(100).is_err());
        let mut ok = base;
        ok["expires_at"] = 200.into();
        let s = new(ok).unwrap().into_secret(100).unwrap();
        assert_eq!(s.version, 1);
        assert!(!s.is_expired(199) && s.is_expired(200));
    }

    #[test]
    fn reclassifying_says_whether_it_is_a_persons_credential() {
        let v = serde_json::json!({"name": "gh", "tool": "github", "class": "human-exception",
            "owner": "platform", "expires_at": 200});
        let mut s = new(v).unwrap().into_secret(100).unwrap();
        s.reclassify(SecretClass::Tool).unwrap();
        assert!(!s.human_credential && s.class == SecretClass::Tool);
        s.expires_at = None;
        let e = s.reclassify(SecretClass::HumanException).unwrap_err();
        assert_eq!(e.field, "class");
        assert_eq!(s.class, SecretClass::Tool, "unchanged when refused");
    }

    #[test]
    fn the_human_exception_class_is_a_human_credential() {
        let v = serde_json::json!({"name": "gh", "tool": "github", "class": "human-exception",
            "owner": "platform"});
        let e = new(v.clone()).unwrap().into_secret(100).unwrap_err();
        assert_eq!(e.field, "expires_at");
        let mut ok = v;
        ok["expires_at"] = 200.into();
        assert!(new(ok).unwrap().into_secret(100).unwrap().human_credential);
    }

    #[test]
    fn class_and_unknown_fields_are_checked() {
        let e = new(
            serde_json::json!({"name": "gh", "tool": "github", "class": "password",
            "owner": "platform"}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("model, tool, retrieval, deployment, database, human-exception")
        );
        let e = new(
            serde_json::json!({"name": "gh", "tool": "github", "class": "tool",
            "owner": "platform", "value": "x"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("value"));
    }
}
