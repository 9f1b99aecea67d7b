//! The independent clients: found on the machine, installed from the lock
//! files into a cache outside the source tree, run with a config file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The repository's `interop/` directory (lock files and client scripts).
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

fn required() -> bool {
    std::env::var("MANDATE_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// Skip loudly, or fail where the suite is required.
fn unavailable(what: &str) -> Option<Clients> {
    assert!(
        !required(),
        "MANDATE_REQUIRE_INTEROP=1 but {what}; install it or unset the variable"
    );
    // Straight to stderr: the test harness captures `eprintln!`.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: interop suite: {what}. Install it to run these tests \
         (CI sets MANDATE_REQUIRE_INTEROP=1 and fails instead). ***\n"
    );
    None
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Where installed clients live: never inside the source tree.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MANDATE_INTEROP_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mandate").join("interop")
}

/// A cache directory named for the lock file's content, so a changed pin
/// installs afresh.
fn cache_dir(kind: &str, lock: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(lock)
        .unwrap_or_else(|e| panic!("{}: {e}", lock.display()))
        .hash(&mut h);
    cache_root().join(format!("{kind}-{:016x}", h.finish()))
}

fn run_ok(c: &mut Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One install at a time in this process (the two tests share nothing
/// else, but a half-made cache must not be read).
static INSTALL: Mutex<()> = Mutex::new(());
const DONE: &str = ".mandate-interop-installed";

pub enum Clients {
    /// The directory holding `node_modules`.
    Node(PathBuf),
    /// The virtualenv.
    Python(PathBuf),
}

impl Clients {
    /// oauth4webapi and jose, `npm ci` from `interop/node/package-lock.json`.
    pub fn node() -> Option<Clients> {
        if !runs("node", "--version") || !runs("npm", "--version") {
            return unavailable("Node.js (node and npm) was not found");
        }
        let src = interop_dir().join("node");
        let dir = cache_dir("node", &src.join("package-lock.json"));
        let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join(DONE).exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["package.json", "package-lock.json"] {
                std::fs::copy(src.join(f), dir.join(f)).unwrap();
            }
            run_ok(
                Command::new("npm")
                    .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                    .current_dir(&dir),
                "npm ci (interop/node/package-lock.json)",
            );
            std::fs::write(dir.join(DONE), "").unwrap();
        }
        Some(Clients::Node(dir))
    }

    /// Authlib and joserfc, every wheel pinned by hash in
    /// `interop/python/requirements.lock`.
    pub fn python() -> Option<Clients> {
        if !runs("python3", "--version") {
            return unavailable("python3 was not found");
        }
        let lock = interop_dir().join("python/requirements.lock");
        let dir = cache_dir("python", &lock);
        let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join(DONE).exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
            run_ok(
                Command::new("python3").arg("-m").arg("venv").arg(&dir),
                "python3 -m venv",
            );
            run_ok(
                Command::new(dir.join("bin/python"))
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(["--require-hashes", "--no-deps", "--only-binary", ":all:"])
                    .arg("-r")
                    .arg(&lock),
                "pip install (interop/python/requirements.lock)",
            );
            std::fs::write(dir.join(DONE), "").unwrap();
        }
        Some(Clients::Python(dir))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Clients::Node(_) => "node (oauth4webapi + jose)",
            Clients::Python(_) => "python (Authlib + joserfc)",
        }
    }

    /// Run the client script with `config` (a JSON file) and the CA it must
    /// trust; its stdout and whether it succeeded. Killed after `limit`.
    pub async fn run(&self, config: &Path, ca: &Path, limit: Duration) -> (String, String, bool) {
        let scratch = tempfile::tempdir().unwrap();
        let mut cmd = match self {
            Clients::Node(dir) => {
                // ES modules resolve packages next to the script: run a
                // copy beside a link to the cached node_modules.
                let script = scratch.path().join("client.mjs");
                std::fs::copy(interop_dir().join("node/client.mjs"), &script).unwrap();
                std::os::unix::fs::symlink(
                    dir.join("node_modules"),
                    scratch.path().join("node_modules"),
                )
                .unwrap();
                let mut c = tokio::process::Command::new("node");
                c.arg(script).env("NODE_EXTRA_CA_CERTS", ca);
                c
            }
            Clients::Python(venv) => {
                let mut c = tokio::process::Command::new(venv.join("bin/python"));
                c.arg(interop_dir().join("python/client.py"))
                    .env("REQUESTS_CA_BUNDLE", ca)
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                c
            }
        };
        cmd.env("INTEROP_CONFIG", config)
            .current_dir(scratch.path())
            .kill_on_drop(true);
        let out = tokio::time::timeout(limit, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish within {limit:?}", self.name()))
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.name()));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }
}
