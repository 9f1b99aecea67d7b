use mandate_core::{ApprovalError, Invalid, RuleViolation};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} `{id}` already exists")]
    Conflict { what: &'static str, id: String },
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// A write that breaks a rule only the stored state can check (a
    /// production agent's owner must be a team or a service).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("join token is unknown, expired or already used")]
    JoinTokenInvalid,
    #[error("client assertion `jti` was already used")]
    Replay,
    /// A change the store refuses on principle (the message says why).
    #[error("{0}")]
    Refused(&'static str),
    #[error("store is shut down")]
    Closed,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(String),
}

impl StoreError {
    /// A stored value that does not read back as its domain type.
    pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }

    /// A failed group commit, as told to each caller in the group.
    pub(crate) fn group_failed(&self) -> StoreError {
        StoreError::Backend(match self {
            StoreError::Backend(m) => m.clone(),
            other => other.to_string(),
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<postgres::Error> for StoreError {
    /// Severity, message and SQLSTATE only: a constraint failure's DETAIL
    /// quotes the row's values (a token's hash, a name), which stay out of
    /// error messages and logs.
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(match e.as_db_error() {
            Some(db) => format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
            None => mandate_pg_connect::with_sources(&e),
        })
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
