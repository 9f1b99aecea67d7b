//! The store contract: what the SQLite and the PostgreSQL backend must both
//! do, to the letter. Every test runs on each backend (`sqlite::…` and
//! `postgres::…`, see `common`); a rule that holds on one and not on the
//! other fails here.
//!
//! - `registry`: owners, agents, bindings, tools: uniqueness, what must exist.
//! - `listings`: names in byte order, whatever the database's collation.
//! - `tasks`: the state machine's edges, listing, expiry of due tasks.
//! - `cascade`: revoking an agent, its tasks, feed entries and events.
//! - `delegation`: delegated tasks and their subtrees ending with them.
//! - `large_cascade`: a subtree of more events than one INSERT stores.
//! - `rescope`: a task's context switch and what it cuts off.
//! - `feed`: the revocation feed: revoking by id, paging, pruning.
//! - `grants`: minted grants beside refused writes.
//! - `admin_tokens`: creation, listing, revocation, the last root.
//! - `approvals`: held tasks, finding or opening a request, spending a
//!   `once` approval, a final verdict.
//! - `secrets`: data key, put and rotate versions, use, proxy ingestion.
//! - `enrolment`: join tokens, client assertions.
//! - `audit`: the chain under concurrent writes, across reopening.
//! - `governance`: owner kinds, use read back from the log, live grants,
//!   rotation notices raised once.
//! - `leases`: dynamic credentials recorded for live tasks only, due once
//!   their task ends however it ends.
//! - `webhooks`: endpoints with sealed secrets, delivery progress, and the
//!   chain head a sender waits on.
//!
//! A refused write must leave nothing behind: no row, no event, no feed
//! entry. Tests check that with [`fixtures::Snapshot`], everything the
//! trait can read, taken before and after.

#[path = "../common/mod.rs"]
mod common;
mod fixtures;

mod admin_tokens;
mod approvals;
mod audit;
mod cascade;
mod delegation;
mod enrolment;
mod feed;
mod governance;
mod grants;
mod large_cascade;
mod leases;
mod listings;
mod registry;
mod rescope;
mod secrets;
mod tasks;
mod webhooks;
