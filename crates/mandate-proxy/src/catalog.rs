//! What the proxy knows from the broker's catalog: tools (routes,
//! delivery, upstream), secret versions, the Cedar policy set (rebuilt
//! only when its hash changes) and the secret values to inject (refetched
//! when a version changes; the old value serves until the new one is in,
//! which is how rotation happens without downtime).

use crate::broker::Broker;
use crate::redact::{Patterns, forms};
use base64::Engine;
use http::{HeaderName, HeaderValue};
use mandate_core::{DeliveryMode, Injection, Tool};
use mandate_policy::PolicySet;
use mandate_wire::{CatalogDoc, PROXY_PROTOCOL, SecretMeta};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Tools and policy as of the last good catalog.
pub struct Snapshot {
    pub tools: HashMap<String, Arc<Tool>>,
    /// Secret metadata by tool name.
    pub secrets: HashMap<String, SecretMeta>,
    pub policy: Arc<PolicySet>,
    pub policy_hash: String,
}

/// An upstream credential ready to put on a request, and the forms to
/// redact from what comes back. `Debug` shows no value.
pub struct Credential {
    pub version: u32,
    pub place: Placement,
    pub patterns: Arc<Patterns>,
    _value: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Where the credential goes. Header values are marked sensitive so hyper
/// never indexes them in HPACK tables or prints them.
pub enum Placement {
    Header(HeaderName, HeaderValue),
    /// Query parameter name and its already-encoded value.
    Query(String, SecretString),
}

impl Credential {
    pub fn new(version: u32, value: SecretString, inject: &Injection) -> Result<Self, String> {
        let v = value.expose_secret();
        let header = |name: HeaderName, text: &str| -> Result<Placement, String> {
            let mut hv = HeaderValue::from_str(text)
                .map_err(|_| "the secret cannot be sent in a header (control characters)")?;
            hv.set_sensitive(true);
            Ok(Placement::Header(name, hv))
        };
        let place = match inject {
            Injection::Bearer => header(
                http::header::AUTHORIZATION,
                &zeroize::Zeroizing::new(format!("Bearer {v}")),
            )?,
            Injection::Header { name, prefix } => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a header name"))?;
                header(name, &zeroize::Zeroizing::new(format!("{prefix}{v}")))?
            }
            Injection::Basic { username } => {
                let pair = zeroize::Zeroizing::new(format!("{username}:{v}"));
                let b64 = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
                );
                header(
                    http::header::AUTHORIZATION,
                    &zeroize::Zeroizing::new(format!("Basic {}", b64.as_str())),
                )?
            }
            Injection::Query { param } => {
                let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
                Placement::Query(param.clone(), SecretString::from(enc))
            }
        };
        let patterns = Patterns::new(&forms(v, inject)).ok_or("the secret is empty")?;
        Ok(Credential {
            version,
            place,
            patterns: Arc::new(patterns),
            _value: value,
        })
    }
}

#[derive(Default)]
pub struct Catalog {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    credentials: RwLock<HashMap<String, Arc<Credential>>>,
    /// Why the broker cannot be served beside, for `/readyz` (which anyone
    /// may read, so other refresh errors go only to the log).
    refused: RwLock<Option<String>>,
}

/// Can this proxy work beside a broker of `protocol`? Its records would
/// be refused by an older broker's audit endpoint and pile up unshipped.
pub fn check_protocol(protocol: u32) -> Result<(), String> {
    let needs = PROXY_PROTOCOL;
    if protocol < needs {
        return Err(format!(
            "the broker speaks proxy protocol {protocol} and this proxy needs {needs}: upgrade the broker first"
        ));
    }
    Ok(())
}

impl Catalog {
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why this proxy will not serve beside its broker, if it will not.
    pub fn refused(&self) -> Option<String> {
        self.refused
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn credential(&self, tool: &str) -> Option<Arc<Credential>> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tool)
            .cloned()
    }

    /// Fetch the catalog and the secrets that changed. Policy is rebuilt
    /// only when its hash changes; a policy that fails to build keeps the
    /// previous one (or leaves none, and the proxy not ready).
    pub async fn refresh(&self, broker: &Broker, issuer: &str) -> Result<(), String> {
        let doc = broker.catalog().await.map_err(|e| e.to_string())?;
        let refused = check_protocol(doc.proxy_protocol).err();
        *self.refused.write().unwrap_or_else(|p| p.into_inner()) = refused.clone();
        if let Some(e) = refused {
            // Serve nothing rather than calls whose audit cannot land.
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(e);
        }
        if doc.issuer != issuer {
            return Err(format!(
                "catalog issuer `{}` is not the broker's issuer `{issuer}`",
                doc.issuer
            ));
        }
        let previous = self.snapshot();
        let policy = match &previous {
            Some(p) if p.policy_hash == doc.policy.hash => p.policy.clone(),
            _ => Arc::new(build_policy(&doc).await?),
        };
        let snapshot = Snapshot {
            tools: doc
                .tools
                .iter()
                .map(|t| (t.name.to_string(), Arc::new(t.clone())))
                .collect(),
            secrets: doc
                .secrets
                .iter()
                .map(|s| (s.tool.clone(), s.clone()))
                .collect(),
            policy,
            policy_hash: doc.policy.hash.clone(),
        };
        self.refresh_credentials(broker, &snapshot).await;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snapshot));
        Ok(())
    }

    async fn refresh_credentials(&self, broker: &Broker, snap: &Snapshot) {
        // Forget values of tools that no longer have a secret or no longer inject.
        self.credentials
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|tool, _| {
                snap.secrets.contains_key(tool)
                    && snap
                        .tools
                        .get(tool)
                        .is_some_and(|t| t.delivery.mode == DeliveryMode::Inject)
            });
        for (tool_name, meta) in &snap.secrets {
            let Some(tool) = snap.tools.get(tool_name) else {
                continue;
            };
            if tool.delivery.mode != DeliveryMode::Inject || tool.upstream.is_none() {
                continue;
            }
            if self
                .credential(tool_name)
                .is_some_and(|c| c.version == meta.version)
            {
                continue;
            }
            match broker.secret(tool_name).await {
                Ok(s) => match Credential::new(s.version, s.value, &tool.delivery.inject) {
                    Ok(c) => {
                        tracing::info!(tool = %tool_name, secret = %s.name, version = s.version, "secret loaded");
                        self.credentials
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(tool_name.clone(), Arc::new(c));
                    }
                    Err(e) => tracing::error!(tool = %tool_name, error = %e, "secret unusable"),
                },
                // The previous version (if any) keeps serving.
                Err(e) => tracing::warn!(tool = %tool_name, error = %e, "secret fetch failed"),
            }
        }
    }
}

async fn build_policy(doc: &CatalogDoc) -> Result<PolicySet, String> {
    let schema = doc.policy.schema.clone();
    let files: Vec<(String, String)> = doc
        .policy
        .policies
        .iter()
        .map(|p| (p.file.clone(), p.text.clone()))
        .collect();
    // Validation against the schema is CPU work: keep it off the async threads.
    tokio::task::spawn_blocking(move || PolicySet::from_sources(&schema, &files))
        .await
        .map_err(|e| format!("policy build task failed: {e}"))?
        .map_err(|e| format!("broker policy does not load: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_older_than_the_proxy_is_refused_by_name() {
        let doc = r#"{"issuer": "https://b", "tools": [], "secrets": [],
                      "policy": {"hash": "h", "schema": "", "policies": []}}"#;
        let old: CatalogDoc = serde_json::from_str(doc).unwrap();
        assert_eq!(
            old.proxy_protocol, 1,
            "a broker without the number speaks 1"
        );
        let e = check_protocol(old.proxy_protocol).unwrap_err();
        assert!(
            e.contains("proxy protocol 1") && e.contains("upgrade the broker"),
            "{e}"
        );
        check_protocol(PROXY_PROTOCOL).unwrap();
        check_protocol(PROXY_PROTOCOL + 1).unwrap();
    }

    #[test]
    fn credentials_are_placed_per_injection_and_never_debug_printed() {
        let secret = || SecretString::from("s3cr3t value".to_owned());
        let c = Credential::new(1, secret(), &Injection::Bearer).unwrap();
        match &c.place {
            Placement::Header(n, v) => {
                assert_eq!(n, http::header::AUTHORIZATION);
                assert_eq!(v.as_bytes(), b"Bearer s3cr3t value");
                assert!(v.is_sensitive());
            }
            Placement::Query(..) => panic!("bearer goes in a header"),
        }
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = Credential::new(
            1,
            secret(),
            &Injection::Basic {
                username: "ci".into(),
            },
        )
        .unwrap();
        let Placement::Header(_, v) = &c.place else {
            panic!()
        };
        let expect = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ci:s3cr3t value")
        );
        assert_eq!(v.as_bytes(), expect.as_bytes());
        let c = Credential::new(
            1,
            secret(),
            &Injection::Query {
                param: "key".into(),
            },
        )
        .unwrap();
        let Placement::Query(p, v) = &c.place else {
            panic!()
        };
        assert_eq!((p.as_str(), v.expose_secret()), ("key", "s3cr3t+value"));
        let c = Credential::new(
            1,
            secret(),
            &Injection::Header {
                name: "X-Api-Key".into(),
                prefix: "Token ".into(),
            },
        )
        .unwrap();
        let Placement::Header(n, v) = &c.place else {
            panic!()
        };
        assert_eq!(
            (n.as_str(), v.as_bytes()),
            ("x-api-key", &b"Token s3cr3t value"[..])
        );
    }

    #[test]
    fn a_value_with_a_newline_is_refused_for_headers() {
        let e = Credential::new(1, SecretString::from("a\nb".to_owned()), &Injection::Bearer)
            .unwrap_err();
        assert!(!e.contains("a\nb"));
    }
}
