//! Two kinds of failure: the proxy cannot start or run ([`ProxyError`]),
//! and a request is refused ([`Deny`], answered as
//! `{"error":{"code","message"}}`). Neither ever carries a token or a
//! secret value.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use mandate_policy::{Refusal, Refused};
use std::path::PathBuf;

/// Why the proxy could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    ParseConfig { path: PathBuf, message: String },
    /// A configuration key (or its `MANDATE_PROXY_*` variable) is wrong.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("audit spool in {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("http client: {0}")]
    Client(String),
    #[error("proxy server stopped with an error: {0}")]
    Serve(std::io::Error),
}

impl ProxyError {
    pub(crate) fn config(key: &str, message: impl ToString) -> Self {
        ProxyError::Config {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal;)*) => {
        /// Why the proxy refused a call: a decision on the token
        /// ([`Refusal`], shared with the broker's `/v1/authorize`) or one of
        /// the proxy's own reasons. `as_str` is the wire form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            Refused(Refusal),
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// The proxy's own codes (the decision codes are [`Refusal::ALL`]).
            pub const OWN: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    Code::Refused(r) => r.as_str(),
                    $(Code::$variant => $code,)*
                }
            }
        }
    };
}

codes! {
    /// No `Authorization` header (on the egress listener: no
    /// `Proxy-Authorization`).
    MissingToken = "missing_token";
    /// `Authorization` is not the Bearer or DPoP scheme (on the egress
    /// listener: `Proxy-Authorization` is not Bearer or Basic with a token).
    InvalidRequest = "invalid_request";
    /// `/metrics` without its token.
    Unauthorized = "unauthorized";
    NotReady = "not_ready";
    BrokerUnavailable = "broker_unavailable";
    AuditUnavailable = "audit_unavailable";
    /// The tool hands its secret out or has no upstream.
    NotProxied = "not_proxied";
    BadPath = "bad_path";
    MethodOverride = "method_override";
    BadBody = "bad_body";
    BodyTooLarge = "body_too_large";
    BodyTimeout = "body_timeout";
    ProxyBusy = "proxy_busy";
    NoSecret = "no_secret";
    SecretExpired = "secret_expired";
    SecretUnavailable = "secret_unavailable";
    BadUpstreamUrl = "bad_upstream_url";
    UpstreamEncoded = "upstream_encoded";
    UpstreamFailed = "upstream_failed";
    UpstreamTimeout = "upstream_timeout";
    UpstreamUnreachable = "upstream_unreachable";
    /// Egress listener: anything but `CONNECT`.
    NotConnect = "not_connect";
    /// Egress listener: not an HTTP/1 request head, or one too large.
    BadRequest = "bad_request";
    /// Egress listener: the `CONNECT` target is not `host:port`.
    BadTarget = "bad_target";
    /// Egress listener: no `reveal` tool of the token's task declares the host.
    EgressDenied = "egress_denied";
    /// Egress listener: a DPoP-bound token, whose possession a tunnel
    /// cannot prove.
    DpopBoundToken = "dpop_bound_token";
}

/// Compares the wire form.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Algorithms a DPoP proof may be signed with (`WWW-Authenticate`'s `algs`):
/// [`mandate_token::ACCEPTED_ALG_NAMES`], pinned by a test.
pub const DPOP_ALGS: &str = "EdDSA Ed25519 ES256 RS256";

/// A refused request: status, a stable machine code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Policy reasons, when policy decided; the audit record lists these.
    pub reasons: Vec<String>,
    /// The approval request to wait on (`approval_pending`) or that a
    /// person denied (`approval_denied`).
    pub approval: Option<mandate_core::ApprovalId>,
}

/// A decision's refusal, answered with the status its code carries.
impl From<Refused> for Deny {
    fn from(r: Refused) -> Self {
        Deny {
            approval: r.approval().cloned(),
            status: StatusCode::from_u16(r.refusal.status()).unwrap_or(StatusCode::FORBIDDEN),
            code: Code::Refused(r.refusal),
            message: r.message,
            reasons: r.reasons,
        }
    }
}

impl Deny {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Deny {
            status,
            code,
            message: message.into(),
            reasons: Vec::new(),
            approval: None,
        }
    }

    pub fn with_reasons(mut self, reasons: Vec<String>) -> Self {
        self.reasons = reasons;
        self
    }
    /// The token is missing, malformed, expired, revoked or not ours.
    pub fn token(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    /// Authenticated, but not allowed: policy, scope, route, environment, audience.
    pub fn forbidden(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// The proxy cannot decide right now (broker stale or unreachable, not loaded).
    pub fn unavailable(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// The request body is over `max_body_bytes`.
    pub fn body_too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BodyTooLarge,
            format!("request bodies are limited to {max} bytes"),
        )
    }
    /// The upstream is down or answered something we cannot pass on safely.
    pub fn upstream(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// How the refusal reads in an audit record: the policy's reasons, or
    /// `code: message`.
    pub fn audit_reasons(&self) -> Vec<String> {
        if self.reasons.is_empty() {
            vec![format!("{}: {}", self.code, self.message)]
        } else {
            self.reasons.clone()
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut error = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(id) = &self.approval {
            error["approval_id"] = serde_json::json!(id);
        }
        serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default()
    }

    pub fn into_response(self, request_id: &str) -> Response {
        let body = self.body();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) || self.code == Code::ProxyBusy
        {
            // The request's body was not read to its end, so the connection
            // cannot carry another request: say so, or a client reuses it
            // and its next request fails.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3 / RFC 9449 §7.1: tell the client which scheme and why.
            let challenge = if self.code == Code::Refused(Refusal::InvalidDpopProof) {
                format!(r#"DPoP error="invalid_dpop_proof", algs="{}""#, DPOP_ALGS)
            } else {
                format!(
                    r#"Bearer error="invalid_token", error_description="{}", DPoP algs="{}""#,
                    self.code, DPOP_ALGS
                )
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dpop_algs_are_the_accepted_names() {
        assert_eq!(
            super::DPOP_ALGS,
            mandate_token::ACCEPTED_ALG_NAMES.join(" ")
        );
    }

    /// The OpenAPI description names every refusal code and every metric:
    /// a new one fails here until it is documented.
    #[test]
    fn the_openapi_description_names_every_code_and_metric() {
        let doc = include_str!("../openapi.json");
        let parsed: serde_json::Value = serde_json::from_str(doc).expect("valid JSON");
        assert_eq!(parsed["openapi"], "3.1.0");
        let codes = super::Code::OWN.iter().copied().chain(
            mandate_policy::Refusal::ALL
                .iter()
                .map(|r| super::Code::Refused(*r)),
        );
        let missing: Vec<_> = codes
            .map(|c| c.as_str())
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "undocumented refusal codes: {missing:?}"
        );
        let m = crate::metrics::Metrics::default();
        // Families show only once they have a member.
        m.request(Some("tool"), 200);
        m.decision(true, None);
        m.connections_open("0").inc();
        let metrics = m.render();
        let names: std::collections::BTreeSet<&str> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(names.len() >= 8, "{metrics}");
        for name in names {
            // Counters are exposed with `_total`.
            let shown = [name.to_owned(), format!("{name}_total")];
            assert!(
                shown.iter().any(|n| doc.contains(&format!("`{n}"))),
                "undocumented metric {name}"
            );
        }
    }
}
