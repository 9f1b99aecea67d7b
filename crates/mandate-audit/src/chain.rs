use crate::{Event, NewEvent};
use aws_lc_rs::digest;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain ends: the next record's `seq` and `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub last_hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            next_seq: 1,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainHead {
    /// Chain `new` onto the head and advance it.
    pub fn append(&mut self, new: NewEvent, time_ms: i64) -> Event {
        let mut event = Event {
            seq: self.next_seq,
            time_ms,
            kind: new.kind,
            actor: new.actor,
            agent: new.agent,
            task: new.task,
            tool: new.tool,
            jti: new.jti,
            decision: new.decision,
            reasons: new.reasons,
            request_id: new.request_id,
            detail: new.detail,
            prev_hash: std::mem::take(&mut self.last_hash),
            hash: String::new(),
        };
        event.hash = record_hash(&event);
        self.next_seq += 1;
        self.last_hash = event.hash.clone();
        event
    }
}

/// `n` in decimal, written into `buf`: every event is hashed, and its
/// numbers need no allocation (24 bytes hold any 64-bit number).
fn decimal(n: impl std::fmt::Display, buf: &mut [u8; 24]) -> &str {
    use std::io::Write as _;
    let mut rest = &mut buf[..];
    let _ = write!(rest, "{n}");
    let len = 24 - rest.len();
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

fn put(ctx: &mut digest::Context, name: &str, value: Option<&str>) {
    ctx.update(name.as_bytes());
    match value {
        None => ctx.update(b"=-\n"),
        Some(v) => {
            ctx.update(b"=");
            ctx.update(decimal(v.len(), &mut [0; 24]).as_bytes());
            ctx.update(b":");
            ctx.update(v.as_bytes());
            ctx.update(b"\n");
        }
    }
}

/// The hash of a record over every field except `hash` itself.
pub fn record_hash(e: &Event) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"mandate-audit-v1\n");
    put(&mut ctx, "seq", Some(decimal(e.seq, &mut [0; 24])));
    put(&mut ctx, "time_ms", Some(decimal(e.time_ms, &mut [0; 24])));
    put(&mut ctx, "kind", Some(e.kind.as_str()));
    put(&mut ctx, "actor", Some(&e.actor));
    put(&mut ctx, "agent", e.agent.as_deref());
    put(&mut ctx, "task", e.task.as_deref());
    put(&mut ctx, "tool", e.tool.as_deref());
    put(&mut ctx, "jti", e.jti.as_deref());
    put(&mut ctx, "decision", e.decision.as_deref());
    put(
        &mut ctx,
        "reasons",
        Some(decimal(e.reasons.len(), &mut [0; 24])),
    );
    for r in &e.reasons {
        put(&mut ctx, "reason", Some(r));
    }
    put(&mut ctx, "request_id", e.request_id.as_deref());
    put(&mut ctx, "detail", Some(&e.detail));
    put(&mut ctx, "prev_hash", Some(&e.prev_hash));
    hex::encode(ctx.finish().as_ref())
}

/// The first record that does not check out, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// A record an auditor saw earlier, e.g. the head a previous `verify`
/// printed and that was kept elsewhere (a ticket, the SIEM). A chain that
/// no longer holds it with this hash was cut short or rewritten: the one
/// thing a hash chain cannot show on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Checkpoint {
    type Err = String;
    /// `SEQ:HASH`, as `mandate audit verify` prints the head.
    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or("expected SEQ:HASH, e.g. 1042:3fa9…")?;
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or("SEQ must be a record number (1 or more)")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("HASH must be 64 hex digits".into());
        }
        Ok(Checkpoint {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Verify records in order from the genesis record. Returns how many
/// records checked out, or the first broken one.
pub fn verify_chain(events: impl IntoIterator<Item = Event>) -> Result<u64, ChainBreak> {
    verify_chain_against(events, &[])
}

/// [`verify_chain`], and every checkpoint must be in the chain unchanged.
pub fn verify_chain_against(
    events: impl IntoIterator<Item = Event>,
    checkpoints: &[Checkpoint],
) -> Result<u64, ChainBreak> {
    let mut head = ChainHead::default();
    let mut count = 0;
    for e in events {
        if e.seq != head.next_seq {
            return Err(ChainBreak {
                seq: e.seq,
                reason: format!(
                    "expected record {} here (a record is missing or reordered)",
                    head.next_seq
                ),
            });
        }
        if e.prev_hash != head.last_hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "prev_hash does not match the previous record's hash".into(),
            });
        }
        if record_hash(&e) != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "contents do not match its hash (record altered)".into(),
            });
        }
        if let Some(cp) = checkpoints.iter().find(|c| c.seq == e.seq)
            && cp.hash != e.hash
        {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "hash differs from the checkpoint (the chain was rewritten from here or earlier)"
                    .into(),
            });
        }
        head.next_seq += 1;
        head.last_hash = e.hash;
        count += 1;
    }
    if let Some(cp) = checkpoints
        .iter()
        .filter(|c| c.seq > count)
        .min_by_key(|c| c.seq)
    {
        return Err(ChainBreak {
            seq: cp.seq,
            reason: format!(
                "record is missing: the log ends at record {count} but the checkpoint saw it (the log was truncated)"
            ),
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use proptest::prelude::*;

    fn chain(n: usize) -> Vec<Event> {
        let mut head = ChainHead::default();
        (0..n)
            .map(|i| {
                head.append(
                    NewEvent::new(EventKind::Decision, "system")
                        .agent(format!("a{i}"))
                        .reasons(vec![format!("r{i}")]),
                    i as i64,
                )
            })
            .collect()
    }

    /// The hash is the chain's format: stored chains must keep verifying.
    #[test]
    fn record_hash_is_stable() {
        let mut e = chain(1).remove(0);
        e.seq = 1_234_567_890_123;
        e.time_ms = -5;
        assert_eq!(
            record_hash(&e),
            "5bafcb85166888cbe0eddd100972ef42a4e6a0d452bc615a8da6bede34e5c0c3"
        );
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(chain(5)).unwrap(), 5);
    }

    #[test]
    fn altered_record_is_named() {
        let mut c = chain(5);
        c[2].decision = Some("allow".into());
        assert_eq!(verify_chain(c).unwrap_err().seq, 3);
    }

    #[test]
    fn deleted_record_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(c).unwrap_err().seq, 3);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // Moving a character between adjacent fields must change the hash.
        let mut c = chain(1);
        let mut d = c.clone();
        c[0].agent = Some("ab".into());
        c[0].task = Some("c".into());
        d[0].agent = Some("a".into());
        d[0].task = Some("bc".into());
        assert_ne!(record_hash(&c[0]), record_hash(&d[0]));
    }

    fn checkpoint(e: &Event) -> Checkpoint {
        format!("{}:{}", e.seq, e.hash).parse().unwrap()
    }

    #[test]
    fn truncation_is_caught_only_with_a_checkpoint() {
        let full = chain(6);
        let seen = checkpoint(&full[4]);
        let cut: Vec<Event> = full[..3].to_vec();
        // The tail is gone, yet what is left is a perfect chain...
        assert_eq!(verify_chain(cut.clone()).unwrap(), 3);
        // ...until it is held against what an auditor saw earlier.
        let err = verify_chain_against(cut, std::slice::from_ref(&seen)).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.reason.contains("truncated"), "{err}");
        assert_eq!(verify_chain_against(full, &[seen]).unwrap(), 6);
    }

    #[test]
    fn a_rewritten_chain_contradicts_the_checkpoint() {
        let original = chain(4);
        let seen = checkpoint(&original[2]);
        // Rebuilt from scratch with one record changed: internally consistent.
        let mut head = ChainHead::default();
        let forged: Vec<Event> = original
            .iter()
            .map(|e| {
                let mut n = NewEvent::new(e.kind, e.actor.clone());
                n.decision = Some("allow".into());
                head.append(n, e.time_ms)
            })
            .collect();
        assert!(verify_chain(forged.clone()).is_ok());
        let err = verify_chain_against(forged, &[seen]).unwrap_err();
        assert_eq!(err.seq, 3);
    }

    #[test]
    fn checkpoints_parse_strictly() {
        let h = "a".repeat(64);
        assert_eq!(format!("7:{h}").parse::<Checkpoint>().unwrap().seq, 7);
        for bad in [
            "",
            "7",
            &format!("0:{h}"),
            &format!("x:{h}"),
            "7:abc",
            &format!("7:{}", "g".repeat(64)),
        ] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_single_alteration_is_detected(n in 1usize..20, victim in 0usize..20, text in "[a-z]{1,8}") {
            let mut c = chain(n);
            let v = victim % n;
            c[v].actor.push_str(&text);
            let err = verify_chain(c).unwrap_err();
            prop_assert_eq!(err.seq, v as u64 + 1);
        }
    }
}
