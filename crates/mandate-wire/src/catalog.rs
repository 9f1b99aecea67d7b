//! `GET /v1/proxy/catalog` (admin right `proxy`): everything a proxy
//! serves from, short of secret values. Built by the broker, refreshed by
//! each proxy on its own schedule.
//!
//! Not `deny_unknown_fields`: a newer broker may add fields that an older
//! proxy can ignore (what it cannot ignore is the protocol number).

use crate::protocol::first_protocol;
use mandate_core::Tool;
use serde::{Deserialize, Serialize};

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDoc {
    /// The broker's issuer; a proxy checks it against the one it trusts.
    pub issuer: String,
    /// [`crate::PROXY_PROTOCOL`] of the broker; brokers from before the
    /// number existed send none and speak [`crate::protocol::FIRST_PROTOCOL`].
    #[serde(default = "first_protocol")]
    pub proxy_protocol: u32,
    pub tools: Vec<Tool>,
    pub secrets: Vec<SecretMeta>,
    pub policy: PolicyDoc,
}

/// A tool's secret as listed: which version to fetch, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub name: String,
    pub tool: String,
    /// Starts at 1; each rotation adds one (a proxy refetches on change).
    pub version: u32,
    /// Unix seconds, if the secret expires.
    pub expires_at: Option<i64>,
}

/// The exact sources of the broker's policy set, so a proxy builds the
/// very same set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDoc {
    /// Changes whenever the sources do: a proxy rebuilds only then.
    pub hash: String,
    /// The Cedar schema text.
    pub schema: String,
    /// Policy files in load order.
    pub policies: Vec<PolicyFile>,
}

/// One policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    pub file: String,
    pub text: String,
}
