//! The broker's side of the proxy protocol against `mandate_wire`, the
//! types the proxy reads it with: each answer, fetched over HTTP from a
//! real broker, parses into its wire type and serialises back to the very
//! same bytes, so no field the broker sends is lost or renamed on the
//! proxy's side; and a batch the proxy would send is taken.

use mandate_testkit::serde_json::json;
use mandate_testkit::*;
use mandate_wire::{
    Accepted, Batch, CatalogDoc, Revocation, RevocationKind, RevocationPage, SecretValue, Stage,
    ToolCall,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

const VALUE: &str = "ghp_WireTestUpstreamKey_\"quoted\"_0123";

/// `raw` parses as `T`, which serialises back to `raw` byte for byte.
fn same_bytes<T: Serialize + DeserializeOwned>(raw: &str) -> T {
    let t: T = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(serde_json::to_string(&t).unwrap(), raw);
    t
}

async fn get(s: &TestServer, path: &str, bearer: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(s.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.text().await.unwrap()
}

/// A broker with a proxied tool (upstream, routes, header injection), a
/// secret for it and one for a tool without upstream (expiring).
async fn broker() -> TestServer {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "tickets", "audience": "https://tickets.example", "owner": "platform",
               "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
               "actions": ["tickets:read"], "description": "Tickets",
               "upstream": "https://tickets.example/api",
               "routes": [{"method": "GET", "path": "/t/{id}", "action": "tickets:read", "resource": "ticket/{id}"},
                          {"method": "*", "path": "/t", "action": "tickets:read"}],
               "delivery": {"mode": "inject", "inject": {"kind": "header", "name": "X-Api-Key", "prefix": "Key "}}}),
    )
    .await;
    for (name, tool, extra) in [
        ("tickets-key", "tickets", json!({})),
        ("gh-token", "github", json!({"expires_at": now() + 3600})),
    ] {
        let mut body = json!({"name": name, "tool": tool, "class": "tool", "owner": "platform",
                              "value": VALUE});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.admin_post("/v1/secrets", body).await;
    }
    s
}

#[tokio::test]
async fn the_catalog_and_a_secret_parse_into_the_wire_types_with_no_field_lost() {
    let s = broker().await;
    let proxy = s.admin_token(&["proxy"]).await;

    let raw = get(&s, "/v1/proxy/catalog", Some(&proxy)).await;
    let doc: CatalogDoc = same_bytes(&raw);
    assert_eq!(doc.proxy_protocol, mandate_wire::PROXY_PROTOCOL);
    assert_eq!(doc.tools.len(), 4);
    let tickets = doc.tools.iter().find(|t| t.name.as_str() == "tickets");
    assert_eq!(tickets.unwrap().routes.len(), 2);
    let mut versions: Vec<(&str, u32, bool)> = doc
        .secrets
        .iter()
        .map(|m| (m.tool.as_str(), m.version, m.expires_at.is_some()))
        .collect();
    versions.sort();
    assert_eq!(versions, [("github", 1, true), ("tickets", 1, false)]);
    assert!(!doc.policy.policies.is_empty() && !doc.policy.hash.is_empty());
    assert!(!raw.contains("WireTest"), "no secret value in the catalog");

    let raw = get(&s, "/v1/proxy/secrets/tickets", Some(&proxy)).await;
    let secret: SecretValue = same_bytes(&raw);
    assert_eq!(
        (secret.name.as_str(), secret.tool.as_str(), secret.version),
        ("tickets-key", "tickets", 1)
    );
    assert_eq!(secret.value.expose_secret(), VALUE);
}

#[tokio::test]
async fn a_batch_the_proxy_sends_is_taken_and_answered_in_the_wire_shape() {
    let s = broker().await;
    let proxy = s.admin_token(&["proxy"]).await;
    let record = |id: &str, seq: u64, stage: Stage| ToolCall {
        id: id.into(),
        stage,
        seq,
        opened_seq: (stage == Stage::Call).then_some(seq - 1),
        at: 1_700_000_000_000,
        agent: Some("bot".into()),
        task: None,
        tool: Some("tickets".into()),
        action: Some("tickets:read".into()),
        jti: None,
        client: Some("127.0.0.1".into()),
        chain: vec![],
        misuse: None,
        mode: Default::default(),
        bytes_up: None,
        method: "GET".into(),
        path: "/t/7".into(),
        status: (stage != Stage::Invoked).then_some(200),
        latency_ms: 3,
        bytes: 10,
        decision: "allow".into(),
        reasons: vec!["allow-in-scope".into()],
        breakglass: false,
    };
    let batch = Batch {
        source: "0123abcd".into(),
        events: vec![
            record("a", 1, Stage::Invoked),
            record("a", 2, Stage::Completed),
            record("b", 4, Stage::Call),
        ],
    };
    let http = reqwest::Client::new();
    for want in [(3, 0), (0, 3)] {
        let resp = http
            .post(s.url("/v1/audit/tool-invocations"))
            .bearer_auth(&proxy)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let a: Accepted = same_bytes(&resp.text().await.unwrap());
        assert_eq!((a.accepted, a.duplicates), want, "resent: all duplicates");
    }
}

#[tokio::test]
async fn feed_pages_and_stream_entries_parse_into_the_wire_types() {
    let s = broker().await;
    let session = s.session("bot").await;
    let (task, _) = s.read_grant(&session).await;
    s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({}))
        .await;

    let raw = get(&s, "/v1/revocations?since=0", None).await;
    let page: RevocationPage = same_bytes(&raw);
    let entry = page.entries.iter().find(|r| r.id == task).expect("entry");
    assert_eq!(entry.kind, RevocationKind::Task);
    assert_eq!(page.next, page.entries.last().unwrap().seq);
    assert!(!page.more);

    // The stream's backlog: each `revocation` event's data is one entry.
    let mut resp = reqwest::Client::new()
        .get(s.url("/v1/revocations/stream?since=0"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains(&format!("\"id\":\"{task}\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("the backlog arrives")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let event = text
        .split("\n\n")
        .find(|e| e.contains(&task))
        .unwrap()
        .to_owned();
    let lines: Vec<&str> = event.lines().collect();
    assert!(
        lines.contains(&format!("event: {}", mandate_wire::REVOCATION_EVENT).as_str()),
        "{event}"
    );
    let data = lines.iter().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let streamed: Revocation = same_bytes(data);
    assert_eq!(
        &streamed, entry,
        "the stream and the page carry the same entry"
    );
}
