//! A real, throwaway PostgreSQL server for tests.
//!
//! Store tests run against a real cluster, not a mock, because what they check
//! (SQL semantics, transactions, locking, durability) is the server's. Each
//! test process starts its own cluster on first use (own temp dir, own free
//! loopback port, trust auth, fsync left on) and every [`database`] call gets
//! a fresh database in it. As root the cluster runs as the `postgres` OS user.
//!
//! When no server can be started, [`database`] prints a line starting with
//! `SKIPPED: PostgreSQL` and returns `None`, so the test can pass vacuously;
//! with `MANDATE_REQUIRE_POSTGRES=1` (CI) it panics with the reason instead.
//!
//! Statics are never dropped, so a detached watchdog shell waits for the test
//! process to exit, then stops the cluster (`-m immediate`) and removes its
//! temp dir; it also cleans up after a crash or `SIGKILL`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

const USER: &str = "mandate";
const START_ATTEMPTS: usize = 3;

struct Cluster {
    bin: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

/// A PostgreSQL server for this test process, started once and shared:
/// the URL (`postgres://mandate@127.0.0.1:PORT/NAME`) of a fresh database
/// created for this call. `None` (after a loud eprintln naming the reason,
/// starting with "SKIPPED: PostgreSQL") when no server can be started, unless
/// MANDATE_REQUIRE_POSTGRES=1, in which case it panics with the reason.
pub fn database(name_hint: &str) -> Option<String> {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(reason) if std::env::var("MANDATE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (MANDATE_REQUIRE_POSTGRES=1) but unavailable: {reason}")
        }
        Err(reason) => {
            // Straight to stderr: the test harness captures `eprintln!`.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL unavailable, test passes without running \
                 (set MANDATE_REQUIRE_POSTGRES=1 to fail instead): {reason}"
            );
            return None;
        }
    };
    let name = database_name(name_hint);
    let port = cluster.port.to_string();
    let mut createdb = Command::new(cluster.bin.join("createdb"));
    createdb.args(["-h", "127.0.0.1", "-p", &port, "-U", USER, &name]);
    // The server is up, so failing to create a database is a real error.
    if let Err(e) = run(&mut createdb) {
        panic!("createdb {name}: {e}");
    }
    Some(format!("postgres://{USER}@127.0.0.1:{port}/{name}"))
}

/// Run one SQL statement with `psql` against `url` (a test's own look at
/// the database, or a tamper); its output, trimmed. Panics on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `t_<hint>_<pid>_<n>`: lowercase, at most 2 + 24 + 1 + 10 + 1 + 20 < 63 bytes.
fn database_name(hint: &str) -> String {
    let hint: String = hint
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(24)
        .collect();
    let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
    format!("t_{hint}_{}_{n}", std::process::id())
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir().ok_or("no pg_ctl on PATH or in /usr/lib/postgresql/*/bin")?;
    if let Some(missing) = ["initdb", "pg_ctl", "postgres", "createdb"]
        .into_iter()
        .find(|b| !bin.join(b).is_file())
    {
        return Err(format!("no {missing} in {}", bin.display()));
    }
    let as_root = run(Command::new("id").arg("-u"))?.trim() == "0";
    let tmp = tempfile::Builder::new()
        .prefix("mandate-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    let (data, socket, log) = (tmp.join("data"), tmp.join("socket"), tmp.join("server.log"));
    std::fs::create_dir(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    if as_root {
        run(Command::new("chown").args(["-R", "postgres:"]).arg(&tmp))?;
    }
    // Before anything can be left running, so that it is always cleaned up.
    spawn_watchdog(&tmp, server_cmd(as_root, &bin, "pg_ctl", &tmp))?;

    let mut initdb = server_cmd(as_root, &bin, "initdb", &tmp);
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", USER]);
    initdb.args(["--encoding=UTF8", "--locale=C", "--no-sync"]);
    run(&mut initdb).map_err(|e| format!("initdb: {e}"))?;
    // The test superuser is trusted; every other login (the roles the
    // database engine makes) must bring its password.
    let hba = data.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all mandate 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .map_err(|e| format!("{}: {e}", hba.display()))?;
    if as_root {
        run(Command::new("chown").arg("postgres:").arg(&hba))?;
    }

    // The port is free when picked but may be taken before the server binds
    // it (e.g. by another test binary's cluster), hence the retries.
    let mut failure = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k '{}' \
             -c max_connections=200 -c shared_buffers=32MB",
            socket.display()
        );
        let mut pg_ctl = server_cmd(as_root, &bin, "pg_ctl", &tmp);
        pg_ctl.arg("-D").arg(&data).arg("-l").arg(&log);
        pg_ctl.args(["-w", "-t", "30", "-o", &options, "start"]);
        match run(&mut pg_ctl) {
            Ok(_) => return Ok(Cluster { bin, port }),
            Err(e) => failure = e,
        }
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(format!("pg_ctl start: {failure}\nserver log tail:\n{tail}"))
}

/// The directory of `pg_ctl` on PATH, else of the newest Debian-style install;
/// the other server and client programs are taken from the same directory.
fn bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|dir| dir.join("pg_ctl"))
        .find(|pg_ctl| pg_ctl.is_file());
    let pg_ctl = on_path.or_else(|| {
        let installs = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten();
        let by_major = installs.filter_map(|version| {
            let major: u32 = version
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, version.path().join("bin/pg_ctl")))
        });
        Some(by_major.filter(|(_, pg_ctl)| pg_ctl.is_file()).max()?.1)
    })?;
    Some(std::fs::canonicalize(pg_ctl).ok()?.parent()?.to_owned())
}

/// A server program, run as `postgres` when we are root (the server refuses
/// to run as root), from a directory that user can enter.
fn server_cmd(as_root: bool, bin: &Path, program: &str, tmp: &Path) -> Command {
    let mut cmd = if as_root {
        let mut runuser = Command::new("runuser");
        runuser
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        runuser
    } else {
        Command::new(bin.join(program))
    };
    cmd.current_dir(tmp);
    cmd
}

/// A detached shell that, once this process is gone, runs
/// `<pg_ctl> -D <tmp>/data stop -m immediate` and removes `tmp`; then again
/// after 5 s, for an initdb or pg_ctl start that was still running.
fn spawn_watchdog(tmp: &Path, pg_ctl: Command) -> Result<(), String> {
    const SCRIPT: &str = r#"pid=$1 tmp=$2; shift 2
        while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
        for delay in 0 5; do sleep $delay
            "$@" -D "$tmp/data" stop -m immediate; rm -rf "$tmp"; done"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "mandate-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(tmp)
        .arg(pg_ctl.get_program())
        .args(pg_ctl.get_args())
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("watchdog: {e}"))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// Run to completion; its stdout, or an error naming the command and its output.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{cmd:?} {}: {stdout}{stderr}", out.status))
}
