use crate::{Action, Invalid, OwnerName, ToolName, UnixTime};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! closed_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Invalid::new($field, format!(
                        "`{}` is not one of: {}",
                        s.chars().take(40).collect::<String>(),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> { s.parse() }
        }
        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str { v.as_str() }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

closed_enum!(
    /// Where a workload runs. Tokens never cross environments.
    Environment, "environment", {
        Sandbox => "sandbox",
        Staging => "staging",
        Production => "production",
    }
);

closed_enum!(
    /// How much harm misuse of a tool can do; ordered from least to most.
    Sensitivity, "sensitivity", {
        Public => "public",
        Internal => "internal",
        Confidential => "confidential",
        Restricted => "restricted",
    }
);

/// Longest credential any tool may allow (24 h); short is the point.
pub const MAX_TOOL_TTL_SECS: u32 = 86_400;

/// A registered tool, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: ToolName,
    pub audience: String,
    pub owner: OwnerName,
    pub environment: Environment,
    pub sensitivity: Sensitivity,
    pub max_ttl_secs: u32,
    pub actions: Vec<Action>,
    pub description: String,
    pub created_at: UnixTime,
}

impl Tool {
    pub fn has_action(&self, action: &Action) -> bool {
        self.actions.contains(action)
    }
}

/// A tool registration request, validated by [`NewTool::into_tool`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTool {
    pub name: ToolName,
    pub audience: String,
    pub owner: OwnerName,
    pub environment: Environment,
    pub sensitivity: Sensitivity,
    pub max_ttl_secs: u32,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub description: String,
}

impl NewTool {
    pub fn into_tool(self, now: UnixTime) -> Result<Tool, Invalid> {
        check_audience(&self.audience)?;
        if self.max_ttl_secs == 0 || self.max_ttl_secs > MAX_TOOL_TTL_SECS {
            return Err(Invalid::new(
                "max_ttl_secs",
                format!("must be between 1 and {MAX_TOOL_TTL_SECS}"),
            ));
        }
        if self.actions.is_empty() {
            return Err(Invalid::new("actions", "must list at least one action"));
        }
        for (i, a) in self.actions.iter().enumerate() {
            if self.actions[..i].contains(a) {
                return Err(Invalid::new(
                    format!("actions[{i}]"),
                    format!("`{a}` is listed twice"),
                ));
            }
        }
        if self.description.len() > 1024 {
            return Err(Invalid::new("description", "must be at most 1024 bytes"));
        }
        Ok(Tool {
            name: self.name,
            audience: self.audience,
            owner: self.owner,
            environment: self.environment,
            sensitivity: self.sensitivity,
            max_ttl_secs: self.max_ttl_secs,
            actions: self.actions,
            description: self.description,
            created_at: now,
        })
    }
}

/// An audience is an absolute URI (RFC 8707 `resource`): `https://…`,
/// `http://…` or a `urn:`. No fragment, no whitespace.
fn check_audience(aud: &str) -> Result<(), Invalid> {
    let ok_scheme = ["https://", "http://", "urn:"]
        .iter()
        .any(|p| aud.len() > p.len() && aud.starts_with(p));
    if !ok_scheme {
        return Err(Invalid::new(
            "audience",
            "must be an absolute https://, http:// or urn: URI",
        ));
    }
    if aud.len() > 512
        || aud.contains('#')
        || aud.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Invalid::new(
            "audience",
            "must be at most 512 characters with no fragment or whitespace",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_tool() -> NewTool {
        serde_json::from_value(serde_json::json!({
            "name": "github", "audience": "https://api.github.com", "owner": "platform",
            "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
            "actions": ["issues:read", "issues:write"]
        }))
        .unwrap()
    }

    #[test]
    fn enum_error_names_field_and_choices() {
        let err = "prod".parse::<Environment>().unwrap_err();
        assert_eq!(err.field, "environment");
        assert!(err.message.contains("sandbox, staging, production"));
    }

    #[test]
    fn sensitivity_is_ordered() {
        assert!(Sensitivity::Public < Sensitivity::Restricted);
        assert!(Sensitivity::Internal < Sensitivity::Confidential);
    }

    #[test]
    fn tool_validation_names_fields() {
        assert!(new_tool().into_tool(0).is_ok());
        let mut t = new_tool();
        t.audience = "api.github.com".into();
        assert_eq!(t.into_tool(0).unwrap_err().field, "audience");
        let mut t = new_tool();
        t.max_ttl_secs = 0;
        assert_eq!(t.into_tool(0).unwrap_err().field, "max_ttl_secs");
        let mut t = new_tool();
        t.actions.push(t.actions[0].clone());
        assert_eq!(t.into_tool(0).unwrap_err().field, "actions[2]");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<NewTool, _> = serde_json::from_value(serde_json::json!({
            "name": "x", "audience": "urn:x", "owner": "o", "environment": "staging",
            "sensitivity": "internal", "max_ttl_secs": 1, "actions": ["a"], "colour": "red"
        }));
        assert!(r.unwrap_err().to_string().contains("colour"));
    }
}
