//! Following the broker's revocation stream (`GET /v1/revocations/stream`,
//! server-sent events, no credential: ids only) so `mandate run` learns at
//! once that its task or agent was revoked, instead of at its next poll.
//! Entries are `mandate_wire`'s, as the broker sends them.

use crate::client::Client;
use mandate_wire::{Revocation, RevocationKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Wait this long before reconnecting a stream that ended, doubling up to
/// [`RECONNECT_MAX`] while connecting fails (a broker at its
/// `max_feed_streams` is not hammered by every waiting wrapper).
const RECONNECT: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
const MAX_LINE: usize = 64 * 1024;

/// The revocation an SSE line carries, if it is a `data:` line with one.
fn revocation_in(line: &[u8]) -> Option<Revocation> {
    let data = line.strip_prefix(b"data:")?;
    serde_json::from_slice(data.trim_ascii()).ok()
}

/// Whether `r` ends `task` (revoked itself, or its agent).
fn ends(r: &Revocation, task: &str, agent: &str) -> bool {
    match r.kind {
        RevocationKind::Task => r.id == task,
        RevocationKind::Agent => r.id == agent,
        RevocationKind::Token | RevocationKind::Key => false,
    }
}

/// Notify `wake` whenever the stream names `task` or `agent`. Runs until
/// aborted; reconnects after a failure, resuming after the last entry seen.
/// Best effort: the caller keeps polling as the fallback.
pub async fn follow(c: Client, task: String, agent: String, wake: Arc<Notify>) {
    let mut after = 0u64;
    let mut wait = RECONNECT;
    loop {
        let path = format!("/v1/revocations/stream?since={after}");
        if let Ok(mut resp) = c.stream(&path).await {
            wait = RECONNECT;
            let mut buf: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if let Some(r) = revocation_in(&line) {
                        after = after.max(r.seq);
                        if ends(&r, &task, &agent) {
                            wake.notify_one();
                        }
                    }
                }
                // A feed line is a few hundred bytes; never hold more than
                // this of one that does not end.
                if buf.len() > MAX_LINE {
                    buf.clear();
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(kind: RevocationKind, id: &str) -> Revocation {
        Revocation {
            seq: 9,
            kind,
            id: id.into(),
            revoked_at: 1,
            expires_at: 2,
        }
    }

    #[test]
    fn only_data_lines_with_a_revocation_are_read() {
        let line = br#"data: {"seq":9,"kind":"task","id":"t1","revoked_at":1,"expires_at":2}"#;
        assert_eq!(revocation_in(line), Some(rev(RevocationKind::Task, "t1")));
        let crlf = b"data:{\"seq\":9,\"kind\":\"agent\",\"id\":\"bot\",\"revoked_at\":1,\"expires_at\":2}\r\n";
        assert_eq!(revocation_in(crlf), Some(rev(RevocationKind::Agent, "bot")));
        for other in [
            &b"event: revocation"[..],
            b"id: 9",
            b": keep-alive",
            b"",
            b"data: {}",
        ] {
            assert_eq!(revocation_in(other), None);
        }
    }

    #[test]
    fn a_task_ends_with_its_own_or_its_agents_revocation_only() {
        assert!(ends(&rev(RevocationKind::Task, "t1"), "t1", "bot"));
        assert!(ends(&rev(RevocationKind::Agent, "bot"), "t1", "bot"));
        assert!(!ends(&rev(RevocationKind::Task, "t2"), "t1", "bot"));
        assert!(!ends(&rev(RevocationKind::Agent, "t1"), "t1", "bot"));
        assert!(!ends(&rev(RevocationKind::Token, "t1"), "t1", "bot"));
        assert!(!ends(&rev(RevocationKind::Key, "bot"), "t1", "bot"));
    }

    /// Against a real broker: revoking the task wakes the follower; other
    /// tasks' revocations do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_follower_wakes_on_its_tasks_revocation() {
        use mandate_testkit::TestServer;
        let s = TestServer::start().await;
        s.seed().await;
        let session = s.session("bot").await;
        let (mine, _) = s.read_grant(&session).await;
        let (other, _) = s.read_grant(&session).await;
        let wake = Arc::new(Notify::new());
        let follower = tokio::spawn(follow(
            Client::new(&s.base, None, None).unwrap(),
            mine.clone(),
            "bot".into(),
            wake.clone(),
        ));
        // Let it connect, then revoke another task: no wake-up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.admin_post(&format!("/v1/tasks/{other}/revoke"), serde_json::json!({}))
            .await;
        let early = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
        assert!(early.is_err(), "woken by another task's revocation");
        let revoked = std::time::Instant::now();
        s.admin_post(&format!("/v1/tasks/{mine}/revoke"), serde_json::json!({}))
            .await;
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("the revocation never woke the follower");
        eprintln!(
            "follower woken {:?} after the revocation",
            revoked.elapsed()
        );
        follower.abort();
    }
}
