//! The throwaway PostgreSQL cluster: fresh, distinct, reachable databases.
//! Skips (passes) when no server can be started, unless
//! MANDATE_REQUIRE_POSTGRES=1.

use mandate_testkit::postgres::database;
use std::path::PathBuf;
use std::process::Command;

/// `psql` of a Debian-style install (no wrapper script), else from PATH.
fn psql() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/psql"))
        .find(|psql| psql.is_file())
        .unwrap_or_else(|| "psql".into())
}

#[test]
fn each_call_gets_a_fresh_reachable_database() {
    let Some(first) = database("smoke") else {
        return;
    };
    let second = database("smoke").expect("the cluster that served the first call");
    assert_ne!(first, second);
    for url in [first, second] {
        let out = Command::new(psql())
            .arg(&url)
            .args([
                "-X",
                "-tA",
                "-c",
                "SELECT 1",
                "-c",
                "SELECT current_database()",
            ])
            .output()
            .expect("run psql");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "psql {url}: {stderr}");
        let name = url.rsplit('/').next().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("1\n{name}\n"));
    }
}
