//! Mandate's control plane: the HTTP/JSON API and OAuth endpoints over the
//! store, token and policy crates. Handlers are thin; domain rules live in
//! `mandate-core`, persistence in `mandate-store`, decisions in
//! `mandate-policy`. `start` runs the server and its background work
//! (sweeper, checkpoints, the webhook sender).

#![forbid(unsafe_code)]

mod admin_token;
mod anomalies;
mod app;
mod approvals;
mod background;
mod boot;
pub mod config;
mod context_change;
mod deadline;
mod directory;
mod engines;
mod error;
mod estate;
mod extract;
mod federation;
mod forwarded;
mod issuing;
mod keeper;
mod leases;
mod listen;
mod metrics;
mod misuse;
mod orphans;
mod request_metrics;
mod rotation_notices;
mod routes;
mod throttle;
mod tokens;
mod webhooks;

pub use admin_token::dev_admin_token;
pub use app::{App, now};
pub use boot::{Started, start};
pub use config::{Config, ConfigError, Settings};
