//! The broker on PostgreSQL, over HTTP: the walkthrough, a restart that
//! keeps every state, revocation, a secret that is nowhere in the database
//! in clear, and a tampered audit row that verification names. A real
//! server (a throwaway cluster); skipped loudly where none can be started,
//! a failure when `MANDATE_REQUIRE_POSTGRES=1`.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;

const VALUE: &str = "ghp_PostgresSecretUpstreamKey_0123456789";

fn chain(events: Vec<Value>) -> Result<u64, mandate_audit::ChainBreak> {
    mandate_audit::verify_chain(
        events
            .into_iter()
            .map(|e| serde_json::from_value(e).unwrap()),
    )
}

async fn on_postgres(url: &str) -> TestServer {
    let url = url.to_owned();
    TestServer::start_with(move |c| c.database_url = Some(url.clone().into())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_restart_revocation_secrets_and_tamper_evidence_on_postgres() {
    let Some(url) = postgres::database("server_walkthrough") else {
        return;
    };
    let s = on_postgres(&url).await;
    s.seed().await;
    let session = s.session("bot").await;
    let (task, token) = s.read_grant(&session).await;
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:x").await["decision"],
        "allow"
    );
    let (_, v) = s
        .exchange(&session, &task, "https://api.github.com", &[])
        .await;
    let revoked = v["access_token"].as_str().unwrap().to_owned();
    let (st, _) = s
        .form("/oauth/revoke", Some(&session), &[("token", &revoked)])
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        s.authorize(&revoked, "issues:read", "repo:x").await["decision"],
        "deny"
    );
    let (st, v) = s
        .post(
            "/v1/secrets",
            Some(&s.root),
            &json!({"name": "gh-token", "tool": "github", "class": "tool", "owner": "platform",
                    "value": VALUE}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // State is in PostgreSQL, not in a SQLite file beside the keys.
    assert!(!s.data_dir.join("mandate.db").exists());
    assert_eq!(postgres::psql(&url, "SELECT count(*) FROM agents"), "1");

    let s = s.restart().await;
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:x").await["decision"],
        "allow",
        "grant survives"
    );
    assert_eq!(
        s.authorize(&revoked, "issues:read", "repo:x").await["decision"],
        "deny",
        "revocation survives"
    );
    let (_, one) = s.get("/v1/secrets/gh-token", Some(&s.root)).await;
    assert_eq!(one["version"], 1, "{one}");

    // Revoking the task kills its remaining token on the next request.
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{task}/revoke"),
            Some(&s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        s.authorize(&token, "issues:read", "repo:x").await["decision"],
        "deny"
    );
    let (_, feed) = s.get("/v1/revocations", None).await;
    assert!(
        feed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task" && e["id"] == task.as_str()),
        "{feed}"
    );

    // The sealed value is nowhere in the database in clear.
    let dump = std::process::Command::new("pg_dump")
        .args([url.as_str(), "--data-only"])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dump.stdout.len() > 1000, "the dump has the data");
    assert!(
        !contains(&dump.stdout, VALUE),
        "secret in clear in PostgreSQL"
    );

    let events = s.events().await;
    let n = chain(events.clone()).expect("chain intact across restart");
    assert_eq!(n as usize, events.len());
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in [
        "grant.minted",
        "token.revoked",
        "task.revoked",
        "secret.stored",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // One edited row: verification names it.
    postgres::psql(&url, "UPDATE events SET decision = 'allow' WHERE seq = 5");
    let err = chain(s.events().await).unwrap_err();
    assert_eq!(err.seq, 5, "{}", err.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_database_refuses_to_start() {
    let Some(url) = postgres::database("server_second_broker") else {
        return;
    };
    let _first = on_postgres(&url).await;
    let dir = tempfile::tempdir().unwrap();
    // This one reads its URL from a file, as `database_url_file` says.
    let url_file = dir.path().join("pg-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let second = mandate_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        database_url_file: Some(url_file),
        ..Default::default()
    };
    let err = match mandate_server::start(second.validate().unwrap()).await {
        Ok(_) => panic!("a second broker started on the same database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("writer lock"), "{err}");
    let password_free = !err.contains("postgres://");
    assert!(password_free, "the URL is not repeated: {err}");
}

#[tokio::test]
async fn a_database_url_that_is_not_postgres_is_refused_by_name() {
    let bad = mandate_server::Config {
        database_url: Some("mysql://root:hunter2@db/mandate".to_owned().into()),
        ..Default::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.starts_with("MANDATE_DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-url");
    std::fs::write(&file, "mysql://root:hunter2@db/mandate").unwrap();
    let from_file = mandate_server::Config {
        database_url_file: Some(file),
        ..Default::default()
    };
    let err = from_file.database_url().unwrap_err().to_string();
    assert!(err.starts_with("database_url_file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_database_ca_file_without_a_certificate_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cfg = mandate_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        database_url: Some("postgres://mandate@127.0.0.1:1/mandate".to_owned().into()),
        database_ca_file: Some(ca),
        ..Default::default()
    };
    let err = match mandate_server::start(cfg.validate().unwrap()).await {
        Ok(_) => panic!("started with a CA file holding no certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("database_ca_file"), "{err}");
}
