//! Why a policy set was refused. Policy files are operator input, so every
//! error says which file, and where Cedar can tell, which line, column and
//! policy.

use std::fmt;

/// One problem Cedar found, located as precisely as Cedar allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given to [`crate::PolicySet::from_sources`], or the
    /// schema's name.
    pub file: String,
    /// 1-based line and column (in characters), when Cedar gave a span.
    pub position: Option<(usize, usize)>,
    /// The `@id` of the policy at fault, for validation problems.
    pub policy: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(id) = &self.policy {
            write!(f, ": policy `{id}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{dir}: no .cedar policy files (expected at least one next to schema.cedarschema)")]
    NoPolicyFiles { dir: String },
    #[error("invalid schema: {}", list(.0))]
    Schema(Vec<Problem>),
    #[error("cannot parse policies: {}", list(.0))]
    Parse(Vec<Problem>),
    #[error("{file}: policy templates (`?principal`, `?resource`) are not supported")]
    Template { file: String },
    #[error("policy id `{id}` is used in both {first} and {second}")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("policies do not validate against the schema: {}", list(.0))]
    Invalid(Vec<Problem>),
    #[error("no policies: at least one policy (and a permit) is needed")]
    Empty,
}

impl PolicyError {
    /// Every located problem, for callers that show them one per line.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Schema(p) | PolicyError::Parse(p) | PolicyError::Invalid(p) => p,
            _ => &[],
        }
    }
}
