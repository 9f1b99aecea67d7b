//! `mandate-scan`: finds credentials in agent code and configuration
//! (`.env`, MCP client configs, YAML/JSON/TOML, shell, CI workflows,
//! notebooks, Dockerfiles) so they can be moved into Mandate.
//!
//! Rules are data ([`catalog`]); the [`Engine`] runs an Aho-Corasick
//! keyword pass and each rule's regex only near its keywords; [`scan`]
//! walks trees in parallel. A [`Finding`] never holds the value: a
//! redacted preview and a fingerprint. No network, no async.

mod baseline;
pub mod catalog;
mod check;
mod engine;
mod finding;
pub mod render;
mod report;
mod rewrite;
mod rule;
/// SARIF 2.1.0 types (their own crate, shared with the posture report).
pub use mandate_sarif as sarif;
mod walk;

pub use baseline::{Baseline, BaselineError};
pub use engine::{Engine, EngineError, Match, Syntax};
pub use finding::{Finding, fingerprint};
pub use report::{Report, Skipped, Summary};
pub use rewrite::{Rewrite, RewriteError, reference_for, rewrite};
pub use rule::{Check, Reach, Rule};
pub use walk::{ScanError, ScanOptions, relative_path, scan};
