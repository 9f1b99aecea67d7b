//! Slow and idle connections are closed after `header_read_timeout_secs`
//! (slowloris): HTTP/1, HTTP/2 and connections that never said which; a
//! revocation stream, which is a response in progress, is not cut by it.

use mandate_testkit::TestServer;
use mandate_testkit::raw::{keep_alive_get, served_at_last, unserved_request};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes the connection; how long that took and
/// what it sent. Gives up (None) after `limit`.
async fn until_closed(c: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((start.elapsed(), String::from_utf8_lossy(&got).into_owned()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_but_streams_are_not() {
    let s = TestServer::start_with(|c| {
        c.header_read_timeout_secs = 1;
        c.feed_keepalive_secs = 1;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();

    // Headers that never end.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (took, _) = until_closed(&mut slow, Duration::from_secs(10))
        .await
        .expect("a connection sending headers slowly was kept open");
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // A connection that never says anything (HTTP/1 or 2 still undecided).
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let (took, _) = until_closed(&mut silent, Duration::from_secs(10))
        .await
        .expect("a silent connection was kept open");
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, answer) = until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was kept open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // HTTP/2 (prior knowledge) that goes quiet after an answer.
    let closed = mandate_testkit::http2::answer_then_wait_for_close(
        &addr,
        "/healthz",
        Duration::from_secs(10),
    )
    .await
    .expect("an idle HTTP/2 connection was kept open");
    assert!(closed.after >= Duration::from_millis(900), "{closed:?}");
    assert!(closed.goaway, "closed without GOAWAY: {closed:?}");

    // A revocation stream outlives the timeout: it keeps receiving.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /v1/revocations/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        until_closed(&mut stream, Duration::from_millis(3500))
            .await
            .is_none(),
        "the revocation stream was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_streams_are_capped_and_a_closed_one_frees_its_place() {
    let s = TestServer::start_with(|c| {
        c.max_feed_streams = 1;
        c.feed_keepalive_secs = 1;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let open = || async {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /v1/revocations/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        (c, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let (first, head) = open().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, refused) = open().await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_streams"), "{refused}");
    // Polling still works meanwhile.
    let (st, _) = s.get("/v1/revocations?since=0", None).await;
    assert_eq!(st, 200);

    drop(first);
    // The server notices at its next heartbeat (1 s here).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, head) = open().await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed: {head}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Past `max_connections` the broker accepts nothing more: a new
/// connection waits in the listen queue and is served once another
/// closes; the gauge and the counter say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_until_one_closes() {
    let s = TestServer::start_with(|c| {
        c.max_connections = 2;
        c.unauthenticated_metrics_access = true;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut a = TcpStream::connect(&addr).await.unwrap();
    keep_alive_get(&mut a, "/healthz", None).await;
    let mut b = TcpStream::connect(&addr).await.unwrap();
    keep_alive_get(&mut b, "/healthz", None).await;
    let mut third = unserved_request(&addr, "/healthz").await;
    let metrics = keep_alive_get(&mut a, "/metrics", None).await;
    assert!(metrics.contains("mandate_connections_open 2"), "{metrics}");
    assert!(
        metrics.contains("mandate_connection_limit_reached_total 1"),
        "{metrics}"
    );
    drop(b);
    served_at_last(&mut third).await;
}

/// A body that trickles in (a byte at a time, never stalling long) must
/// still arrive whole within `body_read_timeout_secs`: 408 with the error
/// shape of its endpoint, and nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_gets_408_after_the_body_timeout() {
    let s = TestServer::start_with(|c| c.body_read_timeout_secs = 1).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let admin = format!("authorization: Bearer {}\r\n", s.root);
    let cases = [
        (
            "/v1/agents",
            "application/json",
            admin.as_str(),
            r#"{"name":"trickled","owner":"platform","environment":"staging"}"#,
        ),
        (
            "/oauth/token",
            "application/x-www-form-urlencoded",
            "",
            "grant_type=client_credentials&x=yyyyyyyyyyyy",
        ),
    ];
    for (path, ct, auth, body) in cases {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: {ct}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let start = Instant::now();
        let (mut rx, tx) = c.into_split();
        let trickle = tokio::spawn(async move {
            let mut tx = tx;
            // 200 ms a byte: the whole body would take several seconds.
            for b in body.bytes() {
                if tx.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if String::from_utf8_lossy(&got).contains("}") {
                    break;
                }
            }
        })
        .await;
        trickle.abort();
        assert!(answer.is_ok(), "{path}: no answer to a trickling body");
        let took = start.elapsed();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.contains("body_read_timeout_secs"), "{path}: {text}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{path}: {took:?}"
        );
    }
    // Nothing was applied.
    let (status, _) = s.get("/v1/agents/trickled", Some(&s.root)).await;
    assert_eq!(status, 404);
}

/// A graceful stop ends open revocation streams at once, so it is not held
/// for its whole grace period (5 s) by every proxy that follows the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_revocation_streams_at_once() {
    let mut s = TestServer::start_with(|c| c.feed_keepalive_secs = 60).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /v1/revocations/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    s.stop().await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the stop waited {took:?} for the stream"
    );
    let (_, rest) = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the stream was left open");
    // The response ended properly (the last chunk), not cut mid-stream.
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
}
