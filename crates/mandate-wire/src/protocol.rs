//! The proxy ↔ broker protocol number.

/// The proxy ↔ broker protocol of this release. A broker advertises it in
/// its proxy catalog ([`crate::CatalogDoc::proxy_protocol`]) and still
/// takes what every earlier protocol sends; a proxy refuses to serve
/// beside a broker that advertises less than it needs, so brokers are
/// upgraded first.
/// 1: `invoked` and `completed` audit records. 2: also merged `call`
/// records (one `tool.invoked` event per call). 3: records may carry the
/// agent's address (`client`). 4: records may carry a delegated token's
/// `chain` and `misuse` evidence. 5: records of the egress listener's
/// tunnels (`mode: egress`, `bytes_up`).
pub const PROXY_PROTOCOL: u32 = 5;

/// What a broker from before the number existed speaks.
pub const FIRST_PROTOCOL: u32 = 1;

pub(crate) fn first_protocol() -> u32 {
    FIRST_PROTOCOL
}
