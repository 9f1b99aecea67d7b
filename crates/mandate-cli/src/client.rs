//! A small HTTP client for the Mandate API: base URL and bearer from the
//! environment, errors turned into one readable line.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

/// A clap value parser for names and ids that go into a URL path: the
/// characters any Mandate name or id uses, so an argument like
/// `../agents/x` can never address a different resource.
pub fn path_segment(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be a name or id: letters, digits, `-`, `_` or `.`, not starting with `.`".into())
    }
}

impl Client {
    /// `ca_file`: extra CA certificates (PEM) trusted for the server.
    pub fn new(addr: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self> {
        let base = addr.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("MANDATE_ADDR must start with http:// or https:// (got `{base}`)");
        }
        if let Err(e) = reqwest::Url::parse(&base) {
            bail!("MANDATE_ADDR is not a valid URL (`{base}`): {e}");
        }
        if let Some(t) = &token
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err()
        {
            bail!("MANDATE_TOKEN (or --token) holds characters a token cannot have");
        }
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-file {}: cannot read", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "--ca-file {}: no PEM certificate in the file",
                        path.display()
                    )
                })?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Client {
            http: http.build().context("building HTTP client")?,
            base,
            token,
        })
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        }
    }

    fn request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Ok(req)
    }

    pub fn token_clone(&self) -> Option<String> {
        self.token.clone()
    }

    pub fn require_token(&self, what: &str) -> Result<()> {
        if self.token.is_none() {
            bail!("{what} needs a credential: set MANDATE_TOKEN (admin) or pass --token");
        }
        Ok(())
    }

    /// A response to read as it comes (a server-sent-event stream): no
    /// overall timeout, only a refused or failed answer is an error.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response> {
        let resp = self
            .request(Method::GET, path)?
            .timeout(Duration::from_secs(365 * 24 * 3600))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if !resp.status().is_success() {
            bail!("GET {path}: HTTP {}", resp.status());
        }
        Ok(resp)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::GET, path)?).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::POST, path)?.json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::PUT, path)?.json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::DELETE, path)?).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        self.send(self.request(Method::POST, path)?.form(form))
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the Mandate server at {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(anyhow!(describe_error(status, &body)))
    }
}

/// One line from either error shape (`{"error":{code,message}}` or RFC 6749).
pub fn describe_error(status: StatusCode, body: &Value) -> String {
    let e = &body["error"];
    if let (Some(code), Some(msg)) = (e["code"].as_str(), e["message"].as_str()) {
        let mut s = format!("{msg} ({code}, HTTP {})", status.as_u16());
        if let Some(reasons) = e["reasons"].as_array() {
            for r in reasons {
                s.push_str(&format!("\n  reason: {}", r.as_str().unwrap_or_default()));
            }
        }
        return s;
    }
    if let Some(code) = e.as_str() {
        let d = body["error_description"].as_str().unwrap_or("");
        return format!("{d} ({code}, HTTP {})", status.as_u16());
    }
    format!("HTTP {}: {}", status.as_u16(), body)
}
