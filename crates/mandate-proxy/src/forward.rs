//! Sending an allowed request upstream and the answer back: the agent's
//! credential and hop-by-hop headers out, the upstream secret in, and the
//! response streamed through the redactor so the secret never flows back.

use crate::catalog::{Credential, Placement};
use crate::error::{Code, Deny, ProxyError};
use crate::record::CallRecord;
use crate::redact::{Patterns, Redactor};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::stream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The pooled upstream client (HTTP/1.1 and HTTP/2, TLS by rustls).
pub type Upstream = Client<HttpsConnector<HttpConnector>, Body>;

/// `extra_roots` are trusted beside the public web roots (a private CA).
pub fn client(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Upstream, ProxyError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| ProxyError::config("ca_file", format!("unusable certificate: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ProxyError::Client(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(https))
}

/// Connection-level headers (RFC 9110 §7.6.1) never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Headers by which a client speaks for a proxy in front of it: an upstream
/// that trusts them (for an IP allow-list, or links it builds) would take
/// the agent's word for where the call came from. The proxy cannot vouch
/// for them, so none is forwarded.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// The headers the upstream gets: the agent's, less its credential, the
/// hop-by-hop and forwarding ones and anything in the injection's place;
/// identity encoding only (so the answer can be scanned).
pub fn upstream_headers(mut h: HeaderMap, cred: &Credential) -> HeaderMap {
    strip_hop_by_hop(&mut h);
    for n in [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::HOST,
        header::ACCEPT_ENCODING,
    ] {
        h.remove(n);
    }
    for n in FORWARDING {
        h.remove(*n);
    }
    h.remove("dpop");
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Placement::Header(name, value) = &cred.place {
        // `insert` replaces every value the agent sent under this name.
        h.insert(name.clone(), value.clone());
    }
    h
}

/// The agent's query with the injected parameter (any copy the agent sent
/// of it removed, so the upstream cannot pick the agent's).
fn query_with(query: Option<&str>, cred: &Credential) -> Option<Zeroizing<String>> {
    match &cred.place {
        Placement::Query(param, value) => {
            let mut out = Zeroizing::new(String::new());
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let name = pair.split('=').next().unwrap_or("");
                let decoded: String = form_urlencoded::parse(name.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default();
                if decoded == *param {
                    continue;
                }
                out.push_str(pair);
                out.push('&');
            }
            let name: String = form_urlencoded::byte_serialize(param.as_bytes()).collect();
            out.push_str(&name);
            out.push('=');
            out.push_str(value.expose_secret());
            Some(out)
        }
        Placement::Header(..) => query.map(|q| Zeroizing::new(q.to_owned())),
    }
}

fn upstream_uri(base: &str, rest: &str, query: Option<&str>, cred: &Credential) -> Option<Uri> {
    let mut s = Zeroizing::new(String::with_capacity(base.len() + rest.len() + 64));
    s.push_str(base.trim_end_matches('/'));
    s.push_str(rest);
    if let Some(q) = query_with(query, cred) {
        s.push('?');
        s.push_str(&q);
    }
    // The parse error says nothing about the input, so it cannot leak the query.
    Uri::try_from(s.as_str()).ok()
}

/// Response headers the agent may see: no hop-by-hop, no length (the
/// redactor may change it; a whole body gets its own), every injected
/// form redacted.
fn agent_headers(mut h: HeaderMap, cred: &Credential) -> HeaderMap {
    strip_hop_by_hop(&mut h);
    h.remove(header::CONTENT_LENGTH);
    let mut out = HeaderMap::with_capacity(h.len());
    let mut last: Option<HeaderName> = None;
    for (name, value) in h {
        let name = match name {
            Some(n) => {
                last = Some(n.clone());
                n
            }
            None => match &last {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        match cred.patterns.redact_whole(value.as_bytes()) {
            None => {
                out.append(name, value);
            }
            Some(clean) => {
                if let Ok(v) = HeaderValue::from_bytes(&clean) {
                    out.append(name, v);
                }
            }
        }
    }
    out
}

/// `Content-Encoding` other than identity cannot be scanned for the secret.
fn encoded(h: &HeaderMap) -> Option<String> {
    h.get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .find(|c| !c.is_empty() && c != "identity")
}

/// Bodies up to this size that announce their length are read whole,
/// redacted at once and sent with an exact `Content-Length` in one write;
/// larger or unsized ones are streamed through the redactor (chunked).
const WHOLE_BODY_MAX: u64 = 64 * 1024;

fn announced_len(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A request announcing more than `max_body` bytes is refused before
/// anything goes upstream (`screen_body`; an unannounced one is cut off at
/// the limit).
pub(crate) fn announced_too_large(h: &HeaderMap, max_body: usize) -> bool {
    announced_len(h).is_some_and(|n| n > max_body as u64)
}

/// The length of an answer to read whole, or `None` to stream it (too
/// large, unsized, or the answer to a HEAD, which has no body).
fn whole_len(h: &HeaderMap, head: bool) -> Option<u64> {
    announced_len(h).filter(|&n| n <= WHOLE_BODY_MAX && !head)
}

pub struct Forward<'a> {
    pub upstream: &'a Upstream,
    pub base: &'a str,
    pub rest: &'a str,
    pub cred: Arc<Credential>,
    pub timeout: Duration,
    pub max_body: usize,
}

/// Forward and stream the answer back. Every outcome ends in `call`'s record.
pub async fn forward(
    f: Forward<'_>,
    parts: http::request::Parts,
    body: Body,
    mut call: CallRecord,
) -> Response {
    let Some(uri) = upstream_uri(f.base, f.rest, parts.uri.query(), &f.cred) else {
        return call.deny(Deny::upstream(
            Code::BadUpstreamUrl,
            "the tool's upstream URL and this path do not form a valid URL",
        ));
    };
    let head = parts.method == http::Method::HEAD;
    let mut req = Request::new(Body::new(Limited::new(body, f.max_body)));
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = upstream_headers(parts.headers, &f.cred);
    // The same id as the audit record, so upstream logs can be joined to it.
    if let Ok(v) = HeaderValue::from_str(&call.id) {
        req.headers_mut().insert("x-request-id", v);
    }

    let sent = Instant::now();
    let resp = match tokio::time::timeout(f.timeout, f.upstream.request(req)).await {
        Err(_) => {
            return call.deny(Deny::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                Code::UpstreamTimeout,
                format!(
                    "the upstream did not answer within {}s",
                    f.timeout.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            let detail = error_chain(&e, &f.cred.patterns);
            tracing::warn!(error = %detail, "upstream request failed");
            let too_large = detail.contains("length limit exceeded");
            return call.deny(if too_large {
                Deny::body_too_large(f.max_body)
            } else {
                Deny::upstream(
                    Code::UpstreamUnreachable,
                    "the upstream could not be reached",
                )
            });
        }
        Ok(Ok(r)) => r,
    };
    call.upstream_latency(sent.elapsed());
    let (parts, incoming) = resp.into_parts();
    if let Some(enc) = encoded(&parts.headers) {
        return call.deny(Deny::upstream(
            Code::UpstreamEncoded,
            format!(
                "the upstream sent a `{}`-encoded body, which the proxy cannot scan for the secret; refused",
                enc.chars().take(32).collect::<String>()
            ),
        ));
    }
    call.status = parts.status.as_u16();
    let whole = whole_len(&parts.headers, head);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = parts.status;
    *out.headers_mut() = agent_headers(parts.headers, &f.cred);
    if let Ok(v) = HeaderValue::from_str(&call.id) {
        out.headers_mut().insert("x-request-id", v);
    }
    if let Some(len) = whole {
        let body = match read_whole(incoming, len, f.timeout, &f.cred.patterns).await {
            Ok(b) => b,
            Err(d) => return call.deny(d),
        };
        out.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        call.bytes = body.len() as u64;
        call.complete();
        *out.body_mut() = Body::from(body);
        return out;
    }
    *out.body_mut() = redacted_body(
        incoming,
        Redactor::new(f.cred.patterns.clone()),
        f.timeout,
        call,
    );
    out
}

/// A small body read whole (the answer is not started yet, so a failure
/// is still a clean 502/504) and redacted at once.
async fn read_whole(
    body: hyper::body::Incoming,
    len: u64,
    timeout: Duration,
    patterns: &Patterns,
) -> Result<Bytes, Deny> {
    let read = tokio::time::timeout(timeout, Limited::new(body, len as usize).collect());
    let bytes = match read.await {
        Err(_) => {
            return Err(Deny::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                Code::UpstreamTimeout,
                format!(
                    "the upstream body did not arrive within {}s",
                    timeout.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&*e, patterns), "upstream body failed");
            return Err(Deny::upstream(
                Code::UpstreamFailed,
                "the upstream body broke off or did not match its Content-Length",
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    Ok(match patterns.redact_whole(&bytes) {
        Some(clean) => Bytes::from(clean),
        None => bytes,
    })
}

/// An error and its causes on one line, with any form of the secret redacted.
fn error_chain(e: &dyn std::error::Error, patterns: &Patterns) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    match patterns.redact_whole(msg.as_bytes()) {
        Some(clean) => String::from_utf8_lossy(&clean).into_owned(),
        None => msg,
    }
}

struct Streaming {
    body: hyper::body::Incoming,
    redactor: Redactor,
    idle: Duration,
    call: CallRecord,
}

/// The upstream body through the redactor; the call's record is written
/// when the stream ends, fails, or the agent goes away (drop).
fn redacted_body(
    body: hyper::body::Incoming,
    redactor: Redactor,
    idle: Duration,
    call: CallRecord,
) -> Body {
    let state = Some(Streaming {
        body,
        redactor,
        idle,
        call,
    });
    Body::from_stream(stream::unfold(state, |state| async move {
        let mut s = state?;
        loop {
            match tokio::time::timeout(s.idle, s.body.frame()).await {
                Err(_) => {
                    s.call.fail("upstream_timeout: the upstream body stalled");
                    return Some((Err(std::io::Error::other("upstream body stalled")), None));
                }
                Ok(Some(Err(e))) => {
                    let detail = error_chain(&e, s.redactor.patterns());
                    tracing::warn!(error = %detail, "upstream body failed");
                    s.call.fail("upstream_failed: the upstream body broke off");
                    return Some((Err(std::io::Error::other("upstream body failed")), None));
                }
                Ok(None) => {
                    let tail = s.redactor.finish();
                    s.call.bytes += tail.len() as u64;
                    s.call.complete();
                    return if tail.is_empty() {
                        None
                    } else {
                        Some((Ok::<Bytes, std::io::Error>(tail), None))
                    };
                }
                Ok(Some(Ok(frame))) => {
                    // Trailers are dropped: they are rare and could carry anything.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let out = s.redactor.push(&data);
                    if out.is_empty() {
                        continue;
                    }
                    s.call.bytes += out.len() as u64;
                    return Some((Ok(out), Some(s)));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::Injection;
    use secrecy::SecretString;

    /// `/` and `+` so the query form differs from the raw one.
    const SECRET: &str = "s3cr3t/v+1";
    const SECRET_IN_QUERY: &str = "s3cr3t%2Fv%2B1";

    fn cred(inject: Injection) -> Credential {
        Credential::new(7, SecretString::from(SECRET.to_owned()), &inject).unwrap()
    }

    fn api_key_header(prefix: &str) -> Credential {
        cred(Injection::Header {
            name: "x-api-key".into(),
            prefix: prefix.into(),
        })
    }

    fn query_param(param: &str) -> Credential {
        cred(Injection::Query {
            param: param.into(),
        })
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn the_agents_credentials_connection_and_forwarding_headers_never_reach_the_upstream() {
        let agent = headers(&[
            ("authorization", b"DPoP agent-access-token"),
            ("dpop", b"agent-proof"),
            ("proxy-authorization", b"Basic YWdlbnQ6cHc="),
            ("host", b"proxy.local:8400"),
            ("accept-encoding", b"gzip, br"),
            ("connection", b"keep-alive"),
            ("keep-alive", b"timeout=5"),
            ("proxy-connection", b"keep-alive"),
            ("te", b"trailers"),
            ("trailer", b"x-checksum"),
            ("transfer-encoding", b"chunked"),
            ("upgrade", b"h2c"),
            ("forwarded", b"for=10.0.0.1"),
            ("x-forwarded-for", b"10.0.0.1"),
            ("x-forwarded-host", b"internal.example"),
            ("x-forwarded-proto", b"https"),
            ("x-real-ip", b"10.0.0.1"),
            ("true-client-ip", b"10.0.0.1"),
            ("content-type", b"application/json"),
            ("user-agent", b"agent/1"),
            ("x-custom", b"a"),
            ("x-custom", b"b"),
        ]);
        let h = upstream_headers(agent, &api_key_header(""));
        for gone in [
            "authorization",
            "dpop",
            "proxy-authorization",
            "host",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
            "true-client-ip",
        ] {
            assert!(h.get(gone).is_none(), "`{gone}` was forwarded");
        }
        assert_eq!(values(&h, "accept-encoding"), ["identity"]);
        assert_eq!(values(&h, "content-type"), ["application/json"]);
        assert_eq!(values(&h, "user-agent"), ["agent/1"]);
        assert_eq!(values(&h, "x-custom"), ["a", "b"]);
        assert_eq!(values(&h, "x-api-key"), [SECRET]);
        assert_eq!(h.keys_len(), 5, "only these names remain: {h:?}");
    }

    #[test]
    fn headers_the_connection_header_names_are_dropped_too() {
        let agent = headers(&[
            ("connection", b"close, X-Hop-One"),
            ("connection", b" x-hop-two ,, not a name"),
            ("x-hop-one", b"1"),
            ("x-hop-two", b"2"),
            ("x-kept", b"3"),
        ]);
        let h = upstream_headers(agent, &cred(Injection::Bearer));
        assert!(h.get("x-hop-one").is_none());
        assert!(h.get("x-hop-two").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(values(&h, "x-kept"), ["3"]);
    }

    #[test]
    fn the_injected_header_replaces_every_copy_the_agent_sent() {
        let agent = || {
            headers(&[
                ("authorization", b"Bearer agent-one"),
                ("authorization", b"Bearer agent-two"),
                ("x-api-key", b"agent-key"),
                ("X-Api-Key", b"agent-key-2"),
            ])
        };

        let h = upstream_headers(agent(), &cred(Injection::Bearer));
        assert_eq!(values(&h, "authorization"), [format!("Bearer {SECRET}")]);
        assert!(h.get("authorization").unwrap().is_sensitive());
        // Not this tool's header, but still the agent's: passed through.
        assert_eq!(values(&h, "x-api-key"), ["agent-key", "agent-key-2"]);

        let h = upstream_headers(agent(), &api_key_header("Token "));
        assert_eq!(values(&h, "x-api-key"), [format!("Token {SECRET}")]);
        assert!(h.get("x-api-key").unwrap().is_sensitive());
        assert!(h.get("authorization").is_none());

        let h = upstream_headers(
            agent(),
            &cred(Injection::Basic {
                username: "ci".into(),
            }),
        );
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("ci:{SECRET}"));
        assert_eq!(values(&h, "authorization"), [format!("Basic {pair}")]);

        // Query injection puts nothing in the headers, and the agent's
        // `Authorization` is still not forwarded.
        let h = upstream_headers(agent(), &query_param("api_key"));
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn query_injection_appends_the_encoded_secret() {
        let c = query_param("api_key");
        let expect = format!("api_key={SECRET_IN_QUERY}");
        assert_eq!(query_with(None, &c).unwrap().as_str(), expect);
        assert_eq!(query_with(Some(""), &c).unwrap().as_str(), expect);
        assert_eq!(
            query_with(Some("a=1&b=two%20words"), &c).unwrap().as_str(),
            format!("a=1&b=two%20words&{expect}")
        );
        assert_eq!(
            query_with(Some("&a=1&&b=2&"), &c).unwrap().as_str(),
            format!("a=1&b=2&{expect}")
        );
    }

    #[test]
    fn every_agent_copy_of_the_injected_param_is_removed() {
        let c = query_param("api_key");
        let q = "api_key=evil&a=1&api%5Fkey=evil2&api_key&api_keyx=kept&x=api_key&api_key=";
        assert_eq!(
            query_with(Some(q), &c).unwrap().as_str(),
            format!("a=1&api_keyx=kept&x=api_key&api_key={SECRET_IN_QUERY}")
        );
    }

    #[test]
    fn the_injected_param_name_is_form_encoded_and_matched_decoded() {
        let c = query_param("api key");
        assert_eq!(
            query_with(Some("api+key=evil&api%20key=evil&apikey=kept"), &c)
                .unwrap()
                .as_str(),
            format!("apikey=kept&api+key={SECRET_IN_QUERY}")
        );
    }

    #[test]
    fn header_injection_leaves_the_query_as_the_agent_sent_it() {
        let c = api_key_header("");
        assert!(query_with(None, &c).is_none());
        assert_eq!(
            query_with(Some("api_key=mine&&x"), &c).unwrap().as_str(),
            "api_key=mine&&x"
        );
    }

    #[test]
    fn the_upstream_url_is_base_then_path_then_query() {
        let bearer = cred(Injection::Bearer);
        fn uri(base: &str, rest: &str, q: Option<&str>, c: &Credential) -> Option<String> {
            upstream_uri(base, rest, q, c).map(|u| u.to_string())
        }
        assert_eq!(
            uri("https://api.test/v1/", "/repos/a", Some("page=2"), &bearer).as_deref(),
            Some("https://api.test/v1/repos/a?page=2")
        );
        assert_eq!(
            uri("https://api.test//", "/x", None, &bearer).as_deref(),
            Some("https://api.test/x")
        );
        assert_eq!(
            uri("https://api.test", "/", None, &query_param("k")).as_deref(),
            Some(&*format!("https://api.test/?k={SECRET_IN_QUERY}"))
        );
        assert_eq!(uri("not a url", "/x", None, &bearer), None);
    }

    #[test]
    fn answer_headers_lose_connection_headers_and_length_and_every_form_of_the_secret() {
        let upstream = headers(&[
            ("content-length", b"10"),
            ("connection", b"x-up"),
            ("x-up", b"1"),
            ("transfer-encoding", b"chunked"),
            ("content-type", b"text/plain"),
            ("x-echo", format!("Bearer {SECRET}").as_bytes()),
            ("set-cookie", b"a=1"),
            ("set-cookie", format!("b={SECRET}").as_bytes()),
            ("set-cookie", format!("c={SECRET_IN_QUERY}").as_bytes()),
        ]);
        let h = agent_headers(upstream, &query_param("k"));
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(h.get("x-up").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(values(&h, "content-type"), ["text/plain"]);
        assert_eq!(values(&h, "x-echo"), ["Bearer [REDACTED]"]);
        assert_eq!(
            values(&h, "set-cookie"),
            ["a=1", "b=[REDACTED]", "c=[REDACTED]"]
        );
    }

    #[test]
    fn only_identity_encoded_answers_can_be_scanned() {
        let enc = |pairs: &[(&str, &[u8])]| encoded(&headers(pairs));
        assert_eq!(enc(&[]), None);
        assert_eq!(enc(&[("content-encoding", b"identity")]), None);
        assert_eq!(enc(&[("content-encoding", b"IDENTITY")]), None);
        assert_eq!(enc(&[("content-encoding", b"identity, ")]), None);
        assert_eq!(
            enc(&[("content-encoding", b"GZip")]).as_deref(),
            Some("gzip")
        );
        assert_eq!(
            enc(&[("content-encoding", b"identity, br")]).as_deref(),
            Some("br")
        );
        assert_eq!(
            enc(&[
                ("content-encoding", b"identity"),
                ("content-encoding", b"deflate")
            ])
            .as_deref(),
            Some("deflate")
        );
        assert_eq!(
            enc(&[("content-encoding", b"\xffzip")]).as_deref(),
            Some("?")
        );
    }

    #[test]
    fn a_request_announcing_more_than_the_limit_is_too_large() {
        let len = |v: &[u8]| headers(&[("content-length", v)]);
        assert!(!announced_too_large(&len(b"100"), 100));
        assert!(announced_too_large(&len(b"101"), 100));
        assert!(!announced_too_large(&HeaderMap::new(), 100));
        assert!(!announced_too_large(&len(b"lots"), 0));
    }

    #[test]
    fn small_sized_answers_are_read_whole_and_others_streamed() {
        let len = |n: u64| headers(&[("content-length", n.to_string().as_bytes())]);
        assert_eq!(whole_len(&len(0), false), Some(0));
        assert_eq!(whole_len(&len(WHOLE_BODY_MAX), false), Some(WHOLE_BODY_MAX));
        assert_eq!(whole_len(&len(WHOLE_BODY_MAX + 1), false), None);
        assert_eq!(whole_len(&len(10), true), None);
        assert_eq!(whole_len(&HeaderMap::new(), false), None);
    }

    #[derive(Debug)]
    struct Failed(&'static str, Option<Box<Failed>>);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn upstream_errors_are_logged_with_their_causes_and_without_the_secret() {
        let e = Failed(
            "request failed",
            Some(Box::new(Failed(
                "connect",
                Some(Box::new(Failed("refused ?k=s3cr3t%2Fv%2B1", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e, &query_param("k").patterns),
            "request failed: connect: refused ?k=[REDACTED]"
        );
        assert_eq!(
            error_chain(&Failed("plain", None), &query_param("k").patterns),
            "plain"
        );
    }

    #[test]
    fn an_unusable_extra_root_is_a_ca_file_error() {
        let bad = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0x00]);
        match client(&[bad]) {
            Err(ProxyError::Config { key, .. }) => assert_eq!(key, "ca_file"),
            Err(e) => panic!("expected a ca_file error, got {e}"),
            Ok(_) => panic!("a garbage certificate was accepted"),
        }
    }
}
