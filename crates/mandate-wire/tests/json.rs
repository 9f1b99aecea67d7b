//! The JSON of every wire type, pinned: a literal document as the other
//! side sends it parses into the type and serialises back to the very
//! same bytes (field names, order, nulls and absent fields alike).

use mandate_wire::batch::{MAX_FIELD, MAX_PATH, MAX_REASON, MAX_REASONS};
use mandate_wire::{
    Accepted, Batch, CatalogDoc, Mode, PROXY_PROTOCOL, Revocation, RevocationKind, RevocationPage,
    SecretValue, Stage, ToolCall,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `json` → `T` → JSON, which must be `json` again.
fn pinned<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let t: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(serde_json::to_string(&t).unwrap(), json);
    t
}

const TOOL: &str = concat!(
    r#"{"name":"github","audience":"https://api.github.com","owner":"platform","#,
    r#""environment":"production","sensitivity":"confidential","max_ttl_secs":900,"#,
    r#""actions":["issues:read","issues:write"],"description":"GitHub","created_at":1700000000,"#,
    r#""upstream":"https://api.github.com","#,
    r#""routes":[{"method":"GET","path":"/repos/{owner}/{repo}/issues","action":"issues:read","resource":"repo/{owner}/{repo}"},"#,
    r#"{"method":"*","path":"/issues","action":"issues:write"}],"#,
    r#""delivery":{"mode":"inject","inject":{"kind":"header","name":"X-Api-Key","prefix":"Token "}}}"#
);

#[test]
fn the_catalog() {
    let json = format!(
        concat!(
            r#"{{"issuer":"https://broker.example","proxy_protocol":3,"tools":[{}],"#,
            r#""secrets":[{{"name":"gh-token","tool":"github","version":2,"expires_at":null}},"#,
            r#"{{"name":"jira-key","tool":"jira","version":1,"expires_at":1800000000}}],"#,
            r#""policy":{{"hash":"9f86d0","schema":"entity Agent;","#,
            r#""policies":[{{"file":"default.cedar","text":"permit(principal, action, resource);"}}]}}}}"#
        ),
        TOOL
    );
    let doc: CatalogDoc = pinned(&json);
    assert_eq!(doc.proxy_protocol, 3);
    assert_eq!(doc.tools[0].routes.len(), 2);
    assert_eq!(doc.secrets[1].expires_at, Some(1_800_000_000));
    assert_eq!(doc.policy.policies[0].file, "default.cedar");
}

#[test]
fn a_catalog_from_an_older_or_newer_broker() {
    // Before the protocol number existed: protocol 1.
    let old = r#"{"issuer":"https://b","tools":[],"secrets":[],"policy":{"hash":"h","schema":"","policies":[]}}"#;
    let old: CatalogDoc = serde_json::from_str(old).unwrap();
    assert_eq!(old.proxy_protocol, 1);
    assert!(PROXY_PROTOCOL > old.proxy_protocol);
    // A newer broker's extra fields are ignored, not refused.
    let newer = r#"{"issuer":"https://b","proxy_protocol":9,"tools":[],"secrets":[],"policy":{"hash":"h","schema":"","policies":[],"x":1},"y":[]}"#;
    let newer: CatalogDoc = serde_json::from_str(newer).unwrap();
    assert_eq!(newer.proxy_protocol, 9);
}

#[test]
fn a_delivered_secret_and_its_debug() {
    let json =
        r#"{"name":"gh-token","tool":"github","version":2,"value":"s3cr3t \"quoted\" value"}"#;
    let s: SecretValue = pinned(json);
    assert_eq!(s.value.expose_secret(), "s3cr3t \"quoted\" value");
    let debug = format!("{s:?}");
    assert_eq!(
        debug,
        r#"SecretValue { name: "gh-token", tool: "github", version: 2, value: [redacted] }"#
    );
    assert!(!format!("{s:#?}").contains("s3cr3t"));
    assert!(serde_json::from_str::<SecretValue>(r#"{"name":"n","tool":"t","version":1}"#).is_err());
}

/// An allowed call whose two records were in one batch (merged into a
/// `call`, with the agent's address), one still open, a denied one from a
/// proxy that sent no `client`, and a delegated token's refusal that is
/// evidence of relay; a tunnel through the egress listener, opened and
/// closed within the batch.
const BATCH: &str = concat!(
    r#"{"source":"0123abcd","events":["#,
    r#"{"id":"req_1","stage":"call","seq":40,"opened_seq":12,"at":1700000000123,"agent":"bot","task":"task_01","tool":"github","action":"issues:read","jti":"j1","client":"127.0.0.1","method":"GET","path":"/repos/a/b/issues","status":200,"latency_ms":31,"bytes":5120,"decision":"allow","reasons":["allow-in-scope"]},"#,
    r#"{"id":"req_2","stage":"invoked","seq":41,"at":1700000000200,"agent":"bot","task":"task_01","tool":"github","action":"issues:read","jti":"j1","method":"GET","path":"/x","status":null,"latency_ms":0,"bytes":0,"decision":"allow","reasons":[]},"#,
    r#"{"id":"req_3","stage":"invoked","seq":42,"at":1700000000300,"agent":null,"task":null,"tool":null,"action":null,"jti":null,"method":"DELETE","path":"/","status":401,"latency_ms":1,"bytes":0,"decision":"deny","reasons":["invalid_token"]},"#,
    r#"{"id":"req_4","stage":"invoked","seq":43,"at":1700000000400,"agent":"helper","task":"task_02","tool":"github","action":null,"jti":"j2","client":"10.0.0.9","chain":["lead"],"misuse":{"check":"dpop_other_key","bound_jkt":"b0und","presented_jkt":"0ther","proof_jti":"p1"},"method":"GET","path":"/x","status":401,"latency_ms":1,"bytes":0,"decision":"deny","reasons":["invalid_dpop_proof"]},"#,
    r#"{"id":"req_5","stage":"call","seq":45,"opened_seq":44,"at":1700000000500,"agent":"bot","task":"task_01","tool":"vault","action":null,"jti":"j1","client":"127.0.0.1","mode":"egress","method":"CONNECT","path":"vault.example:443","status":200,"latency_ms":9000,"bytes":40960,"bytes_up":1024,"decision":"allow","reasons":["egress to a host of tool `vault`"]}"#,
    r#"]}"#
);

#[test]
fn an_audit_batch() {
    let b: Batch = pinned(BATCH);
    let shape: Vec<(Stage, Option<u64>, Option<&str>)> = b
        .events
        .iter()
        .map(|e| (e.stage, e.opened_seq, e.client.as_deref()))
        .collect();
    assert_eq!(
        shape,
        [
            (Stage::Call, Some(12), Some("127.0.0.1")),
            (Stage::Invoked, None, None),
            (Stage::Invoked, None, None),
            (Stage::Invoked, None, Some("10.0.0.9")),
            (Stage::Call, Some(44), Some("127.0.0.1")),
        ]
    );
    let modes: Vec<Mode> = b.events.iter().map(|e| e.mode).collect();
    assert_eq!(modes[..4], [Mode::Inject; 4]);
    let tunnel = &b.events[4];
    assert_eq!(
        (tunnel.mode, tunnel.bytes, tunnel.bytes_up),
        (Mode::Egress, 40960, Some(1024))
    );
    let relayed = &b.events[3];
    assert_eq!(relayed.chain, ["lead"]);
    let m = relayed.misuse.as_ref().unwrap();
    assert_eq!(
        (m.check, m.presented_jkt.as_deref()),
        (
            mandate_wire::batch::MisuseCheck::DpopOtherKey,
            Some("0ther")
        )
    );
    // Each record as the proxy spools it, one line.
    let line = serde_json::to_string(&b.events[2]).unwrap();
    assert!(BATCH.contains(&line), "{line}");
}

#[test]
fn what_the_broker_refuses_and_what_it_still_takes() {
    let record = |extra: &str| {
        format!(
            r#"{{"id":"a","stage":"invoked","seq":1,"at":0,"method":"GET","path":"/","status":403,"latency_ms":0,"bytes":0,"decision":"deny"{extra}}}"#
        )
    };
    // Records from before `opened_seq`, `client`, and with no `reasons`
    // or null-valued fields at all, still read.
    let old: ToolCall = serde_json::from_str(&record("")).unwrap();
    assert_eq!((old.agent, old.client, old.reasons), (None, None, vec![]));
    assert_eq!(
        (old.mode, old.bytes_up),
        (Mode::Inject, None),
        "before protocol 5"
    );
    // A field the broker does not know refuses the record, and the batch.
    assert!(serde_json::from_str::<ToolCall>(&record(r#","extra":1"#)).is_err());
    let batch = r#"{"source":"s","events":[],"extra":1}"#;
    assert!(serde_json::from_str::<Batch>(batch).is_err());
    let bad_stage = record("").replace("invoked", "opened");
    assert!(serde_json::from_str::<ToolCall>(&bad_stage).is_err());
}

#[test]
fn fields_names_every_field_of_a_record() {
    let mut full: ToolCall = pinned::<Batch>(BATCH).events.remove(3);
    full.opened_seq = Some(1);
    full.mode = Mode::Egress;
    full.bytes_up = Some(1);
    let v = serde_json::to_value(&full).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut fields = ToolCall::FIELDS.to_vec();
    let mut keys = keys;
    fields.sort_unstable();
    keys.sort_unstable();
    assert_eq!(fields, keys);
}

#[test]
fn the_brokers_answer_to_a_batch() {
    let a: Accepted = pinned(r#"{"accepted":998,"duplicates":2}"#);
    assert_eq!((a.accepted, a.duplicates), (998, 2));
}

#[test]
fn a_feed_page_and_a_stream_entry() {
    let json = concat!(
        r#"{"entries":[{"seq":7,"kind":"task","id":"task_01","revoked_at":1700000000,"expires_at":1700000900},"#,
        r#"{"seq":8,"kind":"key","id":"k-2024","revoked_at":1700000001,"expires_at":1700086400}],"#,
        r#""next":8,"more":false}"#
    );
    let page: RevocationPage = pinned(json);
    assert_eq!(page.entries[1].kind, RevocationKind::Key);
    // A stream event's data is one entry, as in the page.
    let entry: Revocation = pinned(
        r#"{"seq":9,"kind":"agent","id":"bot","revoked_at":1700000002,"expires_at":1700003600}"#,
    );
    assert_eq!(entry.kind, RevocationKind::Agent);
    // Brokers from before paging send no `more`.
    let old: RevocationPage = serde_json::from_str(r#"{"entries":[],"next":0}"#).unwrap();
    assert!(!old.more);
}

#[test]
fn records_are_cut_to_the_brokers_limits() {
    let mut c = serde_json::from_str::<Batch>(BATCH).unwrap().events[1].clone();
    c.agent = Some("a".repeat(300));
    c.method = "M".repeat(40);
    c.path = "/é".repeat(2000);
    c.reasons = vec!["r".repeat(600); 20];
    c.fit();
    assert!(c.path.len() <= MAX_PATH && c.path.is_char_boundary(c.path.len()));
    assert_eq!(c.agent.as_deref().map(str::len), Some(MAX_FIELD));
    assert_eq!(c.method.len(), 16);
    assert_eq!(c.reasons.len(), MAX_REASONS);
    assert!(c.reasons.iter().all(|r| r.len() == MAX_REASON));
    assert_eq!(c.task.as_deref(), Some("task_01"), "short fields are kept");
}
