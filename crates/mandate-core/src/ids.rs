//! Identifiers. Each is a newtype that can only hold a valid value, so code
//! past the API edge never re-checks them.

use crate::Invalid;
use serde::{Deserialize, Serialize};
use std::fmt;

fn check_name(field: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > 63 {
        return Err(Invalid::new(field, "must be 1 to 63 characters"));
    }
    let first_ok = s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit();
    let all_ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if !first_ok || !all_ok {
        return Err(Invalid::new(
            field,
            format!(
                "`{s}` must be lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                check_name($field, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                check_name($field, &s)?;
                Ok(Self(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// Name of an agent, unique within the trust domain.
    AgentName, "agent"
);
name_type!(
    /// Name of a tool.
    ToolName, "tool"
);
name_type!(
    /// Name of an owning team or service.
    OwnerName, "owner"
);
name_type!(
    /// Name of an upstream credential the broker keeps.
    SecretName, "secret"
);

/// A SPIFFE trust domain (`example.org`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
            });
        if !ok {
            return Err(Invalid::new(
                "trust_domain",
                "must be lowercase letters, digits, `-`, `.` or `_`",
            ));
        }
        Ok(TrustDomain(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for TrustDomain {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<TrustDomain> for String {
    fn from(v: TrustDomain) -> String {
        v.0
    }
}

/// `spiffe://<trust-domain>/agent/<name>`: the only SPIFFE ID shape Mandate
/// issues to agents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: TrustDomain,
    pub agent: AgentName,
}

impl SpiffeId {
    pub fn new(trust_domain: TrustDomain, agent: AgentName) -> Self {
        SpiffeId {
            trust_domain,
            agent,
        }
    }
    pub fn parse(field: &str, s: &str) -> Result<Self, Invalid> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| Invalid::new(field, "must start with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| Invalid::new(field, "must be spiffe://<trust-domain>/agent/<name>"))?;
        let name = path
            .strip_prefix("agent/")
            .ok_or_else(|| Invalid::new(field, "path must be /agent/<name>"))?;
        Ok(SpiffeId {
            trust_domain: TrustDomain::parse(td).map_err(|e| Invalid::new(field, e.message))?,
            agent: AgentName::parse(name).map_err(|e| Invalid::new(field, e.message))?,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/agent/{}", self.trust_domain.0, self.agent)
    }
}

/// Ids made from 16 random bytes (the caller supplies them: core does no I/O).
pub trait RandomId: Sized {
    fn from_random(bytes: [u8; 16]) -> Self;
}

fn hex32(bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                match s.strip_prefix($prefix) {
                    Some(rest) if is_hex32(rest) => Ok(Self(s.to_owned())),
                    _ => Err(Invalid::new(
                        $field,
                        format!("`{}` is not a valid id (expected {}<32 hex digits>)", truncate(s), $prefix),
                    )),
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl RandomId for $name {
            fn from_random(bytes: [u8; 16]) -> Self {
                Self(format!("{}{}", $prefix, hex32(bytes)))
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Echo at most 40 characters of bad input back in an error.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

random_id!(
    /// A task (mandate) id.
    TaskId, "task_", "task_id"
);
random_id!(
    /// A JWT id: identifies one minted token (grant or session).
    Jti, "jti_", "jti"
);
random_id!(
    /// An approval request's id.
    ApprovalId, "apr_", "approval_id"
);
random_id!(
    /// A dynamic credential's lease.
    LeaseId, "lease_", "lease_id"
);
random_id!(
    /// A webhook endpoint that audit events are delivered to.
    WebhookId, "whk_", "id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_uppercase_and_slashes() {
        assert!(AgentName::parse("Deploy").is_err());
        assert!(AgentName::parse("a/b").is_err());
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse(&"a".repeat(64)).is_err());
        assert!(AgentName::parse("ci-bot.v2").is_ok());
    }

    #[test]
    fn spiffe_id_round_trips() {
        let id = SpiffeId::parse("sub", "spiffe://example.org/agent/triage").unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/agent/triage");
        assert!(SpiffeId::parse("sub", "spiffe://example.org/workload/x").is_err());
        assert!(SpiffeId::parse("sub", "https://example.org/agent/x").is_err());
    }

    #[test]
    fn task_id_must_have_prefix_and_hex() {
        let id = TaskId::from_random([0xab; 16]);
        assert_eq!(TaskId::parse(id.as_str()).unwrap(), id);
        assert!(TaskId::parse("task_xyz").is_err());
        let err = TaskId::parse("jti_00000000000000000000000000000000").unwrap_err();
        assert_eq!(err.field, "task_id");
    }
}
