//! Mandate's audit log: event records and the hash chain that links them.
//!
//! Every record carries `prev_hash` and `hash = SHA-256(domain tag ‖ fields ‖
//! prev_hash)`. The hash input is a length-prefixed encoding of the fields,
//! not JSON, so it does not depend on any serializer's key order. Secrets and
//! tokens never enter an event: tokens are referenced by `jti`, secrets by id.
//! This crate does no I/O; the store appends, the CLI verifies.

#![forbid(unsafe_code)]

mod chain;
mod event;

pub use chain::{
    ChainBreak, ChainHead, Checkpoint, GENESIS_HASH, record_hash, verify_chain,
    verify_chain_against,
};
pub use event::{Event, EventKind, NewEvent};
