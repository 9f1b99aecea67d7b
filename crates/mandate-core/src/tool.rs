use crate::egress::{EgressHost, Target, parse_egress_hosts};
use crate::{
    Action, Delivery, DeliveryMode, EngineSpec, Invalid, OwnerName, RouteRule, RoutedRequest,
    ToolName, UnixTime, check_upstream,
};
use serde::{Deserialize, Serialize};

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
    /// Base URL the proxy forwards to; absent for tools reached directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// How the proxy maps a request to an action; unmatched is denied.
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    #[serde(default)]
    pub delivery: Delivery,
    /// Tasks holding this tool cannot hand it to a sub-agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_delegation: bool,
    /// Hosts besides the upstream's that a task holding this (`reveal`)
    /// tool may tunnel to through the proxy's egress listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_hosts: Vec<EgressHost>,
    /// A tool that mints a credential per task (a database login) instead
    /// of holding one; its actions are the engine's role names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
}

impl Tool {
    /// This tool changed to `next` (already validated as a new tool), if the
    /// change is allowed: name, audience, owner and environment are fixed
    /// (tokens and tasks are bound to them) and actions may only be added
    /// (live tasks may hold any of them).
    pub fn revise(&self, next: Tool) -> Result<Tool, Invalid> {
        let fixed = [
            ("name", self.name.as_str() == next.name.as_str()),
            ("audience", self.audience == next.audience),
            ("owner", self.owner == next.owner),
            ("environment", self.environment == next.environment),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, same)| !same) {
            return Err(Invalid::new(
                *field,
                "cannot change: tokens and tasks are bound to it; register a new tool instead",
            ));
        }
        if let Some(gone) = self.actions.iter().find(|a| !next.actions.contains(a)) {
            return Err(Invalid::new(
                "actions",
                format!("cannot remove `{gone}`: tasks may hold it; actions may only be added"),
            ));
        }
        Ok(Tool {
            created_at: self.created_at,
            ..next
        })
    }

    pub fn has_action(&self, action: &Action) -> bool {
        self.actions.contains(action)
    }

    /// The action and resource a proxied request stands for, if a rule matches.
    pub fn route(&self, method: &str, path: &str) -> Option<RoutedRequest> {
        crate::route(&self.routes, method, path)
    }

    /// The hosts this tool declares: its upstream's, then `egress_hosts`.
    pub fn declared_hosts(&self) -> impl Iterator<Item = EgressHost> + '_ {
        let upstream = self.upstream.as_deref().and_then(EgressHost::of_upstream);
        upstream
            .into_iter()
            .chain(self.egress_hosts.iter().cloned())
    }

    /// Whether a task holding this tool may tunnel to `target`: only a
    /// `reveal` tool's hosts (an injected tool is reached through the
    /// proxy, whose routes and policy a raw tunnel would bypass).
    pub fn admits_egress(&self, target: &Target) -> bool {
        self.delivery.mode == DeliveryMode::Reveal
            && self.declared_hosts().any(|h| h.allows(target))
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
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub no_delegation: bool,
    /// As written: `host`, `host:port`, `*.domain`, an IP (IPv6 in brackets).
    #[serde(default)]
    pub egress_hosts: Vec<String>,
    #[serde(default)]
    pub engine: Option<EngineSpec>,
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
        if let Some(u) = &self.upstream {
            check_upstream(u)?;
        }
        if self.routes.len() > 256 {
            return Err(Invalid::new("routes", "at most 256 rules"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.validate(&format!("routes[{i}]"), &self.actions)?;
        }
        if !self.routes.is_empty() && self.upstream.is_none() {
            return Err(Invalid::new(
                "upstream",
                "routes are for the proxy, which needs an upstream base URL",
            ));
        }
        self.delivery.validate()?;
        let egress_hosts = parse_egress_hosts(&self.egress_hosts)?;
        if !egress_hosts.is_empty() && self.delivery.mode != DeliveryMode::Reveal {
            return Err(Invalid::new(
                "egress_hosts",
                "only a `reveal` tool declares hosts for egress; an injected tool is reached through the proxy",
            ));
        }
        if let Some(engine) = &self.engine {
            engine.check()?;
            let mut roles = engine.role_names();
            roles.sort_unstable();
            let mut actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
            actions.sort_unstable();
            if roles != actions {
                return Err(Invalid::new(
                    "actions",
                    "a tool with an engine has its roles as its actions, exactly",
                ));
            }
            if self.upstream.is_some() || !egress_hosts.is_empty() {
                return Err(Invalid::new(
                    "engine",
                    "a tool with an engine mints credentials; it has no upstream or egress hosts",
                ));
            }
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
            upstream: self.upstream,
            routes: self.routes,
            delivery: self.delivery,
            no_delegation: self.no_delegation,
            egress_hosts,
            engine: self.engine,
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
    fn revisions_keep_bindings_and_only_add_actions() {
        let current = new_tool().into_tool(7).unwrap();
        let mut next = new_tool();
        next.max_ttl_secs = 60;
        next.actions.push(Action::parse("pulls:read").unwrap());
        next.upstream = Some("https://api.github.com".into());
        let revised = current.revise(next.into_tool(99).unwrap()).unwrap();
        assert_eq!((revised.created_at, revised.max_ttl_secs), (7, 60));
        assert_eq!(revised.actions.len(), 3);

        type Edit = (&'static str, fn(&mut NewTool));
        let edits: [Edit; 4] = [
            ("audience", |t| t.audience = "https://other.example".into()),
            ("owner", |t| {
                t.owner = OwnerName::parse("someone-else").unwrap()
            }),
            ("environment", |t| t.environment = Environment::Production),
            ("actions", |t| t.actions.truncate(1)),
        ];
        for (field, edit) in edits {
            let mut t = new_tool();
            edit(&mut t);
            let err = current.revise(t.into_tool(0).unwrap()).unwrap_err();
            assert_eq!(err.field, field);
        }
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

    fn field_of(t: NewTool) -> Option<String> {
        t.into_tool(0).err().map(|e| e.field)
    }

    #[test]
    fn has_action_lists_exactly_the_registered_actions() {
        let t = new_tool().into_tool(0).unwrap();
        assert!(t.has_action(&Action::parse("issues:read").unwrap()));
        assert!(!t.has_action(&Action::parse("repo:delete").unwrap()));
    }

    #[test]
    fn a_tool_routes_requests_by_its_rules() {
        let mut t = new_tool();
        t.upstream = Some("https://api.github.com".into());
        t.routes = vec![RouteRule {
            method: "GET".into(),
            path: "/repos/{o}/{r}/issues".into(),
            action: Action::parse("issues:read").unwrap(),
            resource: Some("repo:{o}/{r}".into()),
        }];
        let t = t.into_tool(0).unwrap();
        let r = t.route("GET", "/repos/acme/widgets/issues").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("issues:read", "repo:acme/widgets")
        );
        assert!(t.route("GET", "/repos/acme/widgets").is_none());
    }

    #[test]
    fn max_ttl_is_at_most_a_day() {
        let with_ttl = |s| {
            let mut t = new_tool();
            t.max_ttl_secs = s;
            field_of(t)
        };
        assert_eq!(with_ttl(MAX_TOOL_TTL_SECS), None);
        assert_eq!(
            with_ttl(MAX_TOOL_TTL_SECS + 1).as_deref(),
            Some("max_ttl_secs")
        );
    }

    #[test]
    fn description_is_at_most_1024_bytes() {
        let with = |n| {
            let mut t = new_tool();
            t.description = "d".repeat(n);
            field_of(t)
        };
        assert_eq!(with(1024), None);
        assert_eq!(with(1025).as_deref(), Some("description"));
    }

    #[test]
    fn a_tool_has_at_most_256_route_rules() {
        let with = |n| {
            let mut t = new_tool();
            t.upstream = Some("https://api.github.com".into());
            t.routes = (0..n)
                .map(|i| RouteRule {
                    method: "GET".into(),
                    path: format!("/r{i}"),
                    action: Action::parse("issues:read").unwrap(),
                    resource: None,
                })
                .collect();
            field_of(t)
        };
        assert_eq!(with(256), None);
        assert_eq!(with(257).as_deref(), Some("routes"));
    }

    #[test]
    fn audience_is_an_absolute_uri_without_fragment_or_whitespace() {
        let aud = |a: &str| {
            let mut t = new_tool();
            t.audience = a.into();
            field_of(t)
        };
        for ok in ["https://x", "http://x", "urn:x"] {
            assert_eq!(aud(ok), None, "{ok}");
        }
        let long = format!("https://{}", "a".repeat(512 - "https://".len()));
        assert_eq!(aud(&long), None);
        for bad in [
            "https://",
            "urn:",
            "ftp://x",
            &format!("{long}a"),
            "https://x/#frag",
            "https://x/a b",
            "https://x/\u{7f}",
            "https://x/\n",
        ] {
            assert_eq!(aud(bad).as_deref(), Some("audience"), "{bad:?}");
        }
    }

    #[test]
    fn only_a_reveal_tools_hosts_admit_egress() {
        let mut t = new_tool();
        t.upstream = Some("https://api.github.com".into());
        t.egress_hosts = vec![
            "uploads.github.com".into(),
            "*.githubusercontent.com".into(),
        ];
        assert_eq!(
            field_of(t.clone()).as_deref(),
            Some("egress_hosts"),
            "an injected tool"
        );
        t.delivery = Delivery {
            mode: DeliveryMode::Reveal,
            ..Delivery::default()
        };
        let tool = t.clone().into_tool(0).unwrap();
        let to = |s: &str| Target::parse(s).unwrap();
        assert!(
            tool.admits_egress(&to("api.github.com:443")),
            "the upstream's host"
        );
        assert!(tool.admits_egress(&to("uploads.github.com:443")));
        assert!(tool.admits_egress(&to("objects.githubusercontent.com:443")));
        assert!(!tool.admits_egress(&to("api.github.com:80")));
        assert!(!tool.admits_egress(&to("evil.example:443")));
        let json = serde_json::to_value(&tool).unwrap();
        assert_eq!(
            json["egress_hosts"],
            serde_json::json!(["uploads.github.com:443", "*.githubusercontent.com:443"])
        );
        let back: Tool = serde_json::from_value(json).unwrap();
        assert_eq!(back, tool);
        // A tool stored before egress_hosts existed reads with none.
        let mut old = serde_json::to_value(&tool).unwrap();
        old.as_object_mut().unwrap().remove("egress_hosts");
        let old: Tool = serde_json::from_value(old).unwrap();
        assert!(old.egress_hosts.is_empty());
        assert!(old.admits_egress(&to("api.github.com:443")));
        // The same upstream on an injected tool admits nothing.
        t.egress_hosts.clear();
        t.delivery = Delivery::default();
        assert!(
            !t.into_tool(0)
                .unwrap()
                .admits_egress(&to("api.github.com:443"))
        );
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
