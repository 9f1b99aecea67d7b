//! The PostgreSQL engine against a real server (a throwaway cluster where
//! only the test superuser is trusted, so every issued login must bring
//! its password): what the login may and may not do, that revocation ends
//! its sessions and leaves nothing, that hostile values cannot inject SQL,
//! and that a failed issue leaves no half-made role.

use mandate_core::{DbRole, TaskId};
use mandate_engine::postgres::PostgresEngine;
use mandate_engine::{Engine, EngineError, IssueRequest};
use mandate_testkit::postgres::{database, psql};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn role(name: &str, groups: &[&str]) -> DbRole {
    DbRole {
        name: name.into(),
        member_of: groups.iter().map(|g| g.to_string()).collect(),
        creation: vec![],
        revocation: vec![],
    }
}

/// A database with a table, a read-only group and an engine for it.
fn setup(hint: &str) -> Option<(String, PostgresEngine)> {
    let url = database(hint)?;
    // Roles are the cluster's, not the database's: one group per test.
    let group = format!("read_{hint}");
    psql(
        &url,
        &format!(
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1);
             CREATE ROLE {group} NOLOGIN; GRANT SELECT ON orders TO {group};"
        ),
    );
    let engine = PostgresEngine::new(
        &SecretString::from(url.clone()),
        &[
            role("readonly", &[&group]),
            role("broken", &["no_such_group"]),
        ],
        None,
    )
    .unwrap();
    Some((url, engine))
}

fn roles(url: &str, login: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
            login.replace('\'', "''")
        ),
    )
}

async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test]
async fn a_login_does_what_its_role_grants_until_it_is_revoked() {
    let Some((url, engine)) = setup("engine_life") else {
        return;
    };
    let task = TaskId::parse("task_0123456789abcdef0123456789abcdef").unwrap();
    let login = engine.login_name(&task, [7; 8]);
    assert_eq!(
        login,
        "mnd_0123456789abcdef0123456789abcdef_0707070707070707"
    );
    let deadline = now() + 600;
    let issued = engine
        .issue(&IssueRequest {
            login: &login,
            role: "readonly",
            valid_until: deadline,
            prepared: None,
        })
        .await
        .unwrap();
    assert_eq!(issued.login, login);
    let valid = psql(
        &url,
        &format!(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{login}'"
        ),
    );
    assert_eq!(valid, deadline.to_string(), "VALID UNTIL is the deadline");

    let client = connect(issued.url.expose_secret()).await.unwrap();
    let n: i32 = client
        .query_one("SELECT id FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let denied = client
        .execute("INSERT INTO orders VALUES (2)", &[])
        .await
        .unwrap_err();
    let denied = format!("{denied:?}");
    assert!(denied.contains("permission denied"), "{denied}");
    // The password is checked (scram): another one is refused.
    let wrong = issued
        .url
        .expose_secret()
        .replace(issued.password.expose_secret(), "wrong");
    assert!(connect(&wrong).await.is_err());

    assert!(!engine.verify_gone(&login).await.unwrap());
    engine.revoke(&login, "readonly").await.unwrap();
    assert!(engine.verify_gone(&login).await.unwrap());
    assert_eq!(roles(&url, &login), "0");
    // Its open session was ended, and it cannot come back.
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "session still open"
    );
    let again = format!(
        "{:?}",
        connect(issued.url.expose_secret()).await.unwrap_err()
    );
    assert!(
        again.to_string().contains("password authentication failed")
            || again.to_string().contains("does not exist"),
        "{again}"
    );
    // Revoking what is gone is done.
    engine.revoke(&login, "readonly").await.unwrap();
}

#[tokio::test]
async fn hostile_values_stay_values() {
    let Some((url, engine)) = setup("engine_hostile") else {
        return;
    };
    for login in [
        "x\"; DROP TABLE orders; --",
        "y'; DROP TABLE orders; --",
        "z\\'; DROP TABLE orders; --",
    ] {
        let issued = engine
            .issue(&IssueRequest {
                login,
                role: "readonly",
                valid_until: now() + 60,
                prepared: None,
            })
            .await
            .unwrap();
        assert_eq!(roles(&url, login), "1", "made under exactly that name");
        drop(issued);
        engine.revoke(login, "readonly").await.unwrap();
        assert_eq!(roles(&url, login), "0");
    }
    assert_eq!(
        psql(&url, "SELECT count(*) FROM orders"),
        "1",
        "the table is untouched"
    );
    // A template naming anything but the four placeholders is refused up front.
    let bad = DbRole {
        creation: vec!["CREATE ROLE {{name}}; COMMENT ON ROLE {{name}} IS {{intent}}".into()],
        ..role("evil", &[])
    };
    let err = PostgresEngine::new(&SecretString::from(url.clone()), &[bad], None)
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::Template(_)), "{err}");
    assert!(matches!(
        engine
            .issue(&IssueRequest {
                login: "n",
                role: "admin",
                valid_until: now() + 60,
                prepared: None,
            })
            .await,
        Err(EngineError::UnknownRole(_))
    ));
}

#[tokio::test]
async fn a_failed_or_unreachable_issue_leaves_no_role() {
    let Some((url, engine)) = setup("engine_fail") else {
        return;
    };
    // The second statement (GRANT of a group that does not exist) fails:
    // the CREATE ROLE before it is rolled back with it.
    let err = engine
        .issue(&IssueRequest {
            login: "half_made",
            role: "broken",
            valid_until: now() + 60,
            prepared: None,
        })
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::Refused(ref m) if m.contains("no_such_group")),
        "{err}"
    );
    assert_eq!(roles(&url, "half_made"), "0");
    // Nobody listening: unreachable, with no secret in the message.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = PostgresEngine::new(
        &SecretString::from(format!("postgres://admin:s3cret@127.0.0.1:{port}/x")),
        &[role("readonly", &[])],
        None,
    )
    .unwrap();
    let err = down
        .issue(&IssueRequest {
            login: "nobody",
            role: "readonly",
            valid_until: now() + 60,
            prepared: None,
        })
        .await
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::Unreachable(_)), "{err}");
    assert!(!err.to_string().contains("s3cret"));
    assert!(down.health().await.is_err());
    engine.health().await.unwrap();
}

#[tokio::test]
async fn a_burst_shares_a_bounded_set_of_admin_connections() {
    let Some((url, engine)) = setup("engine_burst") else {
        return;
    };
    let task = TaskId::parse("task_00000000000000000000000000000b57").unwrap();
    let logins: Vec<String> = (0..40u8)
        .map(|i| engine.login_name(&task, [i; 8]))
        .collect();
    let asks: Vec<IssueRequest> = logins
        .iter()
        .map(|login| IssueRequest {
            login,
            role: "readonly",
            valid_until: now() + 60,
            prepared: None,
        })
        .collect();
    let issued = futures::future::join_all(asks.iter().map(|a| engine.issue(a))).await;
    assert!(issued.iter().all(Result::is_ok), "every issue succeeds");
    let sessions: usize = psql(
        &url,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .parse()
    .unwrap();
    assert!(
        (1..=mandate_engine::postgres::MAX_OPEN).contains(&sessions),
        "{sessions} admin connections for 40 concurrent issues"
    );
    futures::future::join_all(logins.iter().map(|l| engine.revoke(l, "readonly"))).await;
    for l in &logins {
        assert_eq!(roles(&url, l), "0");
    }
}

#[tokio::test]
async fn operator_statements_may_end_in_comments() {
    let Some((url, _)) = setup("engine_comments") else {
        return;
    };
    let custom = DbRole {
        creation: vec![
            "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{valid_until}} -- a login".into(),
            "GRANT read_engine_comments TO {{name}} -- its group".into(),
        ],
        revocation: vec![
            "ALTER ROLE {{name}} NOLOGIN -- shut the door first".into(),
            "DROP OWNED BY {{name}} -- what it made".into(),
            "DROP ROLE {{name}} -- and the login".into(),
        ],
        ..role("commented", &[])
    };
    let engine = PostgresEngine::new(&SecretString::from(url.clone()), &[custom], None).unwrap();
    let issued = engine
        .issue(&IssueRequest {
            login: "commented_login",
            role: "commented",
            valid_until: now() + 60,
            prepared: None,
        })
        .await
        .unwrap();
    let client = connect(issued.url.expose_secret()).await.unwrap();
    assert!(client.query_one("SELECT id FROM orders", &[]).await.is_ok());
    drop(client);
    engine.revoke("commented_login", "commented").await.unwrap();
    assert_eq!(roles(&url, "commented_login"), "0");
}

#[tokio::test]
async fn the_server_gets_a_verifier_it_would_have_made_itself_never_the_password() {
    let Some((url, engine)) = setup("engine_scram") else {
        return;
    };
    // PostgreSQL derives a verifier from a plaintext password; ours, with
    // the salt it chose, must be the same string.
    psql(
        &url,
        "CREATE ROLE scram_probe LOGIN PASSWORD 'pencil-and-paper'",
    );
    let theirs = psql(
        &url,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'",
    );
    let salt_b64 = theirs
        .strip_prefix("SCRAM-SHA-256$4096:")
        .and_then(|r| r.split('$').next())
        .unwrap_or_else(|| panic!("not a SCRAM verifier: {theirs}"));
    use base64::Engine as _;
    let salt: [u8; 16] = base64::engine::general_purpose::STANDARD
        .decode(salt_b64)
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        mandate_engine::scram::verifier("pencil-and-paper", &salt),
        theirs
    );
    psql(&url, "DROP ROLE scram_probe");

    // An issued login: stored as a verifier, and its password works.
    let issued = engine
        .issue(&IssueRequest {
            login: "scram_login",
            role: "readonly",
            valid_until: now() + 60,
            prepared: None,
        })
        .await
        .unwrap();
    let stored = psql(
        &url,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_login'",
    );
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains(issued.password.expose_secret()));
    assert!(connect(issued.url.expose_secret()).await.is_ok());
    engine.revoke("scram_login", "readonly").await.unwrap();
}
