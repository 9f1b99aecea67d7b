//! `mandate server` on PostgreSQL as a real process: killed with SIGKILL in
//! the middle of a burst of writes, restarted, every acknowledged write is
//! there and the chain verifies; with RUST_LOG=debug its log holds neither
//! the database password nor SQL parameters nor the root token.

use crate::common;

use common::{cli, free_port, kill_mid_burst, start};

#[test]
fn sigkill_on_postgres_loses_no_acknowledged_write_and_logs_no_secrets() {
    let Some(url) = mandate_testkit::postgres::database("cli_sigkill") else {
        return;
    };
    // Trust auth ignores the password; it is here to be looked for.
    let url = url.replacen(
        "postgres://mandate@",
        "postgres://mandate:pw-hunter2-pw@",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let env = [
        ("MANDATE_DATABASE_URL", url.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let (server, root) = start(&config, &addr, &env, Some(&log));
    let root = root.expect("first start prints the root token");

    // A burst of concurrent writers; the server is killed while they run.
    let acknowledged = kill_mid_burst(server, &addr, &root);

    // The dead broker's session (and its writer lock) is gone with it.
    let (mut server, again) = start(&config, &addr, &env, Some(&log));
    assert!(again.is_none(), "a restart must not mint a new root token");
    let listed = cli(&addr, &root, &["--json", "owner", "list"]);
    let verify = cli(&addr, &root, &["audit", "verify"]);
    server.kill().unwrap();
    server.wait().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    for name in &acknowledged {
        assert!(
            listed.contains(&format!("\"{name}\"")),
            "acknowledged owner {name} lost: {listed}"
        );
    }
    assert!(
        verify.status.success(),
        "chain after SIGKILL: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("opened PostgreSQL store"), "{log}");
    // "with parameters" is how the PostgreSQL client logs each statement's
    // values at debug level, which RUST_LOG=debug would otherwise enable.
    for secret in ["pw-hunter2-pw", "with parameters", root.as_str()] {
        assert!(!log.contains(secret), "`{secret}` in the server log");
    }
    eprintln!(
        "{} of 24 writes were acknowledged before SIGKILL",
        acknowledged.len()
    );
}

/// `audit verify --config` reads the PostgreSQL database the server's
/// config names, directly and read-only, while that broker runs (it takes
/// no writer lock): the same head as verifying through the API, and a row
/// edited in the database is named.
#[test]
fn offline_verify_reads_postgres_beside_a_running_broker() {
    let Some(url) = mandate_testkit::postgres::database("cli_offline") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let url_file = dir.path().join("pg-url");
    std::fs::write(&url_file, &url).unwrap();
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\ndatabase_url_file = \"{}\"\n",
            dir.path().join("data").display(),
            url_file.display()
        ),
    )
    .unwrap();
    let (mut server, root) = start(&config, &addr, &[], None);
    let root = root.expect("first start prints the root token");
    for name in ["team-a", "team-b"] {
        let out = cli(&addr, &root, &["owner", "create", name]);
        assert!(out.status.success(), "{out:?}");
    }
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let online = json(cli(&addr, &root, &["--json", "audit", "verify"]));
    let config_arg = config.to_str().unwrap();
    let offline = json(cli(
        &addr,
        "",
        &["--json", "audit", "verify", "--config", config_arg],
    ));
    assert_eq!(offline["valid"], true);
    assert!(offline["records"].as_u64().unwrap() >= 3, "{offline}");
    assert_eq!(offline["head"], online["head"], "the same chain both ways");
    let export = cli(&addr, "", &["audit", "export", "--config", config_arg]);
    assert!(export.status.success(), "{export:?}");
    assert_eq!(
        String::from_utf8_lossy(&export.stdout).lines().count() as u64,
        offline["records"].as_u64().unwrap()
    );

    mandate_testkit::postgres::psql(&url, "UPDATE events SET actor = 'nobody' WHERE seq = 2");
    let tampered = cli(&addr, "", &["audit", "verify", "--config", config_arg]);
    assert!(!tampered.status.success());
    let err = String::from_utf8_lossy(&tampered.stderr);
    assert!(err.contains("record 2"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
}
