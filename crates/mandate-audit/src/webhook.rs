//! Webhook endpoints: where a person's systems (chat bridges, pagers,
//! SIEMs) are told about audit events, and which events each one wants.
//! The record, its input rules and the kind filter live here, beside the
//! event kinds they name; the broker's sender does the delivery.

use crate::EventKind;
use mandate_core::{Invalid, UnixTime, WebhookId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 256;

/// What an endpoint gets when it names no kinds: what a person must act
/// on (approvals, break-glass, anomalies, a misused token, a suspended
/// task), not the routine traffic.
pub const DEFAULT_KINDS: &[&str] = &[
    "approval.*",
    "breakglass.*",
    "anomaly.*",
    "token.misuse",
    "task.suspended",
];

/// Families an endpoint may subscribe to before any of their kinds
/// exists, so the defaults above hold from the first release. Once a
/// family has kinds in [`EventKind::ALL`] its entry here is redundant.
const ANNOUNCED_FAMILIES: &[&str] = &["approval", "breakglass", "anomaly"];

/// One entry of an endpoint's `kinds`: an exact kind (`task.suspended`)
/// or every kind of a family (`approval.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindPattern {
    Exact(EventKind),
    Family(String),
}

fn family_exists(family: &str) -> bool {
    ANNOUNCED_FAMILIES.contains(&family)
        || EventKind::ALL
            .iter()
            .any(|k| k.as_str().split_once('.').is_some_and(|(f, _)| f == family))
}

impl KindPattern {
    /// `field` names the entry in errors (`kinds[2]`).
    pub fn parse(field: &str, s: &str) -> Result<Self, Invalid> {
        if let Some(family) = s.strip_suffix(".*") {
            return if family_exists(family) {
                Ok(KindPattern::Family(family.to_owned()))
            } else {
                Err(Invalid::new(
                    field,
                    format!("`{}` names no family of event kinds", shorten(s)),
                ))
            };
        }
        EventKind::parse(s).map(KindPattern::Exact).ok_or_else(|| {
            Invalid::new(
                field,
                format!(
                    "`{}` is not an event kind (an exact kind such as `task.suspended`, or a family such as `approval.*`)",
                    shorten(s)
                ),
            )
        })
    }

    pub fn matches(&self, kind: EventKind) -> bool {
        match self {
            KindPattern::Exact(k) => *k == kind,
            KindPattern::Family(f) => kind
                .as_str()
                .split_once('.')
                .is_some_and(|(family, _)| family == f),
        }
    }
}

impl fmt::Display for KindPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KindPattern::Exact(k) => f.write_str(k.as_str()),
            KindPattern::Family(family) => write!(f, "{family}.*"),
        }
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The kinds an endpoint receives: at least one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct KindFilter(Vec<KindPattern>);

impl KindFilter {
    pub fn parse(patterns: &[String]) -> Result<Self, Invalid> {
        if patterns.is_empty() {
            return Err(Invalid::new(
                "kinds",
                "must name at least one event kind (or leave it out for the defaults)",
            ));
        }
        if patterns.len() > EventKind::ALL.len() + ANNOUNCED_FAMILIES.len() {
            return Err(Invalid::new("kinds", "too many entries"));
        }
        let mut out: Vec<KindPattern> = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let p = KindPattern::parse(&format!("kinds[{i}]"), p)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(KindFilter(out))
    }

    pub fn matches(&self, kind: EventKind) -> bool {
        self.0.iter().any(|p| p.matches(kind))
    }

    pub fn patterns(&self) -> &[KindPattern] {
        &self.0
    }
}

impl Default for KindFilter {
    fn default() -> Self {
        let defaults: Vec<String> = DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect();
        // The defaults are fixed and tested to parse.
        KindFilter::parse(&defaults).unwrap_or(KindFilter(Vec::new()))
    }
}

impl TryFrom<Vec<String>> for KindFilter {
    type Error = Invalid;
    fn try_from(v: Vec<String>) -> Result<Self, Invalid> {
        KindFilter::parse(&v)
    }
}

impl From<KindFilter> for Vec<String> {
    fn from(f: KindFilter) -> Vec<String> {
        f.0.iter().map(|p| p.to_string()).collect()
    }
}

/// An endpoint URL: `http://` or `https://` with a host, no credentials,
/// no fragment, no whitespace, at most [`MAX_URL_LEN`] characters.
pub fn check_url(url: &str) -> Result<(), Invalid> {
    let bad = |why: &str| Err(Invalid::new("url", why));
    if url.len() > MAX_URL_LEN {
        return bad(&format!("must be at most {MAX_URL_LEN} characters"));
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return bad("must be an http:// or https:// URL");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return bad("must not carry credentials (`user@`): the signature authenticates the sender");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return bad("must name a host");
    }
    if url.contains('#') {
        return bad("must not have a fragment");
    }
    Ok(())
}

/// An endpoint as stored and listed. Its signing secret is kept apart
/// (sealed) and shown only once, when the endpoint is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub kinds: KindFilter,
    pub description: String,
    pub created_at: UnixTime,
}

/// `POST /v1/webhooks`: what a caller may say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub description: String,
}

impl NewWebhook {
    pub fn into_webhook(self, id: WebhookId, now: UnixTime) -> Result<Webhook, Invalid> {
        check_url(&self.url)?;
        let kinds = match &self.kinds {
            Some(k) => KindFilter::parse(k)?,
            None => KindFilter::default(),
        };
        if self.description.chars().count() > MAX_DESCRIPTION_LEN
            || self.description.chars().any(char::is_control)
        {
            return Err(Invalid::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} printable characters"),
            ));
        }
        Ok(Webhook {
            id,
            url: self.url,
            kinds,
            description: self.description,
            created_at: now,
        })
    }
}

/// How far delivery to one endpoint has got. Events are delivered in
/// chain order; the cursor moves past an event once the endpoint took it
/// (or its filter skipped it), never back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookProgress {
    /// The last `seq` delivered or skipped.
    pub delivered_seq: u64,
    /// Failed attempts at the next event (0 when none is failing).
    pub attempts: u32,
    /// When the next attempt is due (Unix ms), while one is failing.
    pub next_attempt_ms: Option<i64>,
    /// Why the last attempt failed: an HTTP status or a short reason,
    /// never the endpoint's answer.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kinds: &[&str]) -> Result<KindFilter, Invalid> {
        KindFilter::parse(&kinds.iter().map(|k| k.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn exact_kind_matches_only_itself() {
        let f = filter(&["task.suspended"]).unwrap();
        assert!(f.matches(EventKind::TaskSuspended));
        assert!(!f.matches(EventKind::TaskResumed));
    }

    #[test]
    fn family_matches_every_kind_of_it_and_no_other() {
        let f = filter(&["task.*"]).unwrap();
        for k in EventKind::ALL {
            assert_eq!(f.matches(k), k.as_str().starts_with("task."), "{k}");
        }
        // A family is a whole first segment, not a string prefix.
        let f = filter(&["token.*"]).unwrap();
        assert!(f.matches(EventKind::TokenMisuse));
        assert!(!f.matches(EventKind::ToolInvoked));
    }

    #[test]
    fn default_kinds_parse_and_select_what_a_person_acts_on() {
        let f = KindFilter::default();
        assert_eq!(f.patterns().len(), DEFAULT_KINDS.len());
        assert!(f.matches(EventKind::TokenMisuse));
        assert!(f.matches(EventKind::TaskSuspended));
        assert!(!f.matches(EventKind::Decision));
        assert!(!f.matches(EventKind::WebhookCreated));
    }

    #[test]
    fn unknown_kinds_and_families_are_refused_naming_the_entry() {
        for (kinds, field) in [
            (&["task.suspended", "task.exploded"][..], "kinds[1]"),
            (&["nothing.*"][..], "kinds[0]"),
            (&["decision.*"][..], "kinds[0]"),
            (&["*"][..], "kinds[0]"),
            (&["task.sus*"][..], "kinds[0]"),
            (&[][..], "kinds"),
        ] {
            let err = filter(kinds).unwrap_err();
            assert_eq!(err.field, field, "{kinds:?}: {err}");
        }
    }

    #[test]
    fn announced_families_are_accepted_before_their_kinds_exist() {
        for f in ["approval.*", "breakglass.*", "anomaly.*"] {
            assert!(filter(&[f]).is_ok(), "{f}");
        }
    }

    #[test]
    fn filter_round_trips_through_json_without_duplicates() {
        let f = filter(&["task.*", "token.misuse", "task.*"]).unwrap();
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json, serde_json::json!(["task.*", "token.misuse"]));
        assert_eq!(serde_json::from_value::<KindFilter>(json).unwrap(), f);
    }

    #[test]
    fn url_must_be_http_or_https_with_a_host() {
        for ok in [
            "https://hooks.example.com/mandate",
            "http://127.0.0.1:9000/in?x=1",
            "https://[::1]:8443/",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        let long = format!("https://x.example/{}", "a".repeat(MAX_URL_LEN));
        for bad in [
            "ftp://example.com/x",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "http://:80/",
            "https://user:pw@example.com/",
            "https://example.com/a b",
            "https://example.com/#frag",
            "example.com/hook",
            long.as_str(),
        ] {
            let err = check_url(bad).unwrap_err();
            assert_eq!(err.field, "url", "{bad}");
        }
    }

    #[test]
    fn new_webhook_takes_defaults_and_checks_description() {
        let id = WebhookId::parse("whk_00000000000000000000000000000001").unwrap();
        let w: NewWebhook =
            serde_json::from_value(serde_json::json!({"url": "https://x.example/"})).unwrap();
        let w = w.into_webhook(id.clone(), 7).unwrap();
        assert_eq!(w.kinds, KindFilter::default());
        let bad: NewWebhook = serde_json::from_value(
            serde_json::json!({"url": "https://x.example/", "description": "a\nb"}),
        )
        .unwrap();
        assert_eq!(bad.into_webhook(id, 7).unwrap_err().field, "description");
        assert!(
            serde_json::from_value::<NewWebhook>(
                serde_json::json!({"url": "https://x.example/", "secret": "x"})
            )
            .is_err()
        );
    }
}
