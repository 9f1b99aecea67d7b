//! What travels between the broker (`mandate-server`) and a
//! credential-injection proxy (`mandate-proxy`), and the revocation feed
//! that the proxy and `mandate run` follow. This crate is the only place
//! these shapes are declared: the broker builds and reads them, the proxy
//! reads and builds the very same types, so the two cannot drift apart.
//!
//! - [`protocol`]: the proxy ↔ broker protocol number.
//! - [`approval`]: `POST /v1/approvals/resolve` (a request policy held).
//! - [`catalog`]: `GET /v1/proxy/catalog` (tools, secret versions, policy).
//! - [`secret`]: `GET /v1/proxy/secrets/{tool}` (a tool's secret value).
//! - [`batch`]: `POST /v1/audit/tool-invocations` (tool-call records, the
//!   limits the broker holds them to, and its answer).
//! - [`feed`]: `GET /v1/revocations` (a page) and the stream's event name.
//!
//! Serde types and constants only: no I/O, no async. Domain types that
//! are already serialisable (`Tool`, `Revocation`) come from
//! `mandate-core` as they are. The JSON of every type is pinned by tests.

#![forbid(unsafe_code)]

pub mod approval;
pub mod batch;
pub mod catalog;
pub mod feed;
pub mod protocol;
pub mod secret;

pub use approval::{ApprovalAnswer, ApprovalAsk, ApprovalOutcome};

pub use batch::{Accepted, Batch, MAX_BATCH, Mode, Stage, ToolCall};
pub use catalog::{CatalogDoc, PolicyDoc, PolicyFile, SecretMeta};
pub use feed::{REVOCATION_EVENT, Revocation, RevocationKind, RevocationPage};
pub use protocol::PROXY_PROTOCOL;
pub use secret::SecretValue;
