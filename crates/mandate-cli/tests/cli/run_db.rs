//! `mandate run --db TOOL:ROLE` against a real server and a real
//! PostgreSQL: the command connects with `DATABASE_URL`, its exit code
//! passes through, and the login is gone from `pg_roles` before
//! `mandate run` exits. The engine tool is registered with the CLI.

use crate::common::{as_operator, ok};
use mandate_testkit::TestServer;
use mandate_testkit::postgres::{database, psql};
use std::path::Path;

fn setup(s: &TestServer, url: &str, group: &str, dir: &Path) -> String {
    ok(as_operator(s, &["owner", "create", "platform"]));
    let engine = dir.join("engine.json");
    std::fs::write(
        &engine,
        format!(
            r#"{{"kind": "postgres", "roles": [{{"name": "readonly", "member_of": ["{group}"]}}]}}"#
        ),
    )
    .unwrap();
    ok(as_operator(
        s,
        &[
            "tool",
            "create",
            "orders-db",
            "--audience",
            "urn:mandate:db:orders",
            "--owner",
            "platform",
            "--env",
            "staging",
            "--sensitivity",
            "confidential",
            "--engine",
            engine.to_str().unwrap(),
        ],
    ));
    let dsn = dir.join("dsn");
    std::fs::write(&dsn, url).unwrap();
    ok(as_operator(
        s,
        &[
            "secret",
            "put",
            "orders-db-admin",
            "--tool",
            "orders-db",
            "--class",
            "database",
            "--owner",
            "platform",
            "--from-file",
            dsn.to_str().unwrap(),
        ],
    ));
    ok(as_operator(
        s,
        &[
            "agent",
            "create",
            "bot",
            "--owner",
            "platform",
            "--env",
            "staging",
            "--tool",
            "orders-db",
        ],
    ));
    let jt = ok(as_operator(s, &["agent", "join-token", "bot"]));
    let key = dir.join("bot.key");
    ok(as_operator(
        s,
        &[
            "agent",
            "enroll",
            "--join-token",
            &jt,
            "--key-file",
            key.to_str().unwrap(),
        ],
    ));
    key.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_gets_a_login_that_is_gone_when_it_exits() {
    let Some(url) = database("run_db") else {
        return;
    };
    let group = format!("read_run_db_{}", std::process::id());
    psql(
        &url,
        &format!(
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (41);
             CREATE ROLE {group} NOLOGIN; GRANT SELECT ON orders TO {group};"
        ),
    );
    let s = TestServer::start().await;
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let key = setup(&s, &url, &group, dir.path());
        let out = dir.path().join("out");
        let script = format!(
            "psql \"$DATABASE_URL\" -At -c 'SELECT id + 1 FROM orders' > {out} && echo \"$PGUSER\" >> {out} \
             && psql -At -c 'SELECT current_user' >> {out}; exit 7",
            out = out.display()
        );
        let o = as_operator(
            &s,
            &[
                "run", "--key-file", &key, "--intent", "report", "--scope", "orders-db=readonly",
                "--db", "orders-db:readonly", "--", "sh", "-c", &script,
            ],
        );
        assert_eq!(o.status.code(), Some(7), "the exit code passes through: {}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(lines[0], "42", "it read through DATABASE_URL");
        assert!(lines[1].starts_with("mnd_"), "{lines:?}");
        assert_eq!(lines[2], lines[1], "and through the PG* variables");
        // Gone before `mandate run` exited.
        let count = psql(&url, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{}'", lines[1]));
        assert_eq!(count, "0");
        let leases = ok(as_operator(&s, &["--json", "lease", "list"]));
        assert!(leases.contains("\"revoked\"") && leases.contains(&lines[1]), "{leases}");
        assert!(ok(as_operator(&s, &["lease", "list", "--failed"])).lines().count() <= 1, "no failed lease");

        // A malformed --db opens no task at all.
        let o = as_operator(&s, &["run", "--key-file", &key, "--intent", "x", "--scope", "orders-db=readonly", "--db", "orders-db", "--", "true"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--db: `orders-db` must be TOOL:ROLE"), "{err}");
    })
    .await
    .unwrap();
}
