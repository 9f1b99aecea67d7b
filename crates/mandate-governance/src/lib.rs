//! Mandate's governance plane: what exists (the inventory of secrets,
//! grants and agents, per credential class), how it stands (posture
//! findings, each mapped to OWASP, NIST and CSA frameworks by the data in
//! `frameworks.toml`), and the reports an operator or a CI gate reads.
//! Pure: the broker gathers the [`Facts`], this crate judges them and
//! renders the result.

#![forbid(unsafe_code)]

mod assess;
mod facts;
mod finding;
pub mod frameworks;
mod html;
mod inventory;
mod kind;
mod markdown;
mod report;
mod sarif;

pub use assess::assess;
pub use facts::{Facts, OpenAnomaly, WildcardPermit};
pub use finding::{Finding, Subject};
pub use frameworks::Mapping;
pub use html::html;
pub use inventory::{AgentEntry, Filter, GrantEntry, Inventory, SecretEntry};
pub use kind::{FindingKind, Severity};
pub use markdown::markdown;
pub use report::{Report, Summary, utc};
pub use sarif::sarif;
