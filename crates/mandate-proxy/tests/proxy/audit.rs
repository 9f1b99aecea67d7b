//! Audit durability: records survive a proxy crash and arrive exactly once.

use crate::support;

use reqwest::StatusCode;
use std::time::Duration;
use support::{World, request_id};

#[tokio::test]
async fn killed_mid_batch_the_proxy_resends_on_restart_with_no_loss_and_no_duplicates() {
    // Shipping every hour: nothing leaves the spool before the kill.
    let mut w = World::with_flush(3_600_000).await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let tok = (i % 4 != 0).then_some(token.as_str());
        let (st, h, _) = w.call("GET", &format!("/echo/items/{i}"), tok).await;
        assert!(st == StatusCode::OK || st == StatusCode::UNAUTHORIZED);
        ids.push(request_id(&h));
    }
    // Let the writer thread sync the last batch, then crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.proxy.take().unwrap().kill().await;
    let shipped = w.invocations().await;
    assert!(
        ids.iter()
            .all(|id| !shipped.iter().any(|e| e["request_id"] == id.as_str())),
        "records were shipped before the kill; the test would prove nothing"
    );

    // Keep the spool as the crash left it, to replay later.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(w.spool.path(), crashed.path());

    // Restart on the same spool: everything arrives, once.
    w.start_proxy(50).await;
    let evs = w.wait_for_records(&ids).await;
    for id in &ids {
        let n = evs
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .count();
        assert_eq!(n, 1, "{id} chained {n} times");
    }
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 4 != 0) {
        let (_, outcome) = w.outcome(id).await;
        assert_eq!(outcome["status"], 200, "call {i}: {outcome}");
    }
    let completions = w.events_of("tool.completed").await.len();
    // And a further restart sends nothing again.
    w.proxy.take().unwrap().stop().await;
    w.start_proxy(50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.invocations().await.len(), evs.len());

    // A crash after the broker acknowledged but before the proxy recorded
    // it: the whole batch is sent again, and the broker chains none of it.
    w.proxy.take().unwrap().stop().await;
    std::fs::remove_dir_all(w.spool.path()).unwrap();
    copy_dir(crashed.path(), w.spool.path());
    w.start_proxy(50).await;
    // A call after the replay is spooled behind it, so once it has arrived
    // the replay has been shipped; and it arrives (positions went on growing).
    let (_, h, _) = w.call("GET", "/echo/items/after", Some(&token)).await;
    let after = request_id(&h);
    w.wait_for_records(std::slice::from_ref(&after)).await;
    assert_eq!(
        w.invocations().await.len(),
        evs.len() + 1,
        "a resent batch was chained twice"
    );
    w.outcome(&after).await;
    assert!(
        w.events_of("tool.completed").await.len() <= completions + 1,
        "a resent batch's outcomes were chained again"
    );
    let segments = std::fs::read_dir(w.spool.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("spool-")
        })
        .count();
    assert!(
        segments <= 2,
        "spool was not compacted: {segments} segments"
    );
}

/// Invariant 4 (audited before the effect) for tool calls: an allowed call's record is in the
/// spool before the request goes upstream, so a proxy that dies while the
/// upstream is at work still leaves the record of what it sent.
#[tokio::test]
async fn a_call_in_flight_when_the_proxy_dies_is_still_audited() {
    // Shipping every hour: the record can only arrive from the spool, after the restart.
    let mut w = World::with_flush(3_600_000).await;
    let (task, token) = w.grant("echo", &["items:read"]).await;
    let before = w.up.count();
    let url = w.url("/echo/items/slow");
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while w.up.count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream has the request and has not answered: crash now.
    w.proxy.take().unwrap().kill().await;
    call.abort();
    assert!(w.invocations().await.is_empty());

    w.start_proxy(50).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ev = loop {
        let found = w.invocations().await.into_iter().find(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("/echo/items/slow"))
        });
        if let Some(e) = found {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the in-flight call was not audited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["task"], task.as_str());
    assert_eq!(ev["tool"], "echo");
    // Its outcome was never known, and no completion is invented for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !w.events_of("tool.completed")
            .await
            .iter()
            .any(|e| e["request_id"] == ev["request_id"]),
        "a completion for a call the proxy never finished"
    );
}

/// An agent that gives up while the upstream works: the call's opening
/// and its outcome are both in the chain (none set aside), the outcome
/// either the upstream's or 499 `client_closed`.
#[tokio::test]
async fn an_agent_that_hangs_up_mid_call_leaves_a_complete_record() {
    let w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let r = reqwest::Client::new()
        .get(w.url("/echo/items/slow"))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.is_err(), "the client was meant to give up");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let invoked = loop {
        let invoked = w.invocations().await.into_iter().find(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("/echo/items/slow"))
        });
        if let Some(inv) = invoked {
            break inv;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call's record never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(invoked["decision"], "allow");
    let (event, detail) = w.outcome(invoked["request_id"].as_str().unwrap()).await;
    let status = detail["status"].as_u64().unwrap();
    assert!(status == 200 || status == 499, "{event}");
    if status == 499 {
        assert!(event["reasons"].to_string().contains("client_closed"));
    }
    assert!(
        !w.spool.path().join("rejected.jsonl").exists(),
        "a record was refused by the broker"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test]
async fn records_wait_in_the_spool_while_the_broker_is_down() {
    let mut w = World::new().await;
    let (_, token) = w.grant("echo", &["items:read"]).await;
    let (_, h, _) = w.call("GET", "/echo/items/1", Some(&token)).await;
    let first = request_id(&h);
    w.wait_for_records(std::slice::from_ref(&first)).await;
    // Broker gone: within the staleness bound the proxy still decides from
    // what it holds, and the record waits in the spool (shipping retries).
    w.s.stop().await;
    let (st, h, body) = w.call("GET", "/echo/items/2", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let second = request_id(&h);
    tokio::time::sleep(Duration::from_millis(600)).await;
    w.s = w.s.restart().await;
    let evs = w.wait_for_records(std::slice::from_ref(&second)).await;
    for id in [&first, &second] {
        assert_eq!(
            evs.iter()
                .filter(|e| e["request_id"] == id.as_str())
                .count(),
            1
        );
    }
}
