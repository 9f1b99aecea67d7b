//! From an HTTP request to allow or deny, the way the broker's
//! `/v1/authorize` decides: token (signature, issuer, times, audience,
//! scope entry, environment, revocation), route → action and resource,
//! agent and task facts, then the broker's own Cedar policy set.

use crate::decisions::Inputs;
use crate::error::Deny;
use crate::state::State;
use http::HeaderMap;
use mandate_core::{DeliveryMode, RevocationKind, SpiffeId, TaskId, Tool};
use mandate_policy::{AgentFacts, InvokeRequest, TaskFacts, ToolFacts};
use mandate_token::claims::AccessClaims;
use mandate_token::dpop;
use std::sync::Arc;

/// What is known about a call so far, for its audit record.
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub jti: Option<String>,
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
            "bad_path",
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
            "missing_token",
            "send the task's access token as `Authorization: Bearer <token>` (or `DPoP <token>` with a DPoP proof)",
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| Deny::token("invalid_request", "Authorization header is not ASCII"))?;
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    if !(dpop || scheme.eq_ignore_ascii_case("bearer")) || token.trim().is_empty() {
        return Err(Deny::token(
            "invalid_request",
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
fn request_url(st: &State, at: &Addressed<'_>) -> Result<String, Deny> {
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
        _ => Err(Deny::token(
            "invalid_dpop_proof",
            "the request names no host to check the proof's `htu` against",
        )),
    }
}

/// RFC 9449 at a resource: a bound token needs a fresh proof by its key,
/// for this very request and token; an unbound one must not pose as bound.
fn check_binding(
    st: &State,
    headers: &HeaderMap,
    method: &str,
    at: &Addressed<'_>,
    presented: &Presented<'_>,
    claims: &AccessClaims,
    now: i64,
) -> Result<(), Deny> {
    let Some(cnf) = &claims.cnf else {
        return if presented.dpop {
            Err(Deny::token(
                "invalid_token",
                "token is not DPoP-bound; send it with the Bearer scheme",
            ))
        } else {
            Ok(())
        };
    };
    if !presented.dpop {
        return Err(Deny::token(
            "invalid_token",
            "token is DPoP-bound: send it as `Authorization: DPoP <token>` with a DPoP proof",
        ));
    }
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (Some(p), None) => p
            .to_str()
            .map_err(|_| Deny::token("invalid_dpop_proof", "DPoP header is not ASCII"))?,
        (None, _) => return Err(Deny::token("invalid_dpop_proof", "DPoP header is missing")),
        _ => {
            return Err(Deny::token(
                "invalid_dpop_proof",
                "send exactly one DPoP header",
            ));
        }
    };
    let url = request_url(st, at)?;
    let expect = dpop::Expect {
        method,
        url: &url,
        access_token: Some(presented.token),
        now,
    };
    dpop::verify_bound(&cnf.jkt, proof, &expect, &st.dpop_replay)
        .map_err(|e| Deny::token("invalid_dpop_proof", e.to_string()))
}

/// A refusal naming both environments.
fn env_mismatch(what: &str, env: &str, tool: &Tool) -> Deny {
    Deny::forbidden(
        "wrong_environment",
        format!(
            "{what} is for `{env}` but tool `{}` is in `{}`",
            tool.name, tool.environment
        ),
    )
}

/// The whole decision for one request. Fills `known` as facts are learnt.
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
        return Err(Deny::unavailable("not_ready", why));
    }
    let snap = st
        .catalog
        .snapshot()
        .ok_or_else(|| Deny::unavailable("not_ready", "the broker's catalog is not loaded"))?;
    let presented = presented(headers)?;
    let issuer = st
        .issuer()
        .ok_or_else(|| Deny::unavailable("not_ready", "the broker's issuer is not known yet"))?;
    let verified = st
        .verifier
        .verify(&st.broker, &issuer, presented.token, now)
        .await?;
    let claims = &verified.claims;
    known.jti = Some(claims.jti.clone());
    // The path the agent sent: on a host route, the rest is all of it.
    let path = match authority.routes {
        true => rest.to_owned(),
        false => format!("/{tool_name}{rest}"),
    };
    let at = Addressed {
        path: &path,
        authority,
    };
    check_binding(st, headers, method, &at, &presented, claims, now)?;
    let sub = SpiffeId::parse("sub", &claims.sub)
        .map_err(|_| Deny::token("invalid_token", "token `sub` is not an agent SPIFFE ID"))?;
    let agent_name = sub.agent.to_string();
    known.agent = Some(agent_name.clone());
    let task_id = TaskId::parse(&claims.txn)
        .map_err(|_| Deny::token("invalid_token", "token `txn` is not a task id"))?;
    known.task = Some(task_id.to_string());

    // Name the tool in the audit record even when revocation denies first.
    let tool = snap.tools.get(tool_name).cloned();
    known.tool = tool.as_ref().map(|t| t.name.to_string());

    // Revocation before anything else about the token matters.
    if let Some(kind) =
        st.revocations
            .check(&claims.jti, task_id.as_str(), &agent_name, &verified.kid)
    {
        let what = match kind {
            RevocationKind::Token => "the token",
            RevocationKind::Task => "the token's task",
            RevocationKind::Agent => "the token's agent",
            RevocationKind::Key => "the key that signed the token",
        };
        return Err(Deny::token("revoked", format!("{what} has been revoked")));
    }

    let tool = tool.ok_or_else(|| {
        Deny::new(
            http::StatusCode::NOT_FOUND,
            "unknown_tool",
            format!(
                "no tool named `{}` is registered",
                tool_name.chars().take(64).collect::<String>()
            ),
        )
    })?;
    if let Some(env) = st.config.environment
        && env != tool.environment
    {
        return Err(env_mismatch("this proxy", env.as_str(), &tool));
    }
    if tool.delivery.mode == DeliveryMode::Reveal {
        return Err(Deny::forbidden(
            "not_proxied",
            format!(
                "tool `{}` hands its secret to tasks (delivery: reveal) and is not proxied",
                tool.name
            ),
        ));
    }
    if tool.upstream.is_none() {
        return Err(Deny::forbidden(
            "not_proxied",
            format!("tool `{}` has no upstream to proxy to", tool.name),
        ));
    }
    if claims.aud != tool.audience {
        return Err(Deny::forbidden(
            "wrong_audience",
            format!("token is not for tool `{}` (audience mismatch)", tool.name),
        ));
    }
    let detail = claims.detail_for(tool.name.as_str()).ok_or_else(|| {
        Deny::forbidden(
            "out_of_scope",
            format!("token grants nothing on tool `{}`", tool.name),
        )
    })?;
    match detail.environment.as_deref() {
        Some(e) if e == tool.environment.as_str() => {}
        other => {
            return Err(env_mismatch(
                "token",
                other.unwrap_or("no environment"),
                &tool,
            ));
        }
    }
    if let Some(env) = st.config.environment
        && detail.environment.as_deref() != Some(env.as_str())
    {
        return Err(env_mismatch(
            "token",
            detail.environment.as_deref().unwrap_or("-"),
            &tool,
        ));
    }

    let routed = tool.route(method, rest).ok_or_else(|| {
        Deny::forbidden(
            "no_route",
            format!("no route of tool `{}` matches {method} {rest}", tool.name),
        )
    })?;
    known.action = Some(routed.action.to_string());

    let agent = st.facts.agent(&st.broker, &agent_name).await?;
    let task = st.facts.task(&st.broker, task_id.as_str()).await?;
    if task.agent != sub.agent {
        return Err(Deny::token(
            "invalid_token",
            "token's task belongs to another agent",
        ));
    }
    if !agent.is_active() {
        return Err(Deny::token("revoked", "the token's agent has been revoked"));
    }
    let inputs = Inputs {
        policy: snap.policy.clone(),
        tool: tool.clone(),
        agent: agent.clone(),
        task: task.clone(),
        token: verified.clone(),
    };
    let decision = st.decisions.decide(
        &inputs,
        routed.action.as_str(),
        &routed.resource,
        now,
        || {
            snap.policy.decide_invoke(&InvokeRequest {
                agent: AgentFacts::of(&agent),
                tool: ToolFacts::of(&tool),
                task: TaskFacts::of(&task, now),
                action: routed.action.as_str(),
                resource: &routed.resource,
                grant_actions: &detail.actions,
                resource_in_scope: detail.covers_resource(&routed.resource),
                request_environment: Some(tool.environment),
                data_sensitivity: None,
                anomaly_score: 0,
                now,
            })
        },
    );
    if !decision.allowed {
        return Err(Deny::forbidden(
            "policy_denied",
            if decision.reasons.is_empty() {
                "no policy permits this request".to_owned()
            } else {
                decision.reasons.join("; ")
            },
        )
        .with_reasons(decision.reasons.clone()));
    }
    tracing::debug!(action = %routed.action, resource = %routed.resource, "allowed");
    Ok(Allowed {
        tool,
        reasons: decision.reasons.clone(),
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
