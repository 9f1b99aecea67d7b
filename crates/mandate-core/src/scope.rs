//! Scope: which tools, which actions, which resources. The one rule that
//! matters here is narrowing: a grant's scope is always inside its task's.

use crate::{Invalid, RuleViolation, Tool, ToolName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A tool action such as `issues:read`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Action(String);

impl Action {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b':' | b'-' | b'_' | b'.')
            });
        if !ok {
            return Err(Invalid::new(
                "action",
                format!(
                    "`{}` must be 1 to 64 of lowercase letters, digits, `:`, `-`, `_`, `.`",
                    s.chars().take(40).collect::<String>()
                ),
            ));
        }
        Ok(Action(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Action {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<Action> for String {
    fn from(a: Action) -> String {
        a.0
    }
}
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resource an action applies to: a literal (`repo:acme/widgets`) or a
/// prefix ending in `*` (`repo:acme/*`; `*` alone is every resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourcePattern(String);

impl ResourcePattern {
    pub fn any() -> Self {
        ResourcePattern("*".into())
    }
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 256
            && s.bytes().all(|b| b.is_ascii_graphic())
            && !s[..s.len() - 1].contains('*');
        if !ok {
            return Err(Invalid::new(
                "resource",
                "must be 1 to 256 printable ASCII characters with `*` only at the end",
            ));
        }
        Ok(ResourcePattern(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }
    /// Does this pattern match every resource `other` can match?
    pub fn covers(&self, other: &ResourcePattern) -> bool {
        match (self.prefix(), other.prefix()) {
            (Some(p), Some(q)) => q.starts_with(p),
            (Some(p), None) => other.0.starts_with(p),
            (None, Some(_)) => false,
            (None, None) => self.0 == other.0,
        }
    }
    /// Does this pattern match the concrete resource name `resource`?
    pub fn matches(&self, resource: &str) -> bool {
        match self.prefix() {
            Some(p) => resource.starts_with(p),
            None => self.0 == resource,
        }
    }
}
impl TryFrom<String> for ResourcePattern {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<ResourcePattern> for String {
    fn from(r: ResourcePattern) -> String {
        r.0
    }
}

fn default_resources() -> Vec<ResourcePattern> {
    vec![ResourcePattern::any()]
}

/// One tool's part of a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeItem {
    pub tool: ToolName,
    pub actions: Vec<Action>,
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourcePattern>,
}

impl ScopeItem {
    fn validate(&self) -> Result<(), Invalid> {
        if self.actions.is_empty() {
            return Err(Invalid::new("actions", "must list at least one action"));
        }
        if self.actions.len() > 64 {
            return Err(Invalid::new("actions", "must list at most 64 actions"));
        }
        for (i, a) in self.actions.iter().enumerate() {
            if self.actions[..i].contains(a) {
                return Err(Invalid::new(
                    format!("actions[{i}]"),
                    format!("`{a}` is listed twice"),
                ));
            }
        }
        if self.resources.is_empty() || self.resources.len() > 64 {
            return Err(Invalid::new(
                "resources",
                "must list 1 to 64 resources (omit for `*`)",
            ));
        }
        Ok(())
    }
}

/// A task's whole scope: one item per tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<ScopeItem>", into = "Vec<ScopeItem>")]
pub struct Scope(Vec<ScopeItem>);

impl Scope {
    pub fn items(&self) -> &[ScopeItem] {
        &self.0
    }

    pub fn item(&self, tool: &ToolName) -> Option<&ScopeItem> {
        self.0.iter().find(|i| &i.tool == tool)
    }

    /// Is `item` (the `i`th of a request) within this scope: its tool
    /// here, every action here, every resource pattern only narrower?
    /// Refused naming the first part outside.
    pub fn contains(&self, item: &ScopeItem, i: usize) -> Result<(), RuleViolation> {
        let outside = |field: String, requested: &str| RuleViolation::OutsideScope {
            field,
            requested: requested.to_owned(),
        };
        let mine = self
            .item(&item.tool)
            .ok_or_else(|| outside(format!("scope[{i}].tool"), item.tool.as_str()))?;
        for (j, a) in item.actions.iter().enumerate() {
            if !mine.actions.contains(a) {
                return Err(outside(format!("scope[{i}].actions[{j}]"), a.as_str()));
            }
        }
        for (j, r) in item.resources.iter().enumerate() {
            if !mine.resources.iter().any(|m| m.covers(r)) {
                return Err(outside(format!("scope[{i}].resources[{j}]"), r.as_str()));
            }
        }
        Ok(())
    }

    /// Check the scope against the agent's allowed tools and the tools
    /// themselves (actions exist, same environment). `tool` looks a tool up.
    pub fn check_against<'t>(
        &self,
        agent: &crate::Agent,
        tool: impl Fn(&ToolName) -> Option<&'t Tool>,
    ) -> Result<(), RuleViolation> {
        for (i, item) in self.0.iter().enumerate() {
            let field = format!("scope[{i}]");
            if !agent.allowed_tools.contains(&item.tool) {
                return Err(RuleViolation::ToolNotAllowed {
                    field: format!("{field}.tool"),
                    tool: item.tool.to_string(),
                });
            }
            let Some(t) = tool(&item.tool) else {
                return Err(RuleViolation::ToolNotAllowed {
                    field: format!("{field}.tool"),
                    tool: item.tool.to_string(),
                });
            };
            if t.environment != agent.environment {
                return Err(RuleViolation::EnvironmentMismatch {
                    field: format!("{field}.tool"),
                    tool: t.name.to_string(),
                    tool_env: t.environment.to_string(),
                    agent_env: agent.environment.to_string(),
                });
            }
            for (j, a) in item.actions.iter().enumerate() {
                if !t.has_action(a) {
                    return Err(RuleViolation::UnknownAction {
                        field: format!("{field}.actions[{j}]"),
                        tool: t.name.to_string(),
                        action: a.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The part of this scope a grant for `tool` may carry: the requested
    /// actions/resources (defaulting to all of the tool's item), refused if
    /// any of them lies outside this scope.
    pub fn narrow(
        &self,
        tool: &ToolName,
        actions: Option<&[Action]>,
        resources: Option<&[ResourcePattern]>,
    ) -> Result<ScopeItem, RuleViolation> {
        let mine = self.item(tool).ok_or_else(|| RuleViolation::OutsideScope {
            field: "resource".into(),
            requested: tool.to_string(),
        })?;
        let actions = match actions {
            None => mine.actions.clone(),
            Some([]) => mine.actions.clone(),
            Some(list) => {
                if let Some(a) = list.iter().find(|a| !mine.actions.contains(a)) {
                    return Err(RuleViolation::OutsideScope {
                        field: "scope".into(),
                        requested: a.to_string(),
                    });
                }
                dedup(list)
            }
        };
        let resources = match resources {
            None | Some([]) => mine.resources.clone(),
            Some(list) => {
                if let Some(r) = list
                    .iter()
                    .find(|r| !mine.resources.iter().any(|m| m.covers(r)))
                {
                    return Err(RuleViolation::OutsideScope {
                        field: "resources".into(),
                        requested: r.as_str().to_owned(),
                    });
                }
                dedup(list)
            }
        };
        Ok(ScopeItem {
            tool: tool.clone(),
            actions,
            resources,
        })
    }
}

fn dedup<T: PartialEq + Clone>(list: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(list.len());
    for x in list {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

impl TryFrom<Vec<ScopeItem>> for Scope {
    type Error = Invalid;
    fn try_from(items: Vec<ScopeItem>) -> Result<Self, Invalid> {
        if items.is_empty() {
            return Err(Invalid::new("scope", "must list at least one tool"));
        }
        if items.len() > 32 {
            return Err(Invalid::new("scope", "must list at most 32 tools"));
        }
        for (i, item) in items.iter().enumerate() {
            item.validate()
                .map_err(|e| e.within(format!("scope[{i}]")))?;
            if items[..i].iter().any(|other| other.tool == item.tool) {
                return Err(Invalid::new(
                    format!("scope[{i}].tool"),
                    format!(
                        "`{}` appears twice; merge its actions into one item",
                        item.tool
                    ),
                ));
            }
        }
        Ok(Scope(items))
    }
}
impl From<Scope> for Vec<ScopeItem> {
    fn from(s: Scope) -> Vec<ScopeItem> {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rp(s: &str) -> ResourcePattern {
        ResourcePattern::parse(s).unwrap()
    }

    #[test]
    fn star_only_at_end() {
        assert!(ResourcePattern::parse("repo:*/x").is_err());
        assert!(ResourcePattern::parse("repo:acme/*").is_ok());
        assert!(ResourcePattern::parse("has space").is_err());
    }

    #[test]
    fn prefix_covers_narrower_prefix_and_literal_but_not_wider() {
        assert!(rp("repo:acme/*").covers(&rp("repo:acme/widgets")));
        assert!(rp("repo:acme/*").covers(&rp("repo:acme/w*")));
        assert!(!rp("repo:acme/*").covers(&rp("repo:*")));
        assert!(!rp("repo:acme/widgets").covers(&rp("repo:acme/*")));
        assert!(rp("*").covers(&rp("anything")));
    }

    #[test]
    fn child_scope_cannot_widen() {
        let scope: Scope = serde_json::from_value(serde_json::json!([
            {"tool": "github", "actions": ["issues:read"], "resources": ["repo:acme/*"]}
        ]))
        .unwrap();
        let gh = ToolName::parse("github").unwrap();
        let write = Action::parse("issues:write").unwrap();
        assert!(scope.narrow(&gh, Some(&[write]), None).is_err());
        assert!(
            scope
                .narrow(&gh, None, Some(&[rp("repo:other/x")]))
                .is_err()
        );
        let ok = scope
            .narrow(&gh, None, Some(&[rp("repo:acme/widgets")]))
            .unwrap();
        assert_eq!(ok.resources, vec![rp("repo:acme/widgets")]);
        assert!(
            scope
                .narrow(&ToolName::parse("jira").unwrap(), None, None)
                .is_err()
        );
    }

    #[test]
    fn scope_errors_name_the_item() {
        let r: Result<Scope, _> = serde_json::from_value(serde_json::json!([
            {"tool": "github", "actions": ["a"]},
            {"tool": "github", "actions": ["b"]}
        ]));
        assert!(r.unwrap_err().to_string().contains("scope[1].tool"));
    }

    fn scope(v: serde_json::Value) -> Result<Scope, serde_json::Error> {
        serde_json::from_value(v)
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn action_names_are_short_lowercase_tokens() {
        assert!(Action::parse("issues:read").is_ok());
        assert!(Action::parse(&"a".repeat(64)).is_ok());
        assert!(Action::parse(&"a".repeat(65)).is_err());
        assert!(Action::parse("").is_err());
        assert!(Action::parse("Issues:Read").is_err());
        assert!(Action::parse("issues read").is_err());
    }

    #[test]
    fn literal_matches_only_itself_and_prefix_matches_by_prefix() {
        // `matches` is what every request is judged by.
        assert!(rp("repo:acme/widgets").matches("repo:acme/widgets"));
        assert!(!rp("repo:acme/widgets").matches("repo:acme/widgets2"));
        assert!(!rp("repo:acme/widgets").matches("repo:acme"));
        assert!(rp("repo:acme/*").matches("repo:acme/widgets"));
        assert!(rp("repo:acme/*").matches("repo:acme/"));
        assert!(!rp("repo:acme/*").matches("repo:acmecorp/x"));
        assert!(!rp("repo:acme/*").matches("repo:other/x"));
        assert!(rp("*").matches("anything"));
        assert!(rp("*").matches(""));
    }

    #[test]
    fn scope_serializes_back_to_the_json_it_was_read_from() {
        // Tasks are stored as JSON: a lossy round trip would change a
        // stored task's scope.
        let json = serde_json::json!([
            {"tool": "github", "actions": ["issues:read", "issues:write"],
             "resources": ["repo:acme/*", "repo:other/x"]},
            {"tool": "jira", "actions": ["tickets:read"], "resources": ["*"]}
        ]);
        let s = scope(json.clone()).unwrap();
        assert_eq!(s.items().len(), 2);
        assert_eq!(s.items()[1].tool.as_str(), "jira");
        assert_eq!(serde_json::to_value(&s).unwrap(), json);
        assert_eq!(s.items()[0].resources[0].as_str(), "repo:acme/*");
        assert_eq!(s.items()[0].actions[1].to_string(), "issues:write");
    }

    #[test]
    fn omitted_resources_mean_every_resource() {
        let s = scope(serde_json::json!([{"tool": "github", "actions": ["a"]}])).unwrap();
        assert_eq!(s.items()[0].resources, vec![ResourcePattern::any()]);
    }

    #[test]
    fn scope_items_need_1_to_64_distinct_actions_and_1_to_64_resources() {
        let one = |actions: Vec<String>, resources: Vec<String>| {
            scope(serde_json::json!([
                {"tool": "github", "actions": actions, "resources": resources}
            ]))
        };
        let r = || vec!["*".to_string()];
        assert!(one(names("a", 64), r()).is_ok());
        assert!(one(names("a", 65), r()).is_err());
        assert!(one(vec![], r()).is_err());
        let e = one(vec!["a".into(), "b".into(), "a".into()], r()).unwrap_err();
        assert!(e.to_string().contains("scope[0].actions[2]"), "{e}");
        assert!(one(vec!["a".into()], names("r", 64)).is_ok());
        assert!(one(vec!["a".into()], names("r", 65)).is_err());
        assert!(one(vec!["a".into()], vec![]).is_err());
    }

    #[test]
    fn a_scope_lists_1_to_32_tools() {
        let tools = |n: usize| {
            let items: Vec<_> = names("t", n)
                .into_iter()
                .map(|t| serde_json::json!({"tool": t, "actions": ["a"]}))
                .collect();
            scope(serde_json::Value::Array(items))
        };
        assert!(tools(32).is_ok());
        assert!(tools(33).is_err());
        assert!(tools(0).is_err());
    }

    #[test]
    fn narrowing_refusals_name_what_was_asked_for() {
        let s = scope(serde_json::json!([
            {"tool": "github", "actions": ["issues:read"], "resources": ["repo:acme/*"]}
        ]))
        .unwrap();
        let gh = ToolName::parse("github").unwrap();
        let e = s
            .narrow(&gh, None, Some(&[rp("repo:other/x")]))
            .unwrap_err();
        assert_eq!(
            e,
            RuleViolation::OutsideScope {
                field: "resources".into(),
                requested: "repo:other/x".into()
            }
        );
        let write = Action::parse("issues:write").unwrap();
        let e = s.narrow(&gh, Some(&[write]), None).unwrap_err();
        assert_eq!(
            e,
            RuleViolation::OutsideScope {
                field: "scope".into(),
                requested: "issues:write".into()
            }
        );
    }

    mod check_against {
        use super::*;
        use crate::{Agent, AgentName, AgentState, Environment};

        fn agent(env: Environment, tools: &[&str]) -> Agent {
            Agent {
                name: AgentName::parse("bot").unwrap(),
                spiffe_id: "spiffe://example.org/agent/bot".into(),
                owner: crate::OwnerName::parse("platform").unwrap(),
                environment: env,
                allowed_tools: tools.iter().map(|t| ToolName::parse(t).unwrap()).collect(),
                description: String::new(),
                state: AgentState::Active,
                enrolled_key: None,
                model: None,
                created_at: 0,
            }
        }

        fn tool(name: &str, env: &str) -> Tool {
            serde_json::from_value(serde_json::json!({
                "name": name, "audience": "https://api.example", "owner": "platform",
                "environment": env, "sensitivity": "internal", "max_ttl_secs": 600,
                "actions": ["issues:read", "issues:write"], "description": "", "created_at": 0
            }))
            .unwrap()
        }

        fn github_scope(actions: &[&str]) -> Scope {
            scope(serde_json::json!([{"tool": "github", "actions": actions}])).unwrap()
        }

        #[test]
        fn a_scope_within_the_agents_tools_and_environment_passes() {
            let t = tool("github", "staging");
            let a = agent(Environment::Staging, &["github"]);
            let s = github_scope(&["issues:read", "issues:write"]);
            assert_eq!(s.check_against(&a, |_| Some(&t)), Ok(()));
        }

        #[test]
        fn a_tool_the_agent_may_not_use_is_refused() {
            let t = tool("github", "staging");
            let a = agent(Environment::Staging, &["jira"]);
            let e = github_scope(&["issues:read"])
                .check_against(&a, |_| Some(&t))
                .unwrap_err();
            assert!(matches!(e, RuleViolation::ToolNotAllowed { .. }), "{e:?}");
        }

        #[test]
        fn an_unregistered_tool_is_refused() {
            let a = agent(Environment::Staging, &["github"]);
            let e = github_scope(&["issues:read"])
                .check_against(&a, |_| None)
                .unwrap_err();
            assert!(matches!(e, RuleViolation::ToolNotAllowed { .. }), "{e:?}");
        }

        #[test]
        fn a_tool_in_another_environment_is_refused() {
            // Tokens never cross environments.
            let t = tool("github", "production");
            let a = agent(Environment::Staging, &["github"]);
            let e = github_scope(&["issues:read"])
                .check_against(&a, |_| Some(&t))
                .unwrap_err();
            assert!(
                matches!(e, RuleViolation::EnvironmentMismatch { .. }),
                "{e:?}"
            );
        }

        #[test]
        fn an_action_the_tool_does_not_have_is_refused() {
            let t = tool("github", "staging");
            let a = agent(Environment::Staging, &["github"]);
            let e = github_scope(&["issues:read", "repo:delete"])
                .check_against(&a, |_| Some(&t))
                .unwrap_err();
            assert_eq!(
                e,
                RuleViolation::UnknownAction {
                    field: "scope[0].actions[1]".into(),
                    tool: "github".into(),
                    action: "repo:delete".into(),
                }
            );
        }
    }

    proptest! {
        // covers() agrees with matches(): if a covers b, everything b matches, a matches.
        #[test]
        fn covers_implies_matches(a in "[ab]{0,3}\\*?", b in "[ab]{0,3}\\*?", probe in "[ab]{0,5}") {
            prop_assume!(!a.is_empty() && !b.is_empty());
            let (a, b) = (rp(&a), rp(&b));
            if a.covers(&b) && b.matches(&probe) {
                prop_assert!(a.matches(&probe));
            }
        }
    }
}
