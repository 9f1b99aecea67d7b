//! Route rules: how the proxy turns an HTTP request into a tool action and
//! resource. `GET /repos/{owner}/{repo}/issues` → `issues:read` on
//! `repo:{owner}/{repo}`. A request no rule matches is denied.

use crate::{Action, Invalid};
use serde::{Deserialize, Serialize};

/// One rule. `path` segments are literals, `*` (any one segment),
/// `{name}` (any one segment, captured for `resource`) or a final `**`
/// (any remaining segments, possibly none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// An HTTP method in upper case, or `*` for any.
    pub method: String,
    pub path: String,
    pub action: Action,
    /// The resource the request touches, with `{name}` captures filled in;
    /// absent means the request path itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// What a matched request is, in the tool's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedRequest {
    pub action: Action,
    pub resource: String,
}

enum Segment<'a> {
    Literal(&'a str),
    Any,
    Capture(&'a str),
    Rest,
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.trim_start_matches('/').split('/').map(|s| match s {
        "*" => Segment::Any,
        "**" => Segment::Rest,
        s if s.starts_with('{') && s.ends_with('}') && s.len() > 2 => {
            Segment::Capture(&s[1..s.len() - 1])
        }
        s => Segment::Literal(s),
    })
}

impl RouteRule {
    /// Checks the rule against the tool's actions. `at` names the rule in errors.
    pub fn validate(&self, at: &str, actions: &[Action]) -> Result<(), Invalid> {
        let m = &self.method;
        if m != "*" && (m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(Invalid::new(
                format!("{at}.method"),
                "must be an upper-case HTTP method such as GET, or `*`",
            ));
        }
        if !self.path.starts_with('/') || self.path.len() > 512 || self.path.contains(['?', '#']) {
            return Err(Invalid::new(
                format!("{at}.path"),
                "must start with `/`, have no query or fragment, and be at most 512 bytes",
            ));
        }
        let segs: Vec<Segment<'_>> = segments(&self.path).collect();
        let mut names = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            match s {
                Segment::Rest if i + 1 != segs.len() => {
                    return Err(Invalid::new(
                        format!("{at}.path"),
                        "`**` may only be the last segment",
                    ));
                }
                Segment::Capture(n) if names.contains(n) => {
                    return Err(Invalid::new(
                        format!("{at}.path"),
                        format!("capture `{{{n}}}` appears twice"),
                    ));
                }
                Segment::Capture(n) => names.push(*n),
                _ => {}
            }
        }
        if !actions.contains(&self.action) {
            return Err(Invalid::new(
                format!("{at}.action"),
                format!("`{}` is not one of the tool's actions", self.action),
            ));
        }
        if let Some(template) = &self.resource {
            for name in placeholders(template) {
                if !names.contains(&name) {
                    return Err(Invalid::new(
                        format!("{at}.resource"),
                        format!("`{{{name}}}` is not captured by the path"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The action and resource if this rule matches; `path` has no query.
    pub fn apply(&self, method: &str, path: &str) -> Option<RoutedRequest> {
        if self.method != "*" && self.method != method {
            return None;
        }
        let mut captured: Vec<(&str, &str)> = Vec::new();
        let mut actual = path.trim_start_matches('/').split('/');
        for seg in segments(&self.path) {
            match seg {
                Segment::Rest => {
                    return Some(self.routed(path, &captured));
                }
                Segment::Literal(l) => (actual.next()? == l).then_some(())?,
                Segment::Any => nonempty(actual.next()?)?,
                Segment::Capture(name) => {
                    let v = actual.next()?;
                    nonempty(v)?;
                    captured.push((name, v));
                }
            }
        }
        actual
            .next()
            .is_none()
            .then(|| self.routed(path, &captured))
    }

    fn routed(&self, path: &str, captured: &[(&str, &str)]) -> RoutedRequest {
        let resource = match &self.resource {
            None => path.to_owned(),
            Some(t) => captured
                .iter()
                .fold(t.clone(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v)),
        };
        RoutedRequest {
            action: self.action.clone(),
            resource,
        }
    }
}

fn nonempty(s: &str) -> Option<()> {
    (!s.is_empty()).then_some(())
}

fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// The first rule that matches, in order.
pub fn route(rules: &[RouteRule], method: &str, path: &str) -> Option<RoutedRequest> {
    rules.iter().find_map(|r| r.apply(method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, path: &str, action: &str, resource: Option<&str>) -> RouteRule {
        RouteRule {
            method: method.into(),
            path: path.into(),
            action: Action::parse(action).unwrap(),
            resource: resource.map(Into::into),
        }
    }

    fn actions() -> Vec<Action> {
        vec![
            Action::parse("issues:read").unwrap(),
            Action::parse("issues:write").unwrap(),
        ]
    }

    #[test]
    fn captures_fill_the_resource_and_methods_must_match() {
        let rules = [
            rule(
                "GET",
                "/repos/{owner}/{repo}/issues",
                "issues:read",
                Some("repo:{owner}/{repo}"),
            ),
            rule("POST", "/repos/*/*/issues", "issues:write", None),
        ];
        let r = route(&rules, "GET", "/repos/acme/widgets/issues").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("issues:read", "repo:acme/widgets")
        );
        let r = route(&rules, "POST", "/repos/acme/widgets/issues").unwrap();
        assert_eq!(r.resource, "/repos/acme/widgets/issues");
        assert!(route(&rules, "DELETE", "/repos/acme/widgets/issues").is_none());
        assert!(route(&rules, "GET", "/repos/acme/widgets/issues/1").is_none());
        assert!(route(&rules, "GET", "/repos/acme//issues").is_none());
        assert!(route(&rules, "GET", "/repos/acme/widgets").is_none());
    }

    #[test]
    fn double_star_takes_the_rest() {
        let rules = [rule("*", "/files/**", "issues:read", None)];
        assert!(route(&rules, "PUT", "/files/a/b/c").is_some());
        assert!(route(&rules, "GET", "/files").is_some());
        assert!(route(&rules, "GET", "/other/a").is_none());
    }

    #[test]
    fn a_braced_segment_captures_only_when_closed_and_named() {
        // `{draft`, `draft}` and `{}` are literals: they must not turn into
        // wildcards that match any segment.
        for lit in ["{draft", "draft}", "{}"] {
            let rules = [rule("GET", &format!("/files/{lit}"), "issues:read", None)];
            assert!(
                route(&rules, "GET", &format!("/files/{lit}")).is_some(),
                "{lit}"
            );
            assert!(route(&rules, "GET", "/files/other").is_none(), "{lit}");
        }
    }

    #[test]
    fn methods_are_1_to_16_upper_case_letters_or_star() {
        let a = actions();
        let check = |m: &str| rule(m, "/x", "issues:read", None).validate("r", &a);
        assert!(check("*").is_ok());
        assert!(check(&"A".repeat(16)).is_ok());
        assert!(check(&"A".repeat(17)).is_err());
        assert!(check("").is_err());
        assert!(check("GeT").is_err());
    }

    #[test]
    fn paths_are_absolute_bounded_and_without_query_or_fragment() {
        let a = actions();
        let check = |p: &str| rule("GET", p, "issues:read", None).validate("r", &a);
        assert!(check(&format!("/{}", "a".repeat(511))).is_ok());
        assert!(check(&format!("/{}", "a".repeat(512))).is_err());
        assert!(check("/x?q=1").is_err());
        assert!(check("/x#frag").is_err());
    }

    #[test]
    fn double_star_is_valid_as_the_last_segment() {
        let a = actions();
        assert!(
            rule("GET", "/files/**", "issues:read", None)
                .validate("r", &a)
                .is_ok()
        );
        assert!(
            rule("GET", "/**", "issues:read", None)
                .validate("r", &a)
                .is_ok()
        );
    }

    #[test]
    fn a_capture_name_may_appear_only_once() {
        // `/{a}/{a}` would leave it unclear which segment the resource names.
        let e = rule("GET", "/{a}/{a}", "issues:read", Some("repo:{a}"))
            .validate("routes[3]", &actions())
            .unwrap_err();
        assert_eq!(e.field, "routes[3].path");
        assert!(e.message.contains("twice"), "{}", e.message);
    }

    #[test]
    fn validation_names_the_rule_and_field() {
        let a = actions();
        let e = rule("get", "/x", "issues:read", None)
            .validate("routes[0]", &a)
            .unwrap_err();
        assert_eq!(e.field, "routes[0].method");
        let e = rule("GET", "x", "issues:read", None)
            .validate("routes[1]", &a)
            .unwrap_err();
        assert_eq!(e.field, "routes[1].path");
        let e = rule("GET", "/**/x", "issues:read", None)
            .validate("routes[0]", &a)
            .unwrap_err();
        assert!(e.message.contains("last segment"));
        let e = rule("GET", "/x", "pulls:read", None)
            .validate("routes[0]", &a)
            .unwrap_err();
        assert_eq!(e.field, "routes[0].action");
        let e = rule("GET", "/{a}", "issues:read", Some("repo:{b}"))
            .validate("routes[0]", &a)
            .unwrap_err();
        assert_eq!(e.field, "routes[0].resource");
        assert!(
            rule("GET", "/{a}/{b}", "issues:read", Some("repo:{a}/{b}"))
                .validate("routes[0]", &a)
                .is_ok()
        );
    }
}
