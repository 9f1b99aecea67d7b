//! `mandate server` on PostgreSQL as a real process: killed with SIGKILL in
//! the middle of a burst of writes, restarted, every acknowledged write is
//! there and the chain verifies; with RUST_LOG=debug its log holds neither
//! the database password nor SQL parameters nor the root token.

mod common;

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
