//! `mandate server` as a real process, for tests that kill it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the server with extra `env` (its log appended to `log`, if
/// given) and wait until it listens; also return the root token it prints
/// (only a first start prints one).
pub fn start(
    config: &Path,
    addr: &str,
    env: &[(&str, &str)],
    log: Option<&Path>,
) -> (Child, Option<String>) {
    let stderr = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap(),
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["server", "--config", config.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim().starts_with("mdt_") {
                let _ = tx.send(line.trim().to_owned());
            }
        }
    });
    wait_listening(addr);
    (child, rx.recv_timeout(Duration::from_secs(2)).ok())
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start the server again on an existing data dir (no root token to wait
/// for) and wait until it listens.
pub fn restart(config: &Path, addr: &str, env: &[(&str, &str)]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["server", "--config", config.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(addr);
    child
}

pub fn cli(addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .env("MANDATE_ADDR", format!("http://{addr}"))
        .env("MANDATE_TOKEN", token)
        .output()
        .unwrap()
}

/// 24 concurrent `owner create` calls; `server` is SIGKILLed (no shutdown
/// path runs) while they are under way. The owners it acknowledged.
pub fn kill_mid_burst(mut server: Child, addr: &str, root: &str) -> Vec<String> {
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let (addr, root) = (addr.to_owned(), root.to_owned());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 15));
                let name = format!("team-{i}");
                let o = cli(&addr, &root, &["owner", "create", &name]);
                o.status.success().then_some(name)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(180));
    server.kill().unwrap();
    server.wait().unwrap();
    writers
        .into_iter()
        .filter_map(|w| w.join().unwrap())
        .collect()
}

/// The command's stdout, trimmed, after asserting it succeeded (its
/// stderr in the failure).
pub fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// `mandate ARGS` against the test server, as its operator (root token).
pub fn as_operator(s: &mandate_testkit::TestServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .env("MANDATE_ADDR", &s.base)
        .env("MANDATE_TOKEN", &s.root)
        .env_remove("MANDATE_SESSION")
        .output()
        .unwrap()
}
