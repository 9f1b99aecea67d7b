//! Dynamic credentials: a login made for one task and destroyed with it.
//!
//! Every engine implements [`Engine`]: `issue` makes the credential (all of
//! it or nothing), `revoke` destroys it at the source (idempotent: a
//! credential already gone is revoked), `verify_gone` asks the source
//! whether it is really gone, `health` whether the source answers. The
//! broker records a lease durably *before* it calls `issue`, so a crash at
//! any point leaves a row that names what may exist, and revokes it on its
//! next start. Engines hold no state of record.
//!
//! - [`postgres::PostgresEngine`]: a `CREATE ROLE … LOGIN … VALID UNTIL`
//!   per task (the deadline is the server's own backstop), dropped with its
//!   sessions ended and what it owned reassigned.
//! - [`http::HttpEngine`]: a configured endpoint mints and revokes tokens
//!   (a SaaS API, an internal token service).

#![forbid(unsafe_code)]

pub mod http;
pub mod postgres;
pub mod scram;
pub mod template;

use async_trait::async_trait;
use secrecy::SecretString;

/// What the broker asks for.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The login name the broker generated and recorded in the lease.
    pub login: &'a str,
    /// A role (privilege set) the tool defines.
    pub role: &'a str,
    /// Unix seconds: the task's deadline; the credential never outlives it.
    pub valid_until: i64,
    /// What [`Engine::prepare`] made while the lease was being recorded;
    /// `None`: the engine prepares it now.
    pub prepared: Option<Prepared>,
}

/// Made before the source is asked, with no source involved (see
/// [`Engine::prepare`]).
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The credential's secret, chosen by the broker.
    pub password: Option<SecretString>,
    /// What the source stores of it (PostgreSQL: its SCRAM verifier).
    pub stored: Option<SecretString>,
}

/// A credential, handed to the task's agent once and never stored.
pub struct Issued {
    pub login: String,
    pub password: SecretString,
    /// A ready connection string or endpoint credential (holds the secret).
    pub url: SecretString,
    /// Non-secret connection facts (`PGHOST`, `PGPORT`, `PGDATABASE`, …).
    pub facts: Vec<(&'static str, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The source did not answer (down, refused the connection, timed out).
    #[error("the engine's server is unreachable: {0}")]
    Unreachable(String),
    #[error("role `{0}` is not defined for this tool")]
    UnknownRole(String),
    /// The source answered with an error (a template it refused, a
    /// missing group role). Nothing was made.
    #[error("the engine's server refused: {0}")]
    Refused(String),
    /// The broker itself failed (its RNG, a worker thread): nothing was sent.
    #[error("the broker failed to prepare the credential: {0}")]
    Internal(String),
    #[error("template: {0}")]
    Template(#[from] template::TemplateError),
}

#[async_trait]
pub trait Engine: Send + Sync {
    /// `postgres`, `http`.
    fn kind(&self) -> &'static str;
    /// A login name for a new lease of `task` (unique with `random`,
    /// traceable to the task).
    fn login_name(&self, task: &mandate_core::TaskId, random: [u8; 8]) -> String;
    /// Work that needs no source (a password and what the source stores of
    /// it), so the broker can do it while it records the lease. None by
    /// default.
    async fn prepare(&self) -> Result<Prepared, EngineError> {
        Ok(Prepared::default())
    }
    async fn issue(&self, req: &IssueRequest<'_>) -> Result<Issued, EngineError>;
    async fn revoke(&self, login: &str, role: &str) -> Result<(), EngineError>;
    async fn verify_gone(&self, login: &str) -> Result<bool, EngineError>;
    async fn health(&self) -> Result<(), EngineError>;
    /// Whether the source can list the logins this engine made
    /// ([`Engine::logins`]).
    fn lists_logins(&self) -> bool {
        false
    }
    /// The logins of this engine's making (named by [`login_for`]) that
    /// exist at the source, of every broker that uses it. Empty where the
    /// source cannot list them.
    async fn logins(&self) -> Result<Vec<MadeLogin>, EngineError> {
        Ok(Vec::new())
    }
}

/// A login found at the source, and the role it was made for (where the
/// source kept it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeLogin {
    pub login: String,
    pub role: Option<String>,
}

/// What every login this crate names begins with.
pub const LOGIN_PREFIX: &str = "mnd_";

/// `mnd_<task hex>_<random hex>`: lowercase, 53 bytes (PostgreSQL allows
/// 63), found from the task and the task from it ([`task_of`]).
pub fn login_for(task: &mandate_core::TaskId, random: [u8; 8]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let task_hex = task.as_str().rsplit('_').next().unwrap_or("");
    format!("{LOGIN_PREFIX}{task_hex}_{hex}")
}

/// The task a login was made for, if it is named as [`login_for`] names.
pub fn task_of(login: &str) -> Option<mandate_core::TaskId> {
    let rest = login.strip_prefix(LOGIN_PREFIX)?;
    let (task_hex, random) = rest.split_once('_')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    mandate_core::TaskId::parse(&format!("task_{task_hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_names_its_task_and_nothing_else_parses() {
        let task = mandate_core::TaskId::parse("task_0123456789abcdef0123456789abcdef").unwrap();
        let login = login_for(&task, [0xab; 8]);
        assert_eq!(
            login,
            "mnd_0123456789abcdef0123456789abcdef_abababababababab"
        );
        assert_eq!(task_of(&login), Some(task));
        for other in [
            "mnd_0123456789abcdef0123456789abcdef",
            "mnd_0123456789abcdef0123456789abcdef_abab",
            "mnd_0123_abababababababab",
            "xmnd_0123456789abcdef0123456789abcdef_abababababababab",
            "mnd_0123456789ABCDEF0123456789abcdeg_abababababababab",
            "postgres",
        ] {
            assert_eq!(task_of(other), None, "{other}");
        }
    }
}
