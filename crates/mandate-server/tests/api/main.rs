//! The broker over HTTP: one test binary (one link, one PostgreSQL cluster)
//! holding every integration suite, each module the rules of one area.

mod admin_tokens;
mod approvals;
mod authorize;
mod bad_input;
mod breakglass;
mod checkpoints;
mod client_auth;
mod connections;
mod delegation;
mod dpop;
mod durability;
mod governance;
mod leases;
mod login;
mod metrics;
mod model_change;
mod policy_reload;
mod postgres;
mod properties;
mod rescope;
mod secrets;
mod tasks_and_grants;
mod tls;
mod webhooks;
mod wire;
