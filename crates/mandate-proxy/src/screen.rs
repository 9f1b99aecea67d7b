//! Requests that would make the upstream act on another method or path
//! than the one the route rules mapped to an action: override headers, a
//! `_method` query parameter, and a `_method` field in a POST body, which
//! Rack, Symfony and Laravel read from form fields (Rack also when a POST
//! has no `Content-Type`), and Laravel and Express's `method-override`
//! from JSON. Refused with 400 `method_override`, never forwarded.

use crate::budget::{BodyBudget, Screened};
use crate::error::{Code, Deny};
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

fn refusal(what: &str) -> Deny {
    Deny::new(
        http::StatusCode::BAD_REQUEST,
        Code::MethodOverride,
        format!(
            "{what} would make the upstream act on another method or path than the route rules checked; the proxy does not forward it"
        ),
    )
}

/// Headers some frameworks honour to change the method or path they route
/// on (Symfony, IIS, Google APIs, Rack, Express `method-override`).
const REINTERPRETING: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

/// Refuse requests that ask the upstream to act on another method or path
/// than the one the route rules mapped: override headers, and `_method` in
/// the query (Symfony reads it there). The body is [`screen_body`]'s.
pub fn check_overrides(headers: &HeaderMap, query: Option<&str>) -> Result<(), Deny> {
    let refuse = |what: String| Err(refusal(&what));
    if let Some(h) = REINTERPRETING.iter().find(|h| headers.contains_key(**h)) {
        return refuse(format!("header `{h}`"));
    }
    let method_param = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, _)| k.eq_ignore_ascii_case("_method"));
    if method_param {
        return refuse("query parameter `_method`".to_owned());
    }
    Ok(())
}

/// How a POST body could carry `_method` to a framework that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyForm {
    UrlEncoded,
    Multipart,
    Json,
}

/// Only POST is overridden by these frameworks. A POST without a
/// `Content-Type`, or with one that is not readable text, is read as a
/// form (as Rack does when the header is missing).
fn body_form(method: &Method, headers: &HeaderMap) -> Option<BodyForm> {
    if method != Method::POST {
        return None;
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Some(BodyForm::UrlEncoded);
    };
    let Ok(ct) = ct.to_str() else {
        return Some(BodyForm::UrlEncoded);
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/x-www-form-urlencoded" => Some(BodyForm::UrlEncoded),
        "multipart/form-data" => Some(BodyForm::Multipart),
        m if m.ends_with("/json") || m.ends_with("+json") => Some(BodyForm::Json),
        _ => None,
    }
}

/// Whether `body`, read as `form`, has a `_method` field (any case).
fn has_method_field(form: BodyForm, body: &[u8]) -> bool {
    const FIELD: &str = "_method";
    match form {
        BodyForm::UrlEncoded => {
            form_urlencoded::parse(body).any(|(k, _)| k.eq_ignore_ascii_case(FIELD))
        }
        // A part named `_method` (quoted as browsers send it, or not).
        BodyForm::Multipart => [&b"name=\"_method\""[..], b"name=_method"]
            .iter()
            .any(|needle| {
                body.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
            }),
        BodyForm::Json => {
            serde_json::from_slice::<std::collections::HashMap<String, serde::de::IgnoredAny>>(body)
                .is_ok_and(|fields| fields.keys().any(|k| k.eq_ignore_ascii_case(FIELD)))
        }
    }
}

/// The body to forward, or why not: one announcing more than `max_body`
/// bytes is refused; a POST form or JSON body is read whole (each piece
/// within `timeout`) and refused if it carries `_method`; any other goes
/// on as it came (cut off at the limit while streaming).
pub async fn screen_body(
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<Body, Deny> {
    if crate::forward::announced_too_large(headers, max_body) {
        return Err(Deny::body_too_large(max_body));
    }
    let Some(form) = body_form(method, headers) else {
        return Ok(body);
    };
    // A slow upload is fine as long as it keeps coming: the timeout is
    // per piece, as for an upstream's answer.
    let mut body = Limited::new(body, max_body);
    let mut read = bytes::BytesMut::new();
    let mut held = budget.share();
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => {
                return Err(Deny::new(
                    http::StatusCode::REQUEST_TIMEOUT,
                    Code::BodyTimeout,
                    format!(
                        "no part of the request body arrived for {}s",
                        timeout.as_secs()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Deny::body_too_large(max_body));
            }
            Ok(Some(Err(_))) => {
                return Err(Deny::new(
                    http::StatusCode::BAD_REQUEST,
                    Code::BadBody,
                    "the request body could not be read",
                ));
            }
            // Data is kept; request trailers are not forwarded.
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    budget.cover(&mut held, read.len() + data.len())?;
                    read.extend_from_slice(&data);
                }
            }
        }
    }
    let bytes: Bytes = read.freeze();
    if has_method_field(form, &bytes) {
        return Err(refusal("a `_method` field in the body"));
    }
    Ok(Body::new(Screened::new(bytes, held)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_path_overrides_are_refused() {
        let with = |name: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "DELETE".parse().unwrap(),
            );
            m
        };
        for h in [
            "X-HTTP-Method-Override",
            "x-original-url",
            "X-Method-Override",
        ] {
            let d = check_overrides(&with(h), None).unwrap_err();
            assert_eq!(d.code, "method_override");
            assert!(d.message.contains(&h.to_ascii_lowercase()), "{}", d.message);
        }
        for q in ["_method=DELETE", "a=1&_METHOD=put", "%5Fmethod=delete"] {
            let d = check_overrides(&HeaderMap::new(), Some(q)).unwrap_err();
            assert!(d.message.contains("`_method`"), "{q}: {}", d.message);
        }
        let fine = with("x-request-id");
        assert!(check_overrides(&fine, Some("method=x&my_method=y")).is_ok());
        assert!(check_overrides(&HeaderMap::new(), None).is_ok());
    }

    #[test]
    fn post_bodies_are_read_by_their_content_type() {
        let ct = |v: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            }
            h
        };
        let post = |v| body_form(&Method::POST, &ct(v));
        assert_eq!(
            post(None),
            Some(BodyForm::UrlEncoded),
            "Rack reads a bare POST as a form"
        );
        assert_eq!(
            post(Some("Application/X-WWW-Form-Urlencoded; charset=utf-8")),
            Some(BodyForm::UrlEncoded)
        );
        assert_eq!(
            post(Some("multipart/form-data; boundary=x")),
            Some(BodyForm::Multipart)
        );
        assert_eq!(post(Some("application/json")), Some(BodyForm::Json));
        assert_eq!(post(Some("application/vnd.api+json")), Some(BodyForm::Json));
        assert_eq!(post(Some("application/octet-stream")), None);
        assert_eq!(post(Some("text/plain")), None);
        for m in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(body_form(&m, &ct(None)), None, "{m} is not overridden");
        }
    }

    #[test]
    fn a_method_field_is_found_in_each_form() {
        use BodyForm::*;
        for (form, body) in [
            (UrlEncoded, &b"title=x&_method=DELETE"[..]),
            (UrlEncoded, b"%5F%4Dethod=put"),
            (
                Multipart,
                b"--x\r\nContent-Disposition: form-data; NAME=\"_Method\"\r\n\r\nDELETE\r\n--x--",
            ),
            (
                Multipart,
                b"--x\r\ncontent-disposition: form-data; name=_method\r\n\r\nPUT",
            ),
            (Json, br#"{"title": "x", "_method": "DELETE"}"#),
            (Json, br#"{"_METHOD": "PUT"}"#),
        ] {
            assert!(
                has_method_field(form, body),
                "{form:?}: {}",
                String::from_utf8_lossy(body)
            );
        }
        for (form, body) in [
            (UrlEncoded, &b"method=DELETE&my_method=x&title=_method"[..]),
            (
                Multipart,
                b"--x\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n_method\r\n--x--",
            ),
            (
                Json,
                br#"{"title": "_method", "nested": {"_method": "DELETE"}}"#,
            ),
            (Json, br#"["_method"]"#),
            (Json, b"not json"),
        ] {
            assert!(
                !has_method_field(form, body),
                "{form:?}: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[tokio::test]
    async fn screened_bodies_are_forwarded_whole_or_refused() {
        let form = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            h
        };
        let t = Duration::from_secs(5);
        let budget = BodyBudget::new(1 << 20, Default::default());
        let json = form("application/json");
        let ok = screen_body(
            &Method::POST,
            &json,
            Body::from(r#"{"a":1}"#),
            100,
            t,
            &budget,
        )
        .await
        .unwrap();
        let sent = ok.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], br#"{"a":1}"#);
        let d = screen_body(
            &Method::POST,
            &json,
            Body::from(r#"{"_method":"DELETE"}"#),
            100,
            t,
            &budget,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (d.status.as_u16(), d.code.as_str()),
            (400, "method_override")
        );
        let d = screen_body(
            &Method::POST,
            &json,
            Body::from("x".repeat(101)),
            100,
            t,
            &budget,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (d.status.as_u16(), d.code.as_str()),
            (413, "body_too_large")
        );
        // Not a POST: streamed on as it is, whatever it holds.
        let put = screen_body(
            &Method::PUT,
            &json,
            Body::from(r#"{"_method":"DELETE"}"#),
            5,
            t,
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(put.collect().await.unwrap().to_bytes().len(), 20);
    }

    /// The timeout is per piece: a body that keeps coming is read however
    /// long it takes in all; one that stalls is refused.
    #[tokio::test]
    async fn a_stalled_body_times_out_and_a_slow_one_does_not() {
        use futures::StreamExt;
        let json = {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h
        };
        let t = Duration::from_millis(150);
        let budget = BodyBudget::new(1 << 20, Default::default());
        let pieces = ["{\"a\"", ":", "1}"];
        let slow = futures::stream::iter(pieces).then(|p| async move {
            tokio::time::sleep(Duration::from_millis(80)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(p.as_bytes()))
        });
        let ok = screen_body(
            &Method::POST,
            &json,
            Body::from_stream(slow),
            100,
            t,
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(&ok.collect().await.unwrap().to_bytes()[..], br#"{"a":1}"#);
        let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let d = screen_body(
            &Method::POST,
            &json,
            Body::from_stream(stalled),
            100,
            t,
            &budget,
        )
        .await
        .unwrap_err();
        assert_eq!((d.status.as_u16(), d.code.as_str()), (408, "body_timeout"));
    }
}
