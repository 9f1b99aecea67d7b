//! What one audit event says to the rules, read once: a call (allowed or
//! refused, with its refusal code), a misuse report, or a task's scope.
//! Only the fields the rules use are parsed out of `detail`.

use mandate_audit::{Event, EventKind};
use mandate_core::MisuseCheck;
use serde::Deserialize;

/// The refusal code of a decision refused because the token itself
/// (not its task or agent) was revoked, and the message that says so.
const TOKEN_REVOKED: &str = "revoked: the token has been revoked";
/// Refusal codes, and the default policies (a Cedar refusal's reasons
/// read `<policy id>: <reason>`), that say a request lies outside what
/// its task declared, and which part it left.
const OUTSIDE: &[(&str, &str)] = &[
    ("out_of_scope", "scope"),
    ("wrong_environment", "environment"),
    ("deny-out-of-scope", "scope"),
    // Only `allow-in-scope` permits `invoke`: nothing permits an action
    // beyond the grant.
    ("no-permit", "scope"),
    ("deny-cross-environment", "environment"),
    ("deny-data-above-tool-sensitivity", "sensitivity"),
];

#[derive(Debug)]
pub(crate) enum Signal<'a> {
    /// A request with a token: a broker decision or a proxy call.
    Call(Call<'a>),
    /// A `token.misuse` report.
    Misuse {
        check: MisuseCheck,
    },
    /// A task started, with the tools of its scope; `parent` for a
    /// delegated one.
    Started {
        tools: Vec<String>,
        parent: Option<String>,
    },
    Other,
}

#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub denied: bool,
    /// The refusal code, for a refused call (`out_of_scope`, …).
    pub code: Option<&'a str>,
    pub token_revoked: bool,
    /// Outside the task's `scope`, `environment` or data `sensitivity`.
    pub outside: Option<&'static str>,
    pub client: Option<String>,
    /// A delegated token: its chain of earlier agents is not empty.
    pub delegated: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CallDetail {
    client: Option<String>,
    chain: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct MisuseDetail {
    check: MisuseCheck,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StartDetail {
    /// A delegated task's.
    scope: Vec<ScopeTool>,
    parent: Option<String>,
    /// A root task's (`task.created` nests it).
    task: Option<Box<StartDetail>>,
}

#[derive(Deserialize)]
struct ScopeTool {
    tool: String,
}

pub(crate) fn read(ev: &Event) -> Signal<'_> {
    match ev.kind {
        EventKind::Decision | EventKind::ToolInvoked => {
            let d: CallDetail = serde_json::from_str(&ev.detail).unwrap_or_default();
            let denied = ev.decision.as_deref() == Some("deny");
            let first = ev.reasons.first().map(String::as_str).unwrap_or("");
            let code = denied
                .then(|| first.split_once(':').map_or(first, |(c, _)| c))
                .filter(|c| !c.is_empty() && !c.contains(' '));
            Signal::Call(Call {
                denied,
                code,
                token_revoked: denied && first == TOKEN_REVOKED,
                outside: if denied { outside(&ev.reasons) } else { None },
                client: d.client,
                delegated: !d.chain.is_empty(),
            })
        }
        EventKind::TokenMisuse => match serde_json::from_str::<MisuseDetail>(&ev.detail) {
            Ok(d) => Signal::Misuse { check: d.check },
            Err(_) => Signal::Other,
        },
        EventKind::TaskCreated | EventKind::TaskDelegated
            if ev.decision.as_deref() != Some("deny") =>
        {
            let mut d: StartDetail = serde_json::from_str(&ev.detail).unwrap_or_default();
            if let Some(inner) = d.task.take() {
                d.scope = inner.scope;
            }
            Signal::Started {
                tools: d.scope.into_iter().map(|s| s.tool).collect(),
                parent: d.parent,
            }
        }
        _ => Signal::Other,
    }
}

/// Which declared bound a refusal's reasons say the request left: by
/// its code, or by the id of the default policy that refused it.
fn outside(reasons: &[String]) -> Option<&'static str> {
    reasons.iter().find_map(|r| {
        let head = r.split_once(':').map_or(r.as_str(), |(h, _)| h).trim();
        OUTSIDE
            .iter()
            .find(|(name, _)| *name == head)
            .map(|(_, part)| *part)
    })
}
