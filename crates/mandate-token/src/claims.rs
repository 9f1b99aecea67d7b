//! Claim sets Mandate issues.

use mandate_core::ResourcePattern;
use serde::{Deserialize, Serialize};

/// `type` of Mandate's RFC 9396 authorization details entry.
pub const DETAIL_TYPE: &str = "mandate";

/// One RFC 9396 `authorization_details` entry: what the grant allows on one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationDetail {
    #[serde(rename = "type")]
    pub type_: String,
    pub tool: String,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
}

impl AuthorizationDetail {
    /// Is `resource` inside this grant? No listed resources means any; a
    /// pattern that does not parse matches nothing (fail closed).
    pub fn covers_resource(&self, resource: &str) -> bool {
        self.resources.is_empty()
            || self
                .resources
                .iter()
                .filter_map(|r| ResourcePattern::parse(r).ok())
                .any(|p| p.matches(resource))
    }

    /// Does this grant list `action`?
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

/// RFC 8693 §4.1 `act`: the party acting, with its task; a nested `act`
/// is who acted before it (who delegated to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting agent's SPIFFE ID.
    pub sub: String,
    /// The task it acts under.
    pub txn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The `act` claim for `holder` (SPIFFE ID) acting under `task`, with
    /// the earlier actors of `ancestors` (SPIFFE ID and task, the root
    /// first) nested most recent first. The root itself is the token's
    /// `sub`, not an actor. `None` for a task nobody delegated.
    pub fn chain(holder: &str, task: &str, ancestors: &[(String, String)]) -> Option<Actor> {
        if ancestors.is_empty() {
            return None;
        }
        let earlier = ancestors[1..].iter().fold(None, |inner, (sub, txn)| {
            Some(Box::new(Actor {
                sub: sub.clone(),
                txn: txn.clone(),
                act: inner,
            }))
        });
        Some(Actor {
            sub: holder.to_owned(),
            txn: task.to_owned(),
            act: earlier,
        })
    }
}

/// RFC 9068 access token claims, plus `txn` (the task) and the granted scope.
/// A delegated task's token is RFC 8693 delegation: `sub` is the root
/// task's agent, on whose behalf the whole chain acts, and `act` names the
/// current actor (the holder) outermost, with every earlier one nested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The agent's SPIFFE ID; for a delegated task, the root task's agent.
    pub sub: String,
    /// The tool's audience URI (exactly one).
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    /// The task id: every grant belongs to one task.
    pub txn: String,
    /// Space-separated actions: a coarse mirror of `authorization_details`.
    pub scope: String,
    pub authorization_details: Vec<AuthorizationDetail>,
    /// Proof-of-possession binding (RFC 7800 `cnf`, RFC 9449 `jkt`): the
    /// token is only good with a DPoP proof signed by this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Delegated tasks only: who acts, outermost first (see above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Delegated tasks only: the root task of the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_txn: Option<String>,
    /// Present (`true`) on every token of a break-glass task: an emergency
    /// grant that skipped approval, for resource servers and logs to see.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breakglass: bool,
}

/// An access token whose signature, `typ` and issuer checked out, and the
/// key that signed it (which may be withdrawn later). Times, revocation and
/// everything the token is used for are checked on every use, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub kid: String,
    pub claims: AccessClaims,
}

/// `cnf` of a DPoP-bound token: the SHA-256 JWK thumbprint of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// An identity session: proves which agent this is, grants no tool access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub sub: String,
    /// Always the broker's own issuer: a session is only good at the broker.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    /// How the agent proved itself: `jwt_bearer` or `private_key_jwt`.
    pub amr: Vec<String>,
    /// The model the agent runs on, as declared at login (or on its
    /// record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}

impl SessionClaims {
    /// The declared model, as the domain names it.
    pub fn model(&self) -> Option<mandate_core::Model> {
        self.model.as_ref().map(|m| mandate_core::Model {
            model: m.clone(),
            version: self.model_version.clone(),
        })
    }
}

impl AccessClaims {
    /// The agent holding the token (the one whose task `txn` is): the
    /// outermost actor of a delegated token, else `sub`.
    pub fn holder(&self) -> &str {
        self.act.as_ref().map_or(&self.sub, |a| &a.sub)
    }

    /// Every (agent, task) the token stands on besides its holder's own:
    /// the root (`sub`, `root_txn`), then each earlier actor, most recent
    /// first. Empty for a task nobody delegated.
    pub fn ancestors(&self) -> Vec<(&str, &str)> {
        let Some(act) = &self.act else {
            return Vec::new();
        };
        let mut out = vec![(self.sub.as_str(), self.root_txn.as_deref().unwrap_or(""))];
        let mut next = act.act.as_deref();
        while let Some(a) = next {
            out.push((a.sub.as_str(), a.txn.as_str()));
            next = a.act.as_deref();
        }
        out
    }

    /// The `authorization_details` entry for `tool`, if the grant has one.
    pub fn detail_for(&self, tool: &str) -> Option<&AuthorizationDetail> {
        self.authorization_details.iter().find(|d| d.tool == tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_for_test() -> AccessClaims {
        AccessClaims {
            iss: "https://mandate.example".into(),
            sub: "spiffe://example.org/agent/bot".into(),
            aud: "https://api.github.com".into(),
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: "j".into(),
            client_id: "bot".into(),
            txn: "t".into(),
            scope: "issues:read tickets:write".into(),
            authorization_details: vec![],
            cnf: None,
            act: None,
            root_txn: None,
            breakglass: false,
        }
    }

    #[test]
    fn a_delegated_chain_nests_the_current_actor_outermost() {
        let ancestors = [
            ("spiffe://t/agent/a".to_owned(), "task_a".to_owned()),
            ("spiffe://t/agent/b".to_owned(), "task_b".to_owned()),
            ("spiffe://t/agent/c".to_owned(), "task_c".to_owned()),
        ];
        let act = Actor::chain("spiffe://t/agent/d", "task_d", &ancestors).unwrap();
        assert_eq!(
            serde_json::to_value(&act).unwrap(),
            serde_json::json!({"sub": "spiffe://t/agent/d", "txn": "task_d",
                "act": {"sub": "spiffe://t/agent/c", "txn": "task_c",
                    "act": {"sub": "spiffe://t/agent/b", "txn": "task_b"}}})
        );
        assert!(Actor::chain("spiffe://t/agent/d", "task_d", &[]).is_none());
        let mut c = claims_for_test();
        c.sub = ancestors[0].0.clone();
        c.root_txn = Some("task_a".into());
        c.act = Some(act);
        assert_eq!(c.holder(), "spiffe://t/agent/d");
        assert_eq!(
            c.ancestors(),
            [
                ("spiffe://t/agent/a", "task_a"),
                ("spiffe://t/agent/c", "task_c"),
                ("spiffe://t/agent/b", "task_b")
            ]
        );
        let plain = claims_for_test();
        assert_eq!(plain.holder(), plain.sub);
        assert!(plain.ancestors().is_empty());
    }

    fn detail(resources: &[&str]) -> AuthorizationDetail {
        AuthorizationDetail {
            type_: DETAIL_TYPE.into(),
            tool: "github".into(),
            actions: vec!["issues:read".into()],
            resources: resources.iter().map(|r| r.to_string()).collect(),
            environment: Some("staging".into()),
            sensitivity: None,
        }
    }

    #[test]
    fn detail_for_picks_the_entry_of_the_named_tool_only() {
        // The proxy and broker judge a request by this entry: another
        // tool's entry must never stand in for it.
        let mut jira = detail(&["project:ops"]);
        jira.tool = "jira".into();
        jira.actions = vec!["tickets:write".into()];
        let claims = AccessClaims {
            authorization_details: vec![detail(&[]), jira.clone()],
            ..claims_for_test()
        };
        assert_eq!(claims.detail_for("jira"), Some(&jira));
        assert_eq!(claims.detail_for("github"), Some(&detail(&[])));
        assert_eq!(claims.detail_for("gitlab"), None);
    }

    #[test]
    fn no_resources_cover_everything() {
        assert!(detail(&[]).covers_resource("repo:acme/widgets"));
    }

    #[test]
    fn patterns_cover_by_prefix_and_bad_patterns_cover_nothing() {
        let d = detail(&["repo:acme/*", "repo:other/x"]);
        assert!(d.covers_resource("repo:acme/widgets"));
        assert!(d.covers_resource("repo:other/x"));
        assert!(!d.covers_resource("repo:other/y"));
        assert!(!detail(&["a*b"]).covers_resource("a*b"));
        assert!(d.allows_action("issues:read") && !d.allows_action("issues:write"));
    }
}
