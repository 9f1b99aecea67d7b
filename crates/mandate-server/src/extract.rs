//! Request parsing at the edge: JSON with field-precise errors, OAuth forms
//! that refuse repeated parameters, request ids.

use crate::error::{ApiError, OAuthError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A JSON body. Errors name the field path (`scope[0].actions[1]`) and the
/// problem; oversize bodies get 413; nothing is applied on any error.
/// Handlers that need a right take `Result<ApiJson<T>, ApiError>` and open
/// it after the right check: a caller without the right gets 403 and learns
/// nothing about what the body should hold.
pub struct ApiJson<T>(pub T);

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if let Some(secs) = crate::deadline::timed_out(&e) {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("request body: not received within {secs} s (body_read_timeout_secs)"),
        )
    } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body exceeds the size limit",
        )
    } else {
        ApiError::bad_request(format!("cannot read request body: {e}"))
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The plain parse first: tracking the path costs several times the
    // parse itself (a fifth of the broker's CPU on audit batches), and is
    // only needed to word an error. Deserializing is deterministic, so the
    // second pass fails the same way, this time knowing where.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = deserialize(de)?;
    // One JSON value and nothing after it: `{…} junk` is not a body.
    de.end().map_err(|_| {
        ApiError::bad_request("body is not valid JSON: trailing characters after the JSON value")
    })?;
    Ok(value)
}

fn deserialize<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde_json appends " at line L column C"; the path is more useful.
        let message = message.split(" at line ").next().unwrap_or(&message);
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("body is not valid JSON: {message}")
        } else if path == "." || path.is_empty() {
            message.to_owned()
        } else if message.starts_with(&format!("{}:", path.rsplit('.').next().unwrap_or(""))) {
            // Our own `Invalid` errors already start with the field name.
            format!(
                "{path}: {}",
                message.split_once(": ").map(|x| x.1).unwrap_or(message)
            )
        } else {
            format!("{path}: {message}")
        };
        ApiError::bad_request(message)
    })
}

/// The body of a JSON request, after checking it says it is JSON.
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
    let is_json = |t: &str| {
        t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
    };
    match ct {
        Some(t) if is_json(&t) => Ok(bytes),
        None if bytes.is_empty() => Ok(bytes),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content-type: must be application/json",
        )),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty; expected a JSON object",
            ));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Path parameters, with the JSON error shape when they do not decode
/// (`/v1/agents/%FF` is not UTF-8). Admin handlers take
/// `Result<ApiPath<T>, ApiError>` and unwrap it after their right check,
/// so a caller without the right gets 403, never a 400 about the path.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
    }
}

/// An `application/x-www-form-urlencoded` OAuth request. RFC 6749 §3.2:
/// parameters sent more than once make the request invalid.
pub struct OAuthForm(pub HashMap<String, String>);

impl OAuthForm {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required")))
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;
    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        let ct = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "content-type must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if let Some(secs) = crate::deadline::timed_out(&e) {
                let mut err = OAuthError::invalid_request(format!(
                    "request body not received within {secs} s (body_read_timeout_secs)"
                ));
                err.status = StatusCode::REQUEST_TIMEOUT;
                err
            } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let mut err = OAuthError::invalid_request("request body exceeds the size limit");
                err.status = StatusCode::PAYLOAD_TOO_LARGE;
                err
            } else {
                OAuthError::invalid_request(format!("cannot read request body: {e}"))
            }
        })?;
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(&bytes) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::invalid_request(format!("`{k}` is repeated")));
            }
        }
        Ok(OAuthForm(map))
    }
}

/// The request id: the caller's `x-request-id` if it is sane, else a fresh one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId("unknown".into())))
    }
}

pub async fn request_id_layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", hex::encode(mandate_token::random_bytes::<8>())));
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// 1 to `max` ASCII letters, digits, `-` or `_`: ids that go into paths,
/// logs and SQL parameters with nothing to escape.
pub fn is_plain_id(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        scope: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        tool: mandate_core::ToolName,
    }

    #[test]
    fn json_errors_name_the_field_path() {
        let e = parse_json::<Body>(br#"{"scope":[{"tool":"ok"},{"tool":"Bad"}]}"#).unwrap_err();
        assert!(e.message.starts_with("scope[1].tool:"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"scope":[],"extra":1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert!(
            e.message.starts_with("body is not valid JSON"),
            "{}",
            e.message
        );
        // The fast path (no path tracking) refuses what the slow one does.
        let e = parse_json::<Body>(br#"{"scope":[]} {"scope":[]}"#).unwrap_err();
        assert!(e.message.contains("trailing characters"), "{}", e.message);
        let ok = parse_json::<Body>(br#"{"scope":[{"tool":"ok"}]}"#).unwrap();
        assert_eq!(ok.scope.len(), 1);
    }
}
