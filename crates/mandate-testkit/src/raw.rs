//! HTTP/1.1 by hand over a raw TCP connection, for connection tests that
//! must control exactly when a connection opens, speaks and closes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive GET on `conn` (with a bearer token if given); requires
/// a 200 and returns its body.
pub async fn keep_alive_get(conn: &mut TcpStream, path: &str, bearer: Option<&str>) -> String {
    let auth = bearer.map_or(String::new(), |b| format!("authorization: Bearer {b}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed mid-answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a sized answer");
        if body.len() >= len {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            return body.to_owned();
        }
    }
}

/// Connect to `addr` and send a GET of `path` that the server, at its
/// connection limit, must not read: no answer within half a second.
pub async fn unserved_request(addr: &str, path: &str) -> TcpStream {
    // The kernel completes the handshake; nobody reads the request.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(early.is_err(), "served past max_connections");
    c
}

/// The answer to [`unserved_request`] arrives (within 5 s) and is a 200.
pub async fn served_at_last(c: &mut TcpStream) {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
