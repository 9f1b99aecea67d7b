//! The revocation feed (public, like a CRL: ids only): a page from
//! `GET /v1/revocations?since=SEQ`, and the event name of
//! `GET /v1/revocations/stream` (server-sent events, one [`Revocation`] as
//! JSON per event, `id` = its `seq`). Read by proxies and by `mandate run`.

pub use mandate_core::{Revocation, RevocationKind};
use serde::{Deserialize, Serialize};

/// The SSE event name of a feed entry; other events are not entries.
pub const REVOCATION_EVENT: &str = "revocation";

/// One page of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationPage {
    /// Entries after `since` that still matter, oldest first.
    pub entries: Vec<Revocation>,
    /// The `since` for the next call: the last entry's seq (or the given
    /// `since`).
    pub next: u64,
    /// A full page came back: ask again from `next` until false. Brokers
    /// from before paging send none.
    #[serde(default)]
    pub more: bool,
}
