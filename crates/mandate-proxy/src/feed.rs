//! The revocation set and the feed that keeps it current: the broker's SSE
//! stream (`/v1/revocations/stream`), with polling (`/v1/revocations`)
//! while the stream is down. Any bytes from the stream, keep-alive
//! comments included, or a successful poll mark the set fresh; requests
//! are refused when it has not been fresh for `staleness_secs`.

use crate::broker::Broker;
use futures::StreamExt;
use mandate_policy::Subject;
use mandate_wire::{REVOCATION_EVENT, Revocation, RevocationKind};
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Entries are kept this long past their `expires_at`: a margin for clocks
/// (a token is dead at its `exp`, but the proxy's clock may lag the broker's).
pub const KEEP_PAST_EXPIRY_SECS: i64 = 10;
/// Longest SSE line accepted; a broker never sends more than a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;
/// Polling interval while the stream is down.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Entries {
    tokens: HashMap<String, i64>,
    tasks: HashMap<String, i64>,
    agents: HashMap<String, i64>,
    keys: HashMap<String, i64>,
}

impl Entries {
    fn of(&mut self, kind: RevocationKind) -> &mut HashMap<String, i64> {
        match kind {
            RevocationKind::Token => &mut self.tokens,
            RevocationKind::Task => &mut self.tasks,
            RevocationKind::Agent => &mut self.agents,
            RevocationKind::Key => &mut self.keys,
        }
    }
}

/// Revoked tokens, tasks and agents, the feed cursor, and freshness.
pub struct Revocations {
    entries: RwLock<Entries>,
    /// Last sequence number applied (the `since` for the next read).
    seq: AtomicU64,
    /// Unix ms of the last fresh data; 0 = never.
    fresh_at_ms: AtomicI64,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            entries: RwLock::new(Entries::default()),
            seq: AtomicU64::new(0),
            fresh_at_ms: AtomicI64::new(0),
        }
    }
}

impl Revocations {
    pub fn apply(&self, r: &Revocation) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .of(r.kind)
            .insert(r.id.clone(), r.expires_at);
        self.seq.fetch_max(r.seq, Ordering::AcqRel);
    }

    pub fn since(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Which of the token, its signing key, or any task or agent it
    /// depends on (its holder's, and a delegated token's whole chain, so
    /// one entry for a task revokes its subtree) is revoked, if any.
    pub fn check(&self, jti: &str, kid: &str, subject: Option<&Subject>) -> Option<RevocationKind> {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if e.keys.contains_key(kid) {
            return Some(RevocationKind::Key);
        }
        if e.tokens.contains_key(jti) {
            return Some(RevocationKind::Token);
        }
        let parties = subject.into_iter().flat_map(Subject::parties);
        for (agent, task) in parties {
            if e.tasks.contains_key(task.as_str()) {
                return Some(RevocationKind::Task);
            }
            if e.agents.contains_key(agent.as_str()) {
                return Some(RevocationKind::Agent);
            }
        }
        None
    }

    /// Drop entries that can no longer matter: what they revoke has expired.
    pub fn sweep(&self, now: i64) {
        let mut guard = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let e = &mut *guard;
        for map in [&mut e.tokens, &mut e.tasks, &mut e.agents, &mut e.keys] {
            map.retain(|_, exp| *exp + KEEP_PAST_EXPIRY_SECS > now);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.tokens.len() + e.tasks.len() + e.agents.len() + e.keys.len()
    }

    pub fn mark_fresh(&self, now_ms: i64) {
        self.fresh_at_ms.fetch_max(now_ms, Ordering::AcqRel);
    }

    /// Seconds since fresh data, `None` if there never was any.
    pub fn lag_secs(&self, now_ms: i64) -> Option<f64> {
        match self.fresh_at_ms.load(Ordering::Acquire) {
            0 => None,
            t => Some((now_ms - t).max(0) as f64 / 1000.0),
        }
    }

    pub fn is_fresh(&self, now_ms: i64, staleness_secs: u64) -> bool {
        self.lag_secs(now_ms)
            .is_some_and(|lag| lag <= staleness_secs as f64)
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules this feed needs).
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut out);
            } else {
                if self.line.len() >= MAX_LINE {
                    return Err(LineTooLong);
                }
                self.line.push(b);
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                out.push(ev);
            }
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

fn now_ms() -> i64 {
    crate::now_ms()
}

/// Keep `set` current until the task is aborted. `on_entry` sees every
/// new entry (to drop cached task and agent facts).
pub async fn run(
    broker: &Broker,
    set: &Revocations,
    staleness_secs: u64,
    on_entry: impl Fn(&Revocation),
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match stream_once(broker, set, staleness_secs, &on_entry).await {
            Ok(()) => {
                tracing::info!("revocation stream ended; reconnecting");
                backoff = Duration::from_millis(250);
            }
            Err(e) => tracing::warn!(error = %e, "revocation stream down; polling"),
        }
        // Poll while waiting to reconnect, so a broken stream (a proxy in
        // between that buffers SSE, say) still delivers revocations.
        let until = tokio::time::Instant::now() + backoff;
        loop {
            poll_once(broker, set, &on_entry).await;
            if tokio::time::Instant::now() >= until {
                break;
            }
            tokio::time::sleep(POLL_EVERY.min(backoff)).await;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Read pages until the feed is drained; fresh only once it is.
async fn poll_once(broker: &Broker, set: &Revocations, on_entry: &impl Fn(&Revocation)) {
    loop {
        match broker.revocations(set.since()).await {
            Ok((entries, more)) => {
                for r in &entries {
                    set.apply(r);
                    on_entry(r);
                }
                if !more || entries.is_empty() {
                    set.mark_fresh(now_ms());
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation poll failed");
                return;
            }
        }
    }
}

async fn stream_once(
    broker: &Broker,
    set: &Revocations,
    staleness_secs: u64,
    on_entry: &impl Fn(&Revocation),
) -> Result<(), String> {
    let resp = broker
        .revocation_stream(set.since())
        .await
        .map_err(|e| e.to_string())?;
    set.mark_fresh(now_ms());
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::default();
    // Silence longer than the staleness bound means the connection is dead
    // even if TCP has not noticed.
    let idle = Duration::from_secs(staleness_secs.max(1));
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Err(format!("no data for {}s", idle.as_secs())),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(c))) => c,
        };
        set.mark_fresh(now_ms());
        let events = parser
            .push(&chunk)
            .map_err(|_| "an SSE line is too long".to_owned())?;
        for ev in events {
            if ev.event != REVOCATION_EVENT {
                continue;
            }
            match serde_json::from_str::<Revocation>(&ev.data) {
                Ok(r) => {
                    set.apply(&r);
                    on_entry(&r);
                }
                // A feed entry we cannot read could be a revocation: resync.
                Err(e) => return Err(format!("unreadable revocation event: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(seq: u64, kind: RevocationKind, id: &str, exp: i64) -> Revocation {
        Revocation {
            seq,
            kind,
            id: id.into(),
            revoked_at: 0,
            expires_at: exp,
        }
    }

    const T1: &str = "task_11111111111111111111111111111111";
    const T2: &str = "task_22222222222222222222222222222222";
    const T3: &str = "task_33333333333333333333333333333333";

    /// `agent`'s token on `task`, delegated through `chain`.
    fn subject(agent: &str, task: &str, chain: &[(&str, &str)]) -> Subject {
        let a = |n: &str| mandate_core::AgentName::parse(n).unwrap();
        let t = |n: &str| mandate_core::TaskId::parse(n).unwrap();
        Subject {
            agent: a(agent),
            task: t(task),
            chain: chain.iter().map(|(x, y)| (a(x), t(y))).collect(),
        }
    }

    #[test]
    fn each_kind_revokes_and_entries_expire_after_the_leeway() {
        let s = Revocations::default();
        s.apply(&rev(1, RevocationKind::Token, "j1", 100));
        s.apply(&rev(3, RevocationKind::Task, T1, 200));
        s.apply(&rev(2, RevocationKind::Agent, "bot", 300));
        s.apply(&rev(4, RevocationKind::Key, "k1", 400));
        assert_eq!(s.since(), 4);
        let other = subject("y", T3, &[]);
        let check = |jti, kid, sub: &Subject| s.check(jti, kid, Some(sub));
        assert_eq!(check("j1", "k0", &other), Some(RevocationKind::Token));
        assert_eq!(
            check("j2", "k0", &subject("y", T1, &[])),
            Some(RevocationKind::Task)
        );
        assert_eq!(
            check("j2", "k0", &subject("bot", T3, &[])),
            Some(RevocationKind::Agent)
        );
        assert_eq!(check("j2", "k1", &other), Some(RevocationKind::Key));
        assert_eq!(check("j2", "k0", &other), None);
        assert_eq!(s.check("j2", "k0", None), None);
        s.sweep(100);
        assert_eq!(check("j1", "k0", &other), Some(RevocationKind::Token));
        s.sweep(100 + KEEP_PAST_EXPIRY_SECS);
        assert_eq!(check("j1", "k0", &other), None);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn one_entry_for_a_task_or_agent_revokes_every_token_delegated_below_it() {
        let s = Revocations::default();
        s.apply(&rev(1, RevocationKind::Task, T1, 200));
        s.apply(&rev(2, RevocationKind::Agent, "lead", 200));
        // C's token on T3, delegated A (T1) -> B (T2) -> C.
        let below_task = subject("c", T3, &[("a", T1), ("b", T2)]);
        assert_eq!(
            s.check("j", "k", Some(&below_task)),
            Some(RevocationKind::Task)
        );
        let below_agent = subject("c", T3, &[("x", T2), ("lead", T2)]);
        assert_eq!(
            s.check("j", "k", Some(&below_agent)),
            Some(RevocationKind::Agent)
        );
        let beside = subject("c", T3, &[("x", T2)]);
        assert_eq!(s.check("j", "k", Some(&beside)), None);
    }

    #[test]
    fn freshness_follows_the_last_data() {
        let s = Revocations::default();
        assert!(!s.is_fresh(10_000, 30));
        assert_eq!(s.lag_secs(10_000), None);
        s.mark_fresh(10_000);
        assert!(s.is_fresh(40_000, 30));
        assert!(!s.is_fresh(40_001, 30));
        assert_eq!(s.lag_secs(12_500), Some(2.5));
        // An older mark never moves freshness backwards.
        s.mark_fresh(5_000);
        assert_eq!(s.lag_secs(10_000), Some(0.0));
    }

    #[test]
    fn sse_events_split_anywhere_parse_the_same() {
        let text = ": keep-alive\n\nid: 7\r\nevent: revocation\ndata: {\"a\":1}\n\n:x\nevent: other\ndata: a\ndata: b\n\n";
        let whole = SseParser::default().push(text.as_bytes()).unwrap();
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "revocation".into(),
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "other".into(),
                    id: None,
                    data: "a\nb".into()
                },
            ]
        );
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&text.as_bytes()[..cut]).unwrap();
            got.extend(p.push(&text.as_bytes()[cut..]).unwrap());
            assert_eq!(got, whole, "cut {cut}");
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::default();
        assert_eq!(p.push(&vec![b'a'; MAX_LINE + 1]), Err(LineTooLong));
    }
}
