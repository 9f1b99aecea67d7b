//! `mandate server` issuing database logins under load (8 workers), killed
//! with SIGKILL at random points 20 times and restarted each time: at the
//! end no login remains in PostgreSQL for a task that has ended, and every
//! lease of an ended task is confirmed revoked (or marked failed with its
//! reason, which none should be with the database up).

use crate::common;

use common::{cli, free_port, ok, restart, start};
use mandate_testkit::postgres::{database, psql};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
const WORKERS: usize = 8;

/// The server process, killed however the test ends (a failed assertion
/// must not leave it running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Cheap pseudo-random delays (no RNG crate needed for a test's timing).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

async fn worker(base: String, session: String, stop: Arc<AtomicBool>, issued: Arc<AtomicUsize>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let task = http
            .post(format!("{base}/v1/tasks"))
            .bearer_auth(&session)
            .json(&json!({"intent": "crash load", "ttl_secs": 3,
                "scope": [{"tool": "orders-db", "actions": ["readonly"]}]}))
            .send()
            .await;
        let Ok(r) = task else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        let Some(id) = v["id"].as_str() else { continue };
        let got = http
            .post(format!(
                "{base}/v1/tasks/{id}/credentials/orders-db/readonly"
            ))
            .bearer_auth(&session)
            .json(&json!({}))
            .send()
            .await;
        if got.is_ok_and(|r| r.status().as_u16() == 201) {
            issued.fetch_add(1, Ordering::Relaxed);
        }
        if n.is_multiple_of(2) {
            let _ = http
                .post(format!("{base}/v1/tasks/{id}/complete"))
                .bearer_auth(&session)
                .json(&json!({}))
                .send()
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_issuing_leaves_no_login_of_an_ended_task() {
    let Some(url) = database("lease_crash") else {
        return;
    };
    psql(
        &url,
        "CREATE TABLE orders (id int); CREATE ROLE crash_read NOLOGIN; GRANT SELECT ON orders TO crash_read;",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!("listen = \"{addr}\"\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    let master = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let env = [("MANDATE_MASTER_KEY", master)];
    let (server, root) = start(&config, &addr, &env, None);
    let mut server = Running(server);
    let root = root.expect("first start prints the root token");
    let base = format!("http://{addr}");

    let (key, session) = {
        let (addr, root, url, dir) = (
            addr.clone(),
            root.clone(),
            url.clone(),
            dir.path().to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let admin = |args: &[&str]| ok(cli(&addr, &root, args));
            admin(&["owner", "create", "platform"]);
            let engine = dir.join("engine.json");
            std::fs::write(&engine, r#"{"kind": "postgres", "roles": [{"name": "readonly", "member_of": ["crash_read"]}]}"#).unwrap();
            admin(&["tool", "create", "orders-db", "--audience", "urn:db", "--owner", "platform", "--env", "staging",
                "--sensitivity", "internal", "--engine", engine.to_str().unwrap()]);
            let dsn = dir.join("dsn");
            std::fs::write(&dsn, &url).unwrap();
            admin(&["secret", "put", "db-admin", "--tool", "orders-db", "--class", "database", "--owner", "platform",
                "--from-file", dsn.to_str().unwrap()]);
            admin(&["agent", "create", "loader", "--owner", "platform", "--env", "staging", "--tool", "orders-db"]);
            let jt = admin(&["agent", "join-token", "loader"]);
            let key = dir.join("loader.key");
            admin(&["agent", "enroll", "--join-token", &jt, "--key-file", key.to_str().unwrap()]);
            let session = ok(std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
                .args(["login", "--key-file", key.to_str().unwrap()])
                .env("MANDATE_ADDR", format!("http://{addr}"))
                .output()
                .unwrap());
            (key, session)
        })
        .await
        .unwrap()
    };
    let _ = key;

    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::spawn(worker(
                base.clone(),
                session.clone(),
                stop.clone(),
                issued.clone(),
            ))
        })
        .collect();
    let mut rng = Lcg(std::process::id() as u64);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.next(150, 600))).await;
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        let (config, addr) = (config.clone(), addr.clone());
        server = Running(
            tokio::task::spawn_blocking(move || restart(&config, &addr, &env))
                .await
                .unwrap(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        issued.load(Ordering::Relaxed) > KILLS,
        "the load issued logins"
    );

    // Every task lived 3 s at most: once they are all over, nothing of
    // theirs may remain at the source, and every lease says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::new();
    loop {
        let left = psql(
            &url,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mnd_%'",
        );
        let leases: Value = http
            .get(format!("{base}/v1/leases?limit=1000"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let open: Vec<&Value> = leases["leases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["state"] != "revoked")
            .collect();
        if left == "0" && open.is_empty() {
            // (The listing stops at 1000.)
            let listed = leases["leases"].as_array().unwrap().len();
            assert!(
                listed >= issued.load(Ordering::Relaxed).min(1000),
                "{listed} leases listed"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} logins left; leases not revoked: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(server);
}
