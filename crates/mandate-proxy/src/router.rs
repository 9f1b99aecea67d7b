//! The HTTP surface: the proxy route (`/{tool}/…`) and the three reserved
//! operational paths (`/healthz`, `/readyz`, `/metrics`). A proxied call
//! goes through the stages in order — the path and override screen
//! (`screen`), the decision (`decide`), the body screen, then injection
//! and forwarding (`forward`) — and is audited by its `record` at every
//! exit.

use crate::decide::{Authority, check_path, decide, split_target};
use crate::error::{Code, Deny};
use crate::forward::{Forward, Upstream, forward};
use crate::record::CallRecord;
use crate::screen::{check_overrides, screen_body};
use crate::state::State;
use axum::Router;
use axum::body::Body;
use axum::extract::State as Shared;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mandate_policy::Refusal;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What one serving thread's requests share: the proxy's state, and the
/// thread's own upstream connection pool (see `workers`).
#[derive(Clone)]
pub struct Serving {
    pub st: Arc<State>,
    pub upstream: Upstream,
}

impl axum::extract::FromRef<Serving> for Arc<State> {
    fn from_ref(s: &Serving) -> Self {
        s.st.clone()
    }
}

pub fn router(serving: Serving) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(proxy);
    // Only with host routes configured: the layer costs every request.
    let router = match serving.st.config.tool_host_suffix {
        Some(_) => router.layer(axum::middleware::from_fn_with_state(
            serving.clone(),
            route_by_host,
        )),
        None => router,
    };
    router.with_state(serving)
}

/// The address of the agent's connection, for the audit record.
#[derive(Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The tool a host-based route chose (`tool_host_suffix`).
#[derive(Clone)]
struct HostRoute(String);

/// The authority a request names: an absolute-form target's wins over
/// `Host` (RFC 9112 §3.2.2); HTTP/2 has only the `:authority`.
fn authority_of<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// A request on a tool's host goes to the proxy route whatever its path,
/// so a tool's own `/metrics` is never the proxy's.
async fn route_by_host(
    Shared(serving): Shared<Serving>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let Some(suffix) = serving.st.config.tool_host_suffix.as_deref() else {
        return next.run(req).await;
    };
    let tool =
        authority_of(req.uri(), req.headers()).and_then(|a| crate::decide::tool_by_host(suffix, a));
    let Some(tool) = tool else {
        return next.run(req).await;
    };
    req.extensions_mut().insert(HostRoute(tool));
    proxy(Shared(serving), req).await
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(Shared(st): Shared<Arc<State>>) -> Response {
    match st.readiness(crate::now_ms()) {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// Who may scrape: anyone if the config says so, else whoever presents
/// the configured metrics token, else nobody.
fn may_scrape(config: &crate::ProxyConfig, headers: &http::HeaderMap) -> Result<(), Deny> {
    use secrecy::ExposeSecret;
    if config.unauthenticated_metrics_access {
        return Ok(());
    }
    let Some(expected) = &config.metrics_token else {
        return Err(Deny::token(
            Code::Unauthorized,
            "/metrics needs a token: the proxy sets metrics_token_file, or unauthenticated_metrics_access",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Digests are compared, so timing can only tell how much of a digest
    // matched, which says nothing useful about the token.
    let digest = |t: &str| mandate_token::sha256_hex(t.trim().as_bytes());
    if presented.is_empty() || digest(presented) != digest(expected.expose_secret()) {
        return Err(Deny::token(
            Code::Unauthorized,
            "send the metrics token as `Authorization: Bearer <token>`",
        ));
    }
    Ok(())
}

async fn metrics(Shared(st): Shared<Arc<State>>, headers: http::HeaderMap) -> Response {
    if let Err(d) = may_scrape(&st.config, &headers) {
        return d.into_response("metrics");
    }
    let lag = st.revocations.lag_secs(crate::now_ms()).unwrap_or(-1.0);
    st.metrics.feed_lag.set(lag);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn proxy(Shared(serving): Shared<Serving>, req: Request<Body>) -> Response {
    let Serving { st, upstream } = serving;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let peer = parts.extensions.get::<Option<Peer>>().copied().flatten();
    let call = CallRecord::new(st.clone(), peer.map(|p| p.0), parts.method.as_str(), &path);
    let span = tracing::info_span!(
        "proxy",
        request_id = %call.id,
        method = %parts.method,
        tool = tracing::field::Empty,
        agent = tracing::field::Empty,
        task = tracing::field::Empty,
    );
    let by_host = parts.extensions.get::<HostRoute>().cloned();
    async move {
        let mut call = call;
        let target = match &by_host {
            Some(HostRoute(tool)) => Some((tool.as_str(), path.as_str())),
            None => split_target(&path),
        };
        let Some((tool_name, rest)) = target else {
            return call.deny(Deny::new(
                StatusCode::NOT_FOUND,
                Code::Refused(Refusal::UnknownTool),
                "requests go to /{tool}/{path}",
            ));
        };
        if let Err(d) = check_path(rest).and(check_overrides(&parts.headers, parts.uri.query())) {
            return call.deny(d);
        }
        // No call goes through that could not be audited.
        if !st.audit.is_writable() {
            return call.deny(Deny::unavailable(
                Code::AuditUnavailable,
                "the proxy cannot write its audit spool; calls are refused until it can",
            ));
        }
        let decided = decide(
            &st,
            &parts.headers,
            parts.method.as_str(),
            tool_name,
            rest,
            Authority {
                name: authority_of(&parts.uri, &parts.headers),
                routes: by_host.is_some(),
            },
            &mut call.known,
        )
        .await;
        let span = tracing::Span::current();
        for (field, v) in [
            ("tool", &call.known.tool),
            ("agent", &call.known.agent),
            ("task", &call.known.task),
        ] {
            if let Some(v) = v {
                span.record(field, v.as_str());
            }
        }
        let allowed = match decided {
            Ok(a) => a,
            Err(d) => return call.deny(d),
        };
        let cred = match credential(&st, &allowed.tool) {
            Ok(c) => c,
            Err(d) => return call.deny(d),
        };
        // Read only once the call is allowed: nobody unauthenticated makes
        // the proxy hold a body.
        let timeout = Duration::from_secs(st.config.upstream_timeout_secs);
        let max_body = st.config.max_body_bytes;
        let screened = screen_body(
            &parts.method,
            &parts.headers,
            body,
            max_body,
            timeout,
            &st.bodies,
        );
        let body = match screened.await {
            Ok(b) => b,
            Err(d) => return call.deny(d),
        };
        call.allowed = true;
        call.reasons = allowed.reasons;
        if !call.write_ahead() {
            call.allowed = false;
            return call.deny(Deny::unavailable(
                Code::AuditUnavailable,
                "the proxy could not write this call's audit record, so it was not sent upstream",
            ));
        }
        let base = allowed.tool.upstream.clone().unwrap_or_default();
        forward(
            Forward {
                upstream: &upstream,
                base: &base,
                rest,
                cred,
                timeout,
                max_body,
            },
            parts,
            body,
            call,
        )
        .await
    }
    .instrument(span)
    .await
}

/// The tool's current credential, or a clear 503 about why there is none.
fn credential(
    st: &State,
    tool: &mandate_core::Tool,
) -> Result<Arc<crate::catalog::Credential>, Deny> {
    let snap = st
        .catalog
        .snapshot()
        .ok_or_else(|| Deny::unavailable(Code::NotReady, "the broker's catalog is not loaded"))?;
    let Some(meta) = snap.secrets.get(tool.name.as_str()) else {
        return Err(Deny::unavailable(
            Code::NoSecret,
            format!(
                "tool `{}` injects a secret but none is stored at the broker",
                tool.name
            ),
        ));
    };
    if meta.expires_at.is_some_and(|e| e <= crate::now_secs()) {
        return Err(Deny::unavailable(
            Code::SecretExpired,
            format!("the secret for tool `{}` has expired", tool.name),
        ));
    }
    st.catalog.credential(tool.name.as_str()).ok_or_else(|| {
        Deny::unavailable(
            Code::SecretUnavailable,
            format!(
                "the secret for tool `{}` has not been fetched from the broker yet",
                tool.name
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_are_for_the_token_holder_or_everyone_if_opened_else_nobody() {
        use secrecy::SecretString;
        let with = |bearer: Option<&str>| {
            let mut h = http::HeaderMap::new();
            if let Some(b) = bearer {
                h.insert(http::header::AUTHORIZATION, b.parse().unwrap());
            }
            h
        };
        let none = crate::ProxyConfig::default();
        assert!(super::may_scrape(&none, &with(Some("Bearer x"))).is_err());
        let open = crate::ProxyConfig {
            unauthenticated_metrics_access: true,
            ..Default::default()
        };
        assert!(super::may_scrape(&open, &with(None)).is_ok());
        let locked = crate::ProxyConfig {
            metrics_token: Some(SecretString::from("s3cret".to_owned())),
            ..Default::default()
        };
        assert!(super::may_scrape(&locked, &with(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let d = super::may_scrape(&locked, &with(bad)).unwrap_err();
            assert_eq!(
                (d.status.as_u16(), d.code.as_str()),
                (401, "unauthorized"),
                "{bad:?}"
            );
        }
    }
}
