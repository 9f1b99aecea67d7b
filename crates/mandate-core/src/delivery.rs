//! How a tool's upstream credential reaches the upstream: injected by the
//! proxy (the default, the agent never sees it) or, as a flagged exception,
//! revealed to the task.

use crate::Invalid;
use serde::{Deserialize, Serialize};

closed_enum!(
    /// `inject`: the proxy adds the credential; `reveal`: the task may fetch it.
    DeliveryMode, "delivery.mode", {
        Inject => "inject",
        Reveal => "reveal",
    }
);

/// Where the proxy puts the credential on the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    #[default]
    Bearer,
    /// `<name>: <prefix><secret>`.
    Header {
        name: String,
        #[serde(default)]
        prefix: String,
    },
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic { username: String },
    /// `?<param>=<secret>` appended to the query.
    Query { param: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub mode: DeliveryMode,
    #[serde(default)]
    pub inject: Injection,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            mode: DeliveryMode::Inject,
            inject: Injection::Bearer,
        }
    }
}

/// Headers the proxy owns; a tool may not inject into them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "dpop",
];

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Delivery {
    pub fn validate(&self) -> Result<(), Invalid> {
        match &self.inject {
            Injection::Bearer => Ok(()),
            Injection::Header { name, prefix } => {
                if !is_token(name) || RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                {
                    return Err(Invalid::new(
                        "delivery.inject.name",
                        "must be a header name (letters, digits, `-`), not one the proxy manages",
                    ));
                }
                if prefix.len() > 64 || prefix.chars().any(|c| c.is_control()) {
                    return Err(Invalid::new(
                        "delivery.inject.prefix",
                        "must be at most 64 printable characters",
                    ));
                }
                Ok(())
            }
            Injection::Basic { username } => {
                if username.is_empty() || username.len() > 256 || username.contains(':') {
                    return Err(Invalid::new(
                        "delivery.inject.username",
                        "must be 1-256 characters without `:`",
                    ));
                }
                Ok(())
            }
            Injection::Query { param } => {
                if !is_token(param) {
                    return Err(Invalid::new(
                        "delivery.inject.param",
                        "must be a plain query parameter name",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// An upstream base URL: `http://` or `https://`, no query or fragment.
pub fn check_upstream(url: &str) -> Result<(), Invalid> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.len() <= 512
        && !url.contains(['?', '#'])
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "upstream",
            "must be an http:// or https:// base URL with a host and no query or fragment",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_parses_with_defaults_and_rejects_unknown_kinds() {
        let d: Delivery = serde_json::from_str(r#"{"mode":"inject"}"#).unwrap();
        assert_eq!(d, Delivery::default());
        let d: Delivery = serde_json::from_str(
            r#"{"mode":"inject","inject":{"kind":"header","name":"X-Api-Key"}}"#,
        )
        .unwrap();
        assert!(d.validate().is_ok());
        let e = serde_json::from_str::<Delivery>(r#"{"mode":"inject","inject":{"kind":"cookie"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("cookie"), "{e}");
        let e = serde_json::from_str::<Delivery>(r#"{"mode":"email"}"#).unwrap_err();
        assert!(e.to_string().contains("inject, reveal"), "{e}");
    }

    #[test]
    fn reserved_or_malformed_targets_are_refused() {
        let d = |inject| Delivery {
            mode: DeliveryMode::Inject,
            inject,
        };
        for (inject, field) in [
            (
                Injection::Header {
                    name: "Host".into(),
                    prefix: String::new(),
                },
                "delivery.inject.name",
            ),
            (
                Injection::Header {
                    name: "X Key".into(),
                    prefix: String::new(),
                },
                "delivery.inject.name",
            ),
            (
                Injection::Basic {
                    username: "a:b".into(),
                },
                "delivery.inject.username",
            ),
            (
                Injection::Query {
                    param: "k=v".into(),
                },
                "delivery.inject.param",
            ),
        ] {
            assert_eq!(d(inject).validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn upstream_must_be_an_http_base_url() {
        assert!(check_upstream("http://127.0.0.1:9000").is_ok());
        assert!(check_upstream("https://api.github.com/v3").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https:///x",
            "https://x?y=1",
            "https://x#f",
        ] {
            assert_eq!(check_upstream(bad).unwrap_err().field, "upstream", "{bad}");
        }
    }
}
