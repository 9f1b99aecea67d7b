//! What one audit event says to the rules, read once: a call (allowed or
//! refused, with its refusal code), a misuse report, or a task's scope.
//! Only the fields the rules use are parsed out of `detail`.

use mandate_audit::{Event, EventKind};
use mandate_core::MisuseCheck;
use serde::Deserialize;

/// The refusal code of a decision refused because the token itself
/// (not its task or agent) was revoked, and the message that says so.
const TOKEN_REVOKED: &str = "revoked: the token has been revoked";
/// The default policy that refuses data above a tool's clearance.
const SENSITIVITY_POLICY: &str = "deny-data-above-tool-sensitivity";
const SENSITIVITY_REASON: &str = "more sensitive than the tool";

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
    pub above_sensitivity: bool,
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
    scope: Vec<ScopeTool>,
    parent: Option<String>,
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
                above_sensitivity: denied
                    && ev
                        .reasons
                        .iter()
                        .any(|r| r.contains(SENSITIVITY_POLICY) || r.contains(SENSITIVITY_REASON)),
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
            let d: StartDetail = serde_json::from_str(&ev.detail).unwrap_or_default();
            Signal::Started {
                tools: d.scope.into_iter().map(|s| s.tool).collect(),
                parent: d.parent,
            }
        }
        _ => Signal::Other,
    }
}
