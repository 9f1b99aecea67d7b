//! The PostgreSQL engine over TLS. Its own test file, so its own cluster:
//! turning TLS on here changes no other test's server.

use mandate_core::{DbRole, TaskId};
use mandate_engine::postgres::{APPLICATION_NAME, PostgresEngine};
use mandate_engine::{Engine, EngineError, IssueRequest};
use mandate_testkit::postgres::{database, psql};
use mandate_testkit::postgres_tls::enable_tls;
use secrecy::{ExposeSecret, SecretString};

fn readonly() -> Vec<DbRole> {
    vec![DbRole {
        name: "readonly".into(),
        member_of: vec![],
        creation: vec![],
        revocation: vec![],
    }]
}

fn login(n: u8) -> String {
    let task = TaskId::parse(&format!("task_{}", "ab".repeat(16))).unwrap();
    mandate_engine::login_for(&task, [n; 8])
}

async fn issue(engine: &PostgresEngine, login: &str) -> Result<String, EngineError> {
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    let issued = engine
        .issue(&IssueRequest {
            login,
            role: "readonly",
            valid_until: deadline,
            prepared: None,
        })
        .await?;
    Ok(issued.url.expose_secret().to_owned())
}

/// The engine's admin connections are encrypted and the server verified
/// against the CA the tool names; without that CA, or with `sslmode`
/// left at its default, an unverifiable server is refused, never used in
/// clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_verifies_the_server_and_talks_to_it_over_tls() {
    let Some(url) = database("engine_tls") else {
        return;
    };
    let tls = enable_tls(&url);
    let required = SecretString::from(format!("{url}?sslmode=require"));

    let engine = PostgresEngine::new(&required, &readonly(), Some(&tls.server_pem)).unwrap();
    let made = login(1);
    let dsn = issue(&engine, &made).await.unwrap();
    assert!(dsn.ends_with("?sslmode=require"), "the login insists too");
    let on_tls = psql(
        &url,
        &format!(
            "SELECT bool_and(s.ssl)::text || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = '{APPLICATION_NAME}'"
        ),
    );
    assert_eq!(on_tls, "true1", "the engine's one admin connection, on TLS");
    engine.revoke(&made, "readonly").await.unwrap();
    assert!(engine.verify_gone(&made).await.unwrap());

    // A server nobody vouched for: refused with sslmode=require and with
    // the default alike, and nothing made.
    for dsn in [required.clone(), SecretString::from(url.clone())] {
        let blind = PostgresEngine::new(&dsn, &readonly(), None).unwrap();
        let refused = login(2);
        match issue(&blind, &refused).await {
            Err(EngineError::Unreachable(m)) => {
                assert!(
                    m.contains("certificate") || m.contains("UnknownIssuer"),
                    "{m}"
                )
            }
            other => panic!("expected the handshake to fail: {:?}", other.map(|_| ())),
        }
        assert_eq!(
            psql(
                &url,
                &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{refused}'")
            ),
            "0"
        );
    }

    let bad = PostgresEngine::new(
        &required,
        &readonly(),
        Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    );
    match bad {
        Err(EngineError::Refused(m)) => {
            assert!(m.starts_with("unusable database CA certificate"), "{m}")
        }
        other => panic!("a broken CA is refused: {:?}", other.map(|_| ())),
    }
}
