//! Nothing the proxy logs, at any level, carries the upstream secret or
//! the agent's token. (Its own binary: the log capture is process-wide.)

use crate::support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use support::{SECRET, World};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_hold_the_secret_or_the_token() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug,mandate_proxy=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let w = World::new().await;
    for tool in ["echo", "echo-basic", "echo-query", "echo-down"] {
        let (_, token) = w.grant(tool, &["items:read"]).await;
        w.call("GET", &format!("/{tool}/items/1?x=1"), Some(&token))
            .await;
        w.call("GET", &format!("/{tool}/gzip"), Some(&token)).await;
        w.call("POST", &format!("/{tool}/items"), Some(&token))
            .await;
    }
    let (_, token) = w.grant("echo", &["items:read"]).await;
    w.call("GET", "/echo/items/2", Some(&token)).await;
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("call"), "the capture saw the proxy's logs");
    let enc: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{SECRET}"))
    };
    for needle in [SECRET, enc.as_str(), basic.as_str(), token.as_str()] {
        assert!(!logs.contains(needle), "a log line holds a secret or token");
    }
}
