//! The broker as the proxy sees it: a handful of JSON endpoints called with
//! the proxy's admin token, every call with a timeout. Errors say which
//! call failed and how, never with the token or a secret value in them.
//! What the broker answers is read as `mandate_wire`'s types, the ones it
//! builds them with.

use bytes::Bytes;
use mandate_core::{Agent, Revocation, Task};
use mandate_wire::{
    Accepted, ApprovalAnswer, ApprovalAsk, Batch, CatalogDoc, RevocationPage, SecretValue,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use zeroize::Zeroizing;

/// Calls other than the revocation stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest broker answer read (a catalog with many tools and policies).
const MAX_RESPONSE: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unreachable ({call}): {message}")]
    Unreachable { call: &'static str, message: String },
    #[error("broker answered {status} to {call}: {message}")]
    Status {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("broker answer to {call} is not what the proxy expects: {message}")]
    Body { call: &'static str, message: String },
}

impl BrokerError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BrokerError::Status { status: 404, .. })
    }
}

pub struct Broker {
    base: String,
    http: reqwest::Client,
    token: SecretString,
}

impl Broker {
    pub fn new(
        base: &str,
        token: SecretString,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder();
        for cert in extra_roots {
            http = http.add_root_certificate(reqwest::Certificate::from_der(cert)?);
        }
        let http = http
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("mandate-proxy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Broker {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .bearer_auth(self.token.expose_secret())
            .timeout(CALL_TIMEOUT)
    }

    async fn send(
        call: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrokerError> {
        let resp = req.send().await.map_err(|e| BrokerError::Unreachable {
            call,
            message: without_url(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(BrokerError::Status {
            call,
            status: status.as_u16(),
            message: error_message(&body),
        })
    }

    async fn body(call: &'static str, resp: reqwest::Response) -> Result<Bytes, BrokerError> {
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_RESPONSE as u64)
        {
            return Err(BrokerError::Body {
                call,
                message: "answer is too large".into(),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| BrokerError::Unreachable {
            call,
            message: without_url(&e),
        })?;
        if bytes.len() > MAX_RESPONSE {
            return Err(BrokerError::Body {
                call,
                message: "answer is too large".into(),
            });
        }
        Ok(bytes)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
    ) -> Result<T, BrokerError> {
        let resp = Self::send(call, self.get(path)).await?;
        let bytes = Self::body(call, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| BrokerError::Body {
            call,
            message: e.to_string(),
        })
    }

    /// The issuer from RFC 8414 metadata.
    pub async fn issuer(&self) -> Result<String, BrokerError> {
        #[derive(Deserialize)]
        struct Meta {
            issuer: String,
        }
        let m: Meta = self
            .json("metadata", "/.well-known/oauth-authorization-server")
            .await?;
        Ok(m.issuer)
    }

    pub async fn jwks(&self) -> Result<mandate_token::JwkSet, BrokerError> {
        self.json("jwks", "/.well-known/jwks.json").await
    }

    pub async fn catalog(&self) -> Result<CatalogDoc, BrokerError> {
        self.json("catalog", "/v1/proxy/catalog").await
    }

    /// A tool's secret value. Parse errors are reported without serde's
    /// detail, which could quote part of the value.
    pub async fn secret(&self, tool: &str) -> Result<SecretValue, BrokerError> {
        const CALL: &str = "secret";
        let resp = Self::send(CALL, self.get(&format!("/v1/proxy/secrets/{tool}"))).await?;
        let bytes = Zeroizing::new(Self::body(CALL, resp).await?.to_vec());
        serde_json::from_slice(&bytes).map_err(|_| BrokerError::Body {
            call: CALL,
            message: "expected {\"name\",\"tool\",\"version\",\"value\"}".into(),
        })
    }

    pub async fn agent(&self, name: &str) -> Result<Agent, BrokerError> {
        self.json("agent lookup", &format!("/v1/agents/{name}"))
            .await
    }

    pub async fn task(&self, id: &str) -> Result<Task, BrokerError> {
        self.json("task lookup", &format!("/v1/tasks/{id}")).await
    }

    /// Poll the revocation feed: entries after `since` and the next cursor.
    /// One page of the feed after `since`, and whether more follow.
    pub async fn revocations(&self, since: u64) -> Result<(Vec<Revocation>, bool), BrokerError> {
        let f: RevocationPage = self
            .json("revocation poll", &format!("/v1/revocations?since={since}"))
            .await?;
        Ok((f.entries, f.more))
    }

    /// Open the revocation stream; the caller reads it with its own timeouts.
    pub async fn revocation_stream(&self, since: u64) -> Result<reqwest::Response, BrokerError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/revocations/stream?since={since}")))
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        Self::send("revocation stream", req).await
    }

    /// What stands for a request policy held for a person (a `once`
    /// approval that lets it through is spent by this call).
    pub async fn resolve_approval(&self, ask: &ApprovalAsk) -> Result<ApprovalAnswer, BrokerError> {
        const CALL: &str = "approval";
        let req = self
            .http
            .post(self.url("/v1/approvals/resolve"))
            .bearer_auth(self.token.expose_secret())
            .timeout(CALL_TIMEOUT)
            .json(ask);
        let resp = Self::send(CALL, req).await?;
        let bytes = Self::body(CALL, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| BrokerError::Body {
            call: CALL,
            message: e.to_string(),
        })
    }

    /// Ship a batch of tool-call records.
    pub async fn post_audit(&self, batch: &Batch) -> Result<Accepted, BrokerError> {
        const CALL: &str = "audit";
        let req = self
            .http
            .post(self.url("/v1/audit/tool-invocations"))
            .bearer_auth(self.token.expose_secret())
            .timeout(CALL_TIMEOUT)
            .json(batch);
        let resp = Self::send(CALL, req).await?;
        let bytes = Self::body(CALL, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| BrokerError::Body {
            call: CALL,
            message: e.to_string(),
        })
    }
}

/// The error and its causes on one line (the URL is the broker's: no secret).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// The broker's `{"error":{"message"}}`, or a status-only message.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .map(|m| m.chars().take(300).collect())
        })
        .unwrap_or_else(|| "no error detail".into())
}
