//! Mandate's audit log: event records and the hash chain that links them.
//!
//! Every record carries `prev_hash` and `hash = SHA-256(domain tag ‖ fields ‖
//! prev_hash)`. The hash input is a length-prefixed encoding of the fields,
//! not JSON, so it does not depend on any serializer's key order. Secrets and
//! tokens never enter an event: tokens are referenced by `jti`, secrets by id.
//! This crate does no I/O; the store appends, the CLI verifies. Webhook
//! endpoints (`webhook`) are described here too: which kinds each wants.

#![forbid(unsafe_code)]

mod chain;
mod event;
mod webhook;

pub use chain::{
    ChainBreak, ChainHead, Checkpoint, GENESIS_HASH, record_hash, verify_chain,
    verify_chain_against,
};
pub use event::{Event, EventKind, NewEvent};
pub use webhook::{
    DEFAULT_KINDS, KindFilter, KindPattern, MAX_DESCRIPTION_LEN, MAX_URL_LEN, NewWebhook, Webhook,
    WebhookProgress, check_url,
};
