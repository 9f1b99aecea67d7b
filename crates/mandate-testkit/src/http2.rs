//! A real HTTP/2 client (prior knowledge, no TLS) for connection tests.

use std::time::{Duration, Instant};

/// How the server ended an HTTP/2 connection.
#[derive(Debug)]
pub struct Closed {
    /// After the answer.
    pub after: Duration,
    /// Politely, with GOAWAY: the connection ended without an error.
    pub goaway: bool,
}

/// Open an HTTP/2 connection to `addr`, GET `path` and require a 200;
/// then say nothing and return how the server closed the connection
/// (None: still open after `limit`).
pub async fn answer_then_wait_for_close(addr: &str, path: &str, limit: Duration) -> Option<Closed> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let answered = send.send_request(req).await.expect("an answer");
    assert_eq!(answered.status(), http::StatusCode::OK);
    let start = Instant::now();
    // The driver ends when the server closes the connection: with an
    // error unless the server said GOAWAY first.
    let ended = tokio::time::timeout(limit, driver).await.ok()?;
    Some(Closed {
        after: start.elapsed(),
        goaway: matches!(ended, Ok(Ok(()))),
    })
}
