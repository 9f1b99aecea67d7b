//! From an HTTP request to allow or deny: the proxy reads the request
//! (target, token, DPoP proof), gathers the facts, and calls the one
//! decision path the broker's `/v1/authorize` also calls.

use crate::error::{Code, Deny};
use crate::state::State;
use http::HeaderMap;
use mandate_core::{Agent, DeliveryMode, Misuse, RevocationKind, Task, Tool};
use mandate_policy::{
    Asked, DpopProof, Holder, Judge, Operation, Presentation, Settled, Subject, authorize_request,
    check_claims, settle,
};
use mandate_token::claims::VerifiedAccess;
use mandate_wire::{ApprovalAsk, ApprovalOutcome};
use std::sync::Arc;

/// What is known about a call so far, for its audit record.
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub jti: Option<String>,
    /// A delegated token's earlier agents, root first.
    pub chain: Vec<String>,
    /// The token says its task is break-glass.
    pub breakglass: bool,
    /// Evidence, when the refusal shows the token left its holder.
    pub misuse: Option<Misuse>,
}

/// An allowed call: the tool and why it was allowed.
pub struct Allowed {
    pub tool: Arc<Tool>,
    pub reasons: Vec<String>,
}

/// `/{tool}/{rest}` → (`tool`, `/{rest}`). The rest keeps its raw
/// (percent-encoded) form: it is matched and forwarded byte for byte.
pub fn split_target(path: &str) -> Option<(&str, &str)> {
    let p = path.strip_prefix('/')?;
    let (tool, rest) = match p.find('/') {
        Some(i) => (&p[..i], &p[i..]),
        None => (p, "/"),
    };
    (!tool.is_empty()).then_some((tool, rest))
}

/// The tool a host-based route names: `github.tools.internal:8400` with
/// the suffix `.tools.internal` is `github` (host names are matched
/// lowercased, the port ignored). `None`: not a host route.
pub fn tool_by_host(suffix: &str, authority: &str) -> Option<String> {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.to_ascii_lowercase();
    let label = host.strip_suffix(suffix)?;
    (!label.is_empty() && !label.contains('.')).then(|| label.to_owned())
}

/// Refuse paths an upstream could read differently from the route rules:
/// dot segments (`..`, `%2e%2e`, and `..;x`, which servlet containers read
/// as `..`); empty segments (also `;x`, empty once parameters are
/// stripped); encoded slashes or backslashes, also double-encoded or as the
/// overlong UTF-8 that old servers decoded to `.` and `/`; NUL. What policy
/// approved must be what the upstream serves.
pub fn check_path(rest: &str) -> Result<(), Deny> {
    const AMBIGUOUS: [&str; 9] = [
        "%2f", "%5c", "%00", "%252e", "%252f", "%255c", "%2500", "%c0", "%c1",
    ];
    let lower = rest.to_ascii_lowercase();
    let bad_encoding = AMBIGUOUS.iter().any(|e| lower.contains(e));
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let bad_segment = segments.iter().enumerate().any(|(i, seg)| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        let s = s.split(';').next().unwrap_or_default();
        // Only the last segment may be empty (a trailing slash); `;x` alone
        // is empty to a server that strips parameters.
        s == "." || s == ".." || (s.is_empty() && (i != last || !seg.is_empty()))
    });
    if bad_encoding || bad_segment || rest.contains('\\') {
        return Err(Deny::new(
            http::StatusCode::BAD_REQUEST,
            Code::BadPath,
            "path has dot segments, empty segments or encoded separators, which the proxy does not forward",
        ));
    }
    Ok(())
}

/// The access token as presented, and whether under the DPoP scheme.
pub struct Presented<'a> {
    pub token: &'a str,
    pub dpop: bool,
}

/// The token from `Authorization: Bearer|DPoP`, or why there is none we accept.
pub fn presented(headers: &HeaderMap) -> Result<Presented<'_>, Deny> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Deny::token(
            Code::MissingToken,
            "send the task's access token as `Authorization: Bearer <token>` (or `DPoP <token>` with a DPoP proof)",
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| Deny::token(Code::InvalidRequest, "Authorization header is not ASCII"))?;
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    if !(dpop || scheme.eq_ignore_ascii_case("bearer")) || token.trim().is_empty() {
        return Err(Deny::token(
            Code::InvalidRequest,
            "Authorization must use the Bearer or DPoP scheme",
        ));
    }
    Ok(Presented {
        token: token.trim(),
        dpop,
    })
}

/// The authority the agent named (an absolute-form target's, else `Host`;
/// HTTP/2's `:authority`), and whether it chose the tool (a host route).
#[derive(Clone, Copy)]
pub struct Authority<'a> {
    pub name: Option<&'a str>,
    pub routes: bool,
}

/// Where the agent sent a request.
struct Addressed<'a> {
    path: &'a str,
    authority: Authority<'a>,
}

/// The URL the agent addressed, for a DPoP proof's `htu`: on a host route
/// that host (with the public URL's scheme), else the configured public
/// URL, or the authority the request named.
fn request_url(st: &State, at: &Addressed<'_>) -> Result<String, &'static str> {
    let path = at.path;
    let public = st.config.public_url.as_deref();
    match (at.authority.routes, at.authority.name, public) {
        (true, Some(host), _) => {
            let https = public.is_some_and(|u| u.starts_with("https://"));
            let scheme = if https { "https" } else { "http" };
            Ok(format!("{scheme}://{host}{path}"))
        }
        (false, _, Some(base)) => Ok(format!("{}{path}", base.trim_end_matches('/'))),
        (false, Some(host), None) => Ok(format!("http://{host}{path}")),
        _ => Err("the request names no host to check the proof's `htu` against"),
    }
}

/// How the token came: as a bearer token, or under the DPoP scheme with
/// exactly one proof for the URL the agent addressed.
fn presentation<'a>(
    headers: &'a HeaderMap,
    method: &'a str,
    url: &'a Result<String, &'static str>,
    presented: &Presented<'a>,
) -> Presentation<'a> {
    if !presented.dpop {
        return Presentation::Bearer;
    }
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (Some(p), None) => p.to_str().map_err(|_| "DPoP header is not ASCII"),
        (None, _) => Err("DPoP header is missing"),
        _ => Err("send exactly one DPoP header"),
    };
    Presentation::Dpop(proof.and_then(|proof| {
        Ok(DpopProof {
            proof,
            method,
            url: url.as_deref().map_err(|e| *e)?,
            token: presented.token,
        })
    }))
}

/// What the proxy's live view says of a verified token's holder: the
/// revocation feed's verdict, and the agent and task rows from the broker
/// (not looked up for a token already dead by its claims).
pub struct HolderFacts {
    revoked: Option<RevocationKind>,
    agent: Option<Arc<Agent>>,
    task: Option<Arc<Task>>,
}

impl HolderFacts {
    pub async fn gather(
        st: &State,
        verified: &VerifiedAccess,
        subject: Option<&Subject>,
        now: i64,
    ) -> Result<HolderFacts, Deny> {
        let revoked = st
            .revocations
            .check(&verified.claims.jti, &verified.kid, subject);
        let (mut agent, mut task) = (None, None);
        if let Ok(s) = check_claims(verified, revoked, now) {
            agent = st.facts.agent(&st.broker, s.agent.as_str()).await?;
            task = st.facts.task(&st.broker, s.task.as_str()).await?;
        }
        Ok(HolderFacts {
            revoked,
            agent,
            task,
        })
    }

    /// For the one decision path.
    pub fn holder(&self) -> Holder<'_> {
        Holder {
            revoked: self.revoked,
            agent: self.agent.as_ref(),
            task: self.task.as_ref(),
        }
    }
}

/// The whole decision for one request: the proxy gathers the facts (token,
/// revocation feed, broker lookups, catalog) and `mandate_policy` decides,
/// exactly as for the broker's `/v1/authorize`. Fills `known` as facts are
/// learnt.
pub async fn decide(
    st: &State,
    headers: &HeaderMap,
    method: &str,
    tool_name: &str,
    rest: &str,
    authority: Authority<'_>,
    known: &mut Known,
) -> Result<Allowed, Deny> {
    let now = crate::now_secs();
    let ready = st.readiness(crate::now_ms());
    if let Err(why) = ready {
        return Err(Deny::unavailable(Code::NotReady, why));
    }
    let snap = st
        .catalog
        .snapshot()
        .ok_or_else(|| Deny::unavailable(Code::NotReady, "the broker's catalog is not loaded"))?;
    let presented = presented(headers)?;
    let issuer = st
        .issuer()
        .ok_or_else(|| Deny::unavailable(Code::NotReady, "the broker's issuer is not known yet"))?;
    let verified = st
        .verifier
        .verify(&st.broker, &issuer, presented.token)
        .await?;
    let claims = &verified.claims;
    known.jti = Some(claims.jti.clone());
    let subject = Subject::of(&verified).ok();
    if let Some(s) = &subject {
        known.agent = Some(s.agent.to_string());
        known.task = Some(s.task.to_string());
        known.chain = s.chain_names();
    }
    known.breakglass = verified.claims.breakglass;
    // Name the tool in the audit record even when the token is refused.
    let tool = snap.tools.get(tool_name).cloned();
    known.tool = tool.as_ref().map(|t| t.name.to_string());

    let facts = HolderFacts::gather(st, &verified, subject.as_ref(), now).await?;
    // The URL the agent addressed matters only to a DPoP proof's `htu`:
    // not built for a bearer token. On a host route the path is all `rest`.
    let url = match presented.dpop {
        false => Err("no proof"),
        true => {
            let path = match authority.routes {
                true => rest.to_owned(),
                false => format!("/{tool_name}{rest}"),
            };
            request_url(
                st,
                &Addressed {
                    path: &path,
                    authority,
                },
            )
        }
    };
    let holder = facts.holder();
    let asked = Asked {
        tool: tool.as_ref().ok_or(tool_name),
        operation: Operation::Http { method, path: rest },
        environment: st.config.environment,
        data_sensitivity: None,
        presentation: presentation(headers, method, &url, &presented),
        amount: None,
    };
    let judge = Judge {
        policy: &snap.policy,
        replay: &st.dpop_replay,
        recent: &st.recent,
        now,
    };
    let verdict = match authorize_request(&verified, &holder, &asked, &judge) {
        // A held request is past the token stage: its agent is known.
        Err(held) if held.pending.is_some() && facts.agent.is_some() => {
            let pending = held.pending.as_deref().expect("checked");
            let ask = ApprovalAsk {
                agent: facts.agent.as_ref().expect("checked").name.clone(),
                task: pending.task.clone(),
                held: pending.held.clone(),
                reasons: pending.need.reasons.clone(),
                policy_ids: pending.need.policy_ids.clone(),
                request_id: None,
            };
            let answer = st.broker.resolve_approval(&ask).await.map_err(|e| {
                Deny::unavailable(
                    Code::BrokerUnavailable,
                    format!("policy holds this request for a person, and the broker could not be asked: {e}"),
                )
            })?;
            let a = &answer.approval;
            settle(
                held,
                match answer.outcome {
                    ApprovalOutcome::Allowed => Settled::Allowed(a),
                    ApprovalOutcome::Waiting => Settled::Waiting(a),
                    ApprovalOutcome::Denied => Settled::Denied(a),
                },
            )
        }
        verdict => verdict,
    };
    let allowed = verdict.map_err(|r| {
        known.action = r.action.clone();
        known.misuse = r.misuse.as_deref().cloned();
        Deny::from(r)
    })?;
    known.action = Some(allowed.action.clone());
    // Allowed; can this proxy carry it?
    let tool = allowed.tool.clone();
    if tool.delivery.mode == DeliveryMode::Reveal {
        return Err(Deny::forbidden(
            Code::NotProxied,
            format!(
                "tool `{}` hands its secret to tasks (delivery: reveal) and is not proxied",
                tool.name
            ),
        ));
    }
    if tool.upstream.is_none() {
        return Err(Deny::forbidden(
            Code::NotProxied,
            format!("tool `{}` has no upstream to proxy to", tool.name),
        ));
    }
    tracing::debug!(action = %allowed.action, resource = %allowed.resource, "allowed");
    Ok(Allowed {
        tool,
        reasons: allowed.decision.reasons.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_tool_and_rest() {
        assert_eq!(
            split_target("/github/repos/a"),
            Some(("github", "/repos/a"))
        );
        assert_eq!(split_target("/github"), Some(("github", "/")));
        assert_eq!(split_target("/github/"), Some(("github", "/")));
        assert_eq!(split_target("/"), None);
        assert_eq!(split_target("//x"), None);
    }

    #[test]
    fn host_routes_name_their_tool() {
        let t = |a: &str| tool_by_host(".tools.internal", a);
        assert_eq!(t("github.tools.internal").as_deref(), Some("github"));
        assert_eq!(t("GitHub.Tools.Internal:8400").as_deref(), Some("github"));
        for not in [
            "tools.internal",
            ".tools.internal",
            "a.b.tools.internal",
            "github.tools.internal.evil",
            "githubtools.internal",
            "[::1]:8400",
            "127.0.0.1:8400",
            "github.tools.internal:x",
        ] {
            assert_eq!(t(not), None, "{not}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "/repos/../admin",
            "/repos/%2e%2E/admin",
            "/repos/./x",
            "/repos/a%2Fb",
            "/repos/a%5cb",
            "/repos/a\\b",
            "/repos//x",
            "/x%00",
            "/repos/..;/admin",
            "/repos/.;x/admin",
            "/repos/;x/issues",
            "/repos/a/;x",
            "/repos/%252e%252e/admin",
            "/repos/a%252Fb",
            "/repos/%c0%ae%c0%ae/admin",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for ok in [
            "/",
            "/repos/a/b",
            "/repos/a/",
            "/files/a.b/..c",
            "/q%20x",
            "/m;v=1/x",
            "/50%25",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn bearer_scheme_rules() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        let bearer = h("Bearer abc");
        let p = presented(&bearer).unwrap();
        assert_eq!((p.token, p.dpop), ("abc", false));
        assert_eq!(presented(&h("bearer abc")).unwrap().token, "abc");
        let dpop = h("DPoP abc");
        let p = presented(&dpop).unwrap();
        assert_eq!((p.token, p.dpop), ("abc", true));
        let code = |v: &str| presented(&h(v)).err().unwrap().code;
        assert_eq!(code("Basic abc"), "invalid_request");
        assert_eq!(code("Bearer "), "invalid_request");
        assert_eq!(code("DPoP"), "invalid_request");
        assert_eq!(
            presented(&HeaderMap::new()).err().unwrap().code,
            "missing_token"
        );
    }

    fn tool() -> Tool {
        serde_json::from_value(serde_json::json!({
            "name": "github", "audience": "https://api.github.com", "owner": "platform",
            "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
            "actions": ["issues:read", "issues:write"], "description": "", "created_at": 0,
            "upstream": "http://127.0.0.1:1",
            "routes": [
                {"method": "GET", "path": "/repos/{owner}/{repo}/issues", "action": "issues:read",
                 "resource": "repo:{owner}/{repo}"},
                {"method": "POST", "path": "/repos/{owner}/{repo}/issues", "action": "issues:write",
                 "resource": "repo:{owner}/{repo}"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn route_gives_action_and_resource_and_unmatched_is_none() {
        let t = tool();
        let (name, rest) = split_target("/github/repos/acme/widgets/issues").unwrap();
        assert_eq!(name, "github");
        let r = t.route("GET", rest).unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("issues:read", "repo:acme/widgets")
        );
        assert_eq!(
            t.route("POST", rest).unwrap().action.as_str(),
            "issues:write"
        );
        assert!(t.route("DELETE", rest).is_none());
        assert!(t.route("GET", "/repos/acme").is_none());
    }

    /// One pass of percent-decoding as a lenient upstream does it: bytes,
    /// invalid escapes kept, overlong `%c0%ae`/`%c0%af` read as `.` and `/`.
    fn decode_once(s: &str) -> String {
        let b = s.as_bytes();
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            let esc = |at: usize| match (b.get(at), b.get(at + 1), b.get(at + 2)) {
                (Some(b'%'), Some(&h), Some(&l)) => Some((hex(h)?, hex(l)?)),
                _ => None,
            };
            match (esc(i), esc(i + 3)) {
                (Some((0xc, 0x0)), Some((0xa, n))) if n == 0xe || n == 0xf => {
                    out.push(if n == 0xe { b'.' } else { b'/' });
                    i += 6;
                }
                (Some((h, l)), _) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                (None, _) => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The segments an upstream routes on after decoding `passes` times,
    /// splitting on `/` and `\\`, dropping `;params` (servlet style).
    fn upstream_segments(path: &str, passes: usize) -> Vec<String> {
        let mut p = path.to_owned();
        for _ in 0..passes {
            p = decode_once(&p);
        }
        p.split(['/', '\\'])
            .skip(1)
            .map(|s| s.split(';').next().unwrap_or_default().to_owned())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Whatever the proxy forwards, an upstream that decodes once or
        /// twice, reads `\\` as `/` and strips `;params` sees the same number
        /// of segments, none of them a dot segment: the route the policy
        /// approved is the resource the upstream serves.
        #[test]
        fn forwarded_paths_mean_the_same_upstream(
            raw in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "%25", "%c0", "%ae", "%af",
                    "2e", "2f", ";", "\\", "a", "b", "%00", "%41",
                ]),
                1..12,
            )
        ) {
            let path = format!("/{}", raw.concat());
            if check_path(&path).is_ok() {
                let count = path.split('/').count() - 1;
                for passes in 1..=2 {
                    let segs = upstream_segments(&path, passes);
                    proptest::prop_assert_eq!(segs.len(), count, "{} decoded {}x: {:?}", path, passes, segs);
                    let last = segs.len() - 1;
                    for (i, s) in segs.iter().enumerate() {
                        proptest::prop_assert!(
                            s != "." && s != ".." && s != "\0" && (i == last || !s.is_empty()),
                            "{} decoded {}x: {:?}", path, passes, segs
                        );
                    }
                }
            }
        }
    }
}
