//! Trusted workload-identity issuers: JWT-SVIDs and OIDC tokens from
//! Kubernetes, CI systems or SPIRE, verified against the issuer's JWKS.

use crate::config::IssuerConfig;
use mandate_token::{JwkSet, TokenError, VerifyingKey, jwt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Leeway for clocks of other systems.
const LEEWAY_SECS: i64 = 30;
/// An unknown `kid` triggers at most one JWKS refresh per this interval, so
/// junk tokens cannot make us hammer the issuer.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A verified external workload token.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    pub issuer: String,
    pub subject: String,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

struct TrustedIssuer {
    cfg: IssuerConfig,
    audiences: Vec<String>,
    keys: RwLock<Vec<Arc<VerifyingKey>>>,
    /// Last refresh attempt (rate limit for unknown-kid and retry refreshes).
    last_refresh: Mutex<Option<Instant>>,
    /// When the current keys were fetched.
    loaded_at: Mutex<Option<Instant>>,
}

pub struct Federation {
    issuers: HashMap<String, TrustedIssuer>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct StdClaims {
    iss: String,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    aud: Option<serde_json::Value>,
}

impl Federation {
    pub fn new(cfgs: &[IssuerConfig], default_audience: &str) -> Self {
        let issuers = cfgs
            .iter()
            .map(|c| {
                let audiences = if c.audiences.is_empty() {
                    vec![default_audience.to_owned()]
                } else {
                    c.audiences.clone()
                };
                (
                    c.issuer.clone(),
                    TrustedIssuer {
                        cfg: c.clone(),
                        audiences,
                        keys: RwLock::new(Vec::new()),
                        last_refresh: Mutex::new(None),
                        loaded_at: Mutex::new(None),
                    },
                )
            })
            .collect();
        Federation {
            issuers,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Load every issuer's keys once at start; failures are logged and
    /// retried on first use rather than stopping the broker.
    pub async fn warm(&self) {
        for iss in self.issuers.values() {
            if let Err(e) = self.refresh(iss, true).await {
                tracing::warn!(issuer = %iss.cfg.issuer, error = %e, "cannot load issuer keys yet");
            }
        }
    }

    /// Re-read every JWKS older than its issuer's `refresh_secs` (called
    /// every second). The new set replaces the old, so a withdrawn key stops
    /// verifying; a failed fetch keeps the old set and is retried after
    /// [`REFRESH_MIN_INTERVAL`] (or `refresh_secs`, if shorter).
    pub async fn refresh_due(&self) {
        for iss in self.issuers.values() {
            let max_age = Duration::from_secs(iss.cfg.refresh_secs);
            let stale = lock(&iss.loaded_at).is_none_or(|t| t.elapsed() >= max_age);
            let retry_after = REFRESH_MIN_INTERVAL.min(max_age);
            let tried_recently = lock(&iss.last_refresh).is_some_and(|t| t.elapsed() < retry_after);
            if !stale || tried_recently {
                continue;
            }
            *lock(&iss.last_refresh) = Some(Instant::now());
            if let Err(e) = self.refresh(iss, true).await {
                tracing::warn!(issuer = %iss.cfg.issuer, error = %e, "scheduled JWKS refresh failed; keeping the previous keys");
            }
        }
    }

    async fn fetch(&self, cfg: &IssuerConfig) -> Result<JwkSet, String> {
        let bytes = if let Some(path) = &cfg.jwks_file {
            tokio::fs::read(path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?
        } else if let Some(url) = &cfg.jwks_url {
            let resp = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| format!("fetching {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("fetching {url}: HTTP {}", resp.status()));
            }
            resp.bytes()
                .await
                .map_err(|e| format!("fetching {url}: {e}"))?
                .to_vec()
        } else {
            return Err("issuer has no JWKS source".into());
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("JWKS is not valid: {e}"))
    }

    async fn refresh(&self, iss: &TrustedIssuer, force: bool) -> Result<(), String> {
        // Only refreshes caused by unknown kids are rate-limited; the start-up load is not.
        if !force {
            let mut last = lock(&iss.last_refresh);
            if last.is_some_and(|t| t.elapsed() < REFRESH_MIN_INTERVAL) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let set = self.fetch(&iss.cfg).await?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            match VerifyingKey::from_jwk(jwk) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(e) => {
                    tracing::warn!(issuer = %iss.cfg.issuer, kid = ?jwk.kid, error = %e, "skipping issuer key")
                }
            }
        }
        *iss.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *lock(&iss.loaded_at) = Some(Instant::now());
        Ok(())
    }

    fn find_key(iss: &TrustedIssuer, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
        let keys = iss.keys.read().unwrap_or_else(|p| p.into_inner());
        match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None if keys.len() == 1 => keys.first().cloned(),
            None => None,
        }
    }

    /// Verify a workload token: trusted issuer, key by `kid` (refreshing the
    /// JWKS once on a miss), the key's own algorithm, `exp`/`nbf`, `aud`.
    pub async fn verify(&self, token: &str, now: i64) -> Result<WorkloadIdentity, String> {
        let parsed = jwt::parse(token).map_err(|e| e.to_string())?;
        let peek: StdClaims = parsed.peek_claims().map_err(|e| e.to_string())?;
        let iss = self
            .issuers
            .get(&peek.iss)
            .ok_or_else(|| "issuer is not trusted".to_owned())?;
        let kid = parsed.header.kid.as_deref();
        let key = match Self::find_key(iss, kid) {
            Some(k) => k,
            None => {
                self.refresh(iss, false).await?;
                Self::find_key(iss, kid)
                    .ok_or_else(|| TokenError::UnknownKey(kid.unwrap_or("-").into()).to_string())?
            }
        };
        parsed.verify(&key).map_err(|e| e.to_string())?;
        let exp = peek.exp.ok_or("token has no `exp`")?;
        jwt::check_times(exp, peek.nbf, now, LEEWAY_SECS).map_err(|e| e.to_string())?;
        let aud_ok = match &peek.aud {
            Some(serde_json::Value::String(a)) => iss.audiences.contains(a),
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| iss.audiences.iter().any(|x| x == a))
            }),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience.to_string());
        }
        let subject = peek
            .sub
            .filter(|s| !s.is_empty())
            .ok_or("token has no `sub`")?;
        let claims = parsed.peek_claims().map_err(|e| e.to_string())?;
        Ok(WorkloadIdentity {
            issuer: peek.iss,
            subject,
            claims,
        })
    }
}
