//! Signed checkpoints of the audit head: on request, and written into the
//! chain every `audit_checkpoint_secs` when something new was logged.

use mandate_testkit::serde_json::Value;
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

fn checkpoints(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "audit.checkpoint")
        .collect()
}

#[tokio::test]
async fn the_broker_signs_its_head_into_the_chain_when_there_is_news() {
    let s = TestServer::start_with(|c| c.audit_checkpoint_secs = 1).await;
    s.seed().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = s.events().await;
        if !checkpoints(&events).is_empty() {
            break events;
        }
        assert!(Instant::now() < deadline, "no checkpoint was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (st, jwks) = s.get("/.well-known/jwks.json", None).await;
    assert_eq!(st, StatusCode::OK);
    let keys: mandate_token::JwkSet = serde_json::from_value(jwks).unwrap();
    let cp = checkpoints(&events)[0];
    assert_eq!(cp["actor"], "system");
    let detail: Value = serde_json::from_str(cp["detail"].as_str().unwrap()).unwrap();
    let claims =
        mandate_token::checkpoint::verify(detail["checkpoint"].as_str().unwrap(), &keys).unwrap();
    let signed = events
        .iter()
        .find(|e| e["seq"].as_u64() == Some(claims.seq))
        .expect("the checkpoint names a record in the chain");
    assert_eq!(signed["hash"].as_str(), Some(claims.hash.as_str()));
    assert!(claims.seq < cp["seq"].as_u64().unwrap());
    assert_eq!(detail["seq"].as_u64(), Some(claims.seq));

    // Nothing new since: no further checkpoint.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(checkpoints(&s.events().await).len(), 1);
    // Something new: another one.
    s.admin_token(&["agents"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while checkpoints(&s.events().await).len() < 2 {
        assert!(Instant::now() < deadline, "no checkpoint after new records");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
