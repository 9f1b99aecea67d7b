//! A tool that mints a credential per task instead of holding one: which
//! engine, and the roles (privilege sets) a task's scope may name. The
//! engine's own admin credential (a PostgreSQL DSN, an API key) is the
//! tool's sealed secret, never part of this.

use crate::Invalid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineSpec {
    /// A `LOGIN` role per task on a PostgreSQL server.
    Postgres {
        roles: Vec<DbRole>,
        /// PEM certificates trusted for the server's certificate beside the
        /// public web roots (a private PKI). The engine uses TLS whenever
        /// the server offers it, always verified; `sslmode=require` in the
        /// admin DSN insists on it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
    /// A token per task from an HTTP endpoint that mints and revokes them.
    Http {
        /// `POST`ed `{"login", "role", "valid_until"}`; answers `{"token"}`.
        issue_url: String,
        /// `POST`ed `{"login"}`; 2xx or 404 means gone.
        revoke_url: String,
        /// `GET {status_url}/{login}`: 404 means gone.
        status_url: String,
        roles: Vec<String>,
    },
}

/// One privilege set on a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRole {
    pub name: String,
    /// Existing (`NOLOGIN`) group roles whose privileges the login gets.
    #[serde(default)]
    pub member_of: Vec<String>,
    /// Statements that replace the default creation (placeholders
    /// `{{name}}`, `{{name_literal}}`, `{{password}}` — the login's
    /// SCRAM-SHA-256 verifier, never the password —, `{{valid_until}}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creation: Vec<String>,
    /// Statements that replace the default revocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocation: Vec<String>,
}

const MAX_ROLES: usize = 64;
const MAX_CA_PEM: usize = 65_536;

fn role_name_problem(n: &str) -> Option<&'static str> {
    if n.is_empty() || n.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Some("may hold only a-z, 0-9, `_` and `-`");
    }
    None
}

impl EngineSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineSpec::Postgres { .. } => "postgres",
            EngineSpec::Http { .. } => "http",
        }
    }

    /// The role names a scope may ask for.
    pub fn role_names(&self) -> Vec<&str> {
        match self {
            EngineSpec::Postgres { roles, .. } => roles.iter().map(|r| r.name.as_str()).collect(),
            EngineSpec::Http { roles, .. } => roles.iter().map(String::as_str).collect(),
        }
    }

    /// Structure only; the engine checks its templates itself.
    pub fn check(&self) -> Result<(), Invalid> {
        let names = self.role_names();
        if names.is_empty() || names.len() > MAX_ROLES {
            return Err(Invalid::new("engine.roles", "must list 1 to 64 roles"));
        }
        for (i, n) in names.iter().enumerate() {
            if let Some(p) = role_name_problem(n) {
                return Err(Invalid::new(format!("engine.roles[{i}]"), p));
            }
            if names[..i].contains(n) {
                return Err(Invalid::new(
                    format!("engine.roles[{i}]"),
                    format!("`{n}` is listed twice"),
                ));
            }
        }
        if let EngineSpec::Http {
            issue_url,
            revoke_url,
            status_url,
            ..
        } = self
        {
            for (field, u) in [
                ("engine.issue_url", issue_url),
                ("engine.revoke_url", revoke_url),
                ("engine.status_url", status_url),
            ] {
                if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048 {
                    return Err(Invalid::new(
                        field,
                        "must be an http(s) URL of at most 2048 bytes",
                    ));
                }
            }
        }
        if let EngineSpec::Postgres { roles, ca_pem } = self {
            if let Some(pem) = ca_pem
                && (pem.len() > MAX_CA_PEM || !pem.contains("-----BEGIN CERTIFICATE-----"))
            {
                return Err(Invalid::new(
                    "engine.ca_pem",
                    "must be PEM text (`-----BEGIN CERTIFICATE-----` blocks) of at most 65536 bytes",
                ));
            }
            for (i, r) in roles.iter().enumerate() {
                if r.member_of.len() > 32
                    || r.member_of.iter().any(|g| g.is_empty() || g.len() > 63)
                {
                    return Err(Invalid::new(
                        format!("engine.roles[{i}].member_of"),
                        "at most 32 role names of 1 to 63 bytes",
                    ));
                }
                if r.creation.len() > 32 || r.revocation.len() > 32 {
                    return Err(Invalid::new(
                        format!("engine.roles[{i}]"),
                        "at most 32 statements each for creation and revocation",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> EngineSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn roles_are_named_once_in_lowercase() {
        let ok = spec(
            serde_json::json!({"kind": "postgres", "roles": [{"name": "readonly", "member_of": ["app_read"]}]}),
        );
        ok.check().unwrap();
        assert_eq!(ok.role_names(), ["readonly"]);
        let twice = spec(
            serde_json::json!({"kind": "postgres", "roles": [{"name": "ro"}, {"name": "ro"}]}),
        );
        assert_eq!(twice.check().unwrap_err().field, "engine.roles[1]");
        let upper = spec(serde_json::json!({"kind": "postgres", "roles": [{"name": "RO"}]}));
        assert_eq!(upper.check().unwrap_err().field, "engine.roles[0]");
        let none = spec(serde_json::json!({"kind": "postgres", "roles": []}));
        assert_eq!(none.check().unwrap_err().field, "engine.roles");
        let http = spec(
            serde_json::json!({"kind": "http", "issue_url": "ftp://x", "revoke_url": "https://x/r",
            "status_url": "https://x/s", "roles": ["deploy"]}),
        );
        assert_eq!(http.check().unwrap_err().field, "engine.issue_url");
        let ca = spec(
            serde_json::json!({"kind": "postgres", "roles": [{"name": "ro"}], "ca_pem": "not a certificate"}),
        );
        assert_eq!(ca.check().unwrap_err().field, "engine.ca_pem");
        assert!(
            serde_json::from_value::<EngineSpec>(serde_json::json!({"kind": "mysql", "roles": []}))
                .is_err()
        );
    }
}
