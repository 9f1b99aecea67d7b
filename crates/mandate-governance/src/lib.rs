//! Mandate's governance plane: what exists (the inventory of secrets,
//! grants and agents, per credential class), how it stands (posture
//! findings, each mapped to OWASP, NIST and CSA frameworks by the data in
//! `frameworks.toml`), and the reports an operator or a CI gate reads.
//! Pure: the broker gathers the [`Facts`], this crate judges them.

#![forbid(unsafe_code)]

mod finding;
pub mod frameworks;

pub use finding::{Finding, FindingKind, Severity, Subject};
pub use frameworks::Mapping;
