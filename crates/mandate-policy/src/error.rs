/// Why a policy set was refused. Each names the file and, where Cedar can
/// tell, the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("schema is invalid: {0}")]
    Schema(String),
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("policy id `{id}` is used in both {first} and {second}")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("policies do not validate against the schema: {0}")]
    Invalid(String),
    #[error("no policies: at least one .cedar file with a permit is needed")]
    Empty,
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}
