//! Tokens minted per task by an HTTP endpoint (a SaaS API's token
//! service, an internal one): the engine posts what it wants with the
//! tool's secret as a bearer, hands the answer to the task, and revokes it
//! when the task ends. The endpoint contract:
//!
//! - `POST issue_url` `{"login", "role", "valid_until"}` → 2xx `{"token"}`
//! - `POST revoke_url` `{"login"}` → 2xx, or 404 when already gone
//! - `GET status_url/{login}` → 404 when gone, 2xx while it exists

use crate::{Engine, EngineError, IssueRequest, Issued};
use async_trait::async_trait;
use base64::Engine as _;
use mandate_core::TaskId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::time::Duration;

/// 32 random bytes, base64url: a password or token nobody chose.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub struct HttpEngine {
    http: reqwest::Client,
    credential: SecretString,
    issue_url: String,
    revoke_url: String,
    status_url: String,
    roles: Vec<String>,
}

fn unreachable(e: reqwest::Error) -> EngineError {
    // Without the URL: it may carry a query the operator considers private.
    EngineError::Unreachable(e.without_url().to_string())
}

impl HttpEngine {
    pub fn new(
        credential: SecretString,
        issue_url: &str,
        revoke_url: &str,
        status_url: &str,
        roles: &[String],
    ) -> Result<Self, EngineError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EngineError::Refused(e.to_string()))?;
        Ok(HttpEngine {
            http,
            credential,
            issue_url: issue_url.to_owned(),
            revoke_url: revoke_url.to_owned(),
            status_url: status_url.trim_end_matches('/').to_owned(),
            roles: roles.to_vec(),
        })
    }

    fn check_role(&self, role: &str) -> Result<(), EngineError> {
        if self.roles.iter().any(|r| r == role) {
            Ok(())
        } else {
            Err(EngineError::UnknownRole(role.chars().take(63).collect()))
        }
    }
}

#[async_trait]
impl Engine for HttpEngine {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn login_name(&self, task: &TaskId, random: [u8; 8]) -> String {
        crate::login_for(task, random)
    }

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<Issued, EngineError> {
        self.check_role(req.role)?;
        let resp = self
            .http
            .post(&self.issue_url)
            .bearer_auth(self.credential.expose_secret())
            .json(&json!({"login": req.login, "role": req.role, "valid_until": req.valid_until}))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(EngineError::Refused(format!("issue answered {status}")));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| EngineError::Refused("issue answered no JSON".into()))?;
        let token = body["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| EngineError::Refused("issue answered no `token`".into()))?;
        Ok(Issued {
            login: req.login.to_owned(),
            password: SecretString::from(token.to_owned()),
            url: SecretString::from(token.to_owned()),
            facts: vec![("MANDATE_CREDENTIAL_LOGIN", req.login.to_owned())],
        })
    }

    async fn revoke(&self, login: &str, role: &str) -> Result<(), EngineError> {
        self.check_role(role)?;
        let resp = self
            .http
            .post(&self.revoke_url)
            .bearer_auth(self.credential.expose_secret())
            .json(&json!({"login": login}))
            .send()
            .await
            .map_err(unreachable)?;
        match resp.status() {
            s if s.is_success() || s == reqwest::StatusCode::NOT_FOUND => Ok(()),
            s => Err(EngineError::Refused(format!("revoke answered {s}"))),
        }
    }

    async fn verify_gone(&self, login: &str) -> Result<bool, EngineError> {
        let resp = self
            .http
            .get(format!("{}/{login}", self.status_url))
            .bearer_auth(self.credential.expose_secret())
            .send()
            .await
            .map_err(unreachable)?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(true),
            s if s.is_success() => Ok(false),
            s => Err(EngineError::Refused(format!("status answered {s}"))),
        }
    }

    async fn health(&self) -> Result<(), EngineError> {
        let resp = self
            .http
            .get(&self.status_url)
            .bearer_auth(self.credential.expose_secret())
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status().is_server_error() {
            return Err(EngineError::Unreachable(format!(
                "status answered {}",
                resp.status()
            )));
        }
        Ok(())
    }
}
