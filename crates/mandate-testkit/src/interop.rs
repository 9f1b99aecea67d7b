//! Independent implementations Mandate is checked against (OAuth/JOSE
//! clients, the Standard Webhooks library): installed from lock files in
//! the repository's `interop/` directory, every file pinned by hash, into
//! a cache outside the source tree (`MANDATE_INTEROP_CACHE`, by default
//! `~/.cache/mandate/interop`), one directory per lock file content.
//!
//! Without Node or Python the tests that need them skip loudly; under
//! `MANDATE_REQUIRE_INTEROP=1` (CI) they fail instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository's `interop/` directory (lock files and client scripts).
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

fn required() -> bool {
    std::env::var("MANDATE_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// Skip loudly, or fail where the suite is required.
pub fn unavailable<T>(what: &str) -> Option<T> {
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

/// One install at a time in this process (a half-made cache must not be
/// read).
static INSTALL: Mutex<()> = Mutex::new(());
const DONE: &str = ".mandate-interop-installed";

/// `npm ci` of `dir`'s `package.json` + `package-lock.json` (under
/// `interop/`); the directory holding `node_modules`.
pub fn node_packages(dir: &str) -> Option<PathBuf> {
    if !runs("node", "--version") || !runs("npm", "--version") {
        return unavailable("Node.js (node and npm) was not found");
    }
    let src = interop_dir().join(dir);
    let cache = cache_dir("node", &src.join("package-lock.json"));
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if !cache.join(DONE).exists() {
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&cache).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), cache.join(f)).unwrap();
        }
        run_ok(
            Command::new("npm")
                .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                .current_dir(&cache),
            &format!("npm ci (interop/{dir}/package-lock.json)"),
        );
        std::fs::write(cache.join(DONE), "").unwrap();
    }
    Some(cache)
}

/// A virtualenv with every wheel of `lock` (a path under `interop/`,
/// hashes required) installed; its directory.
pub fn python_packages(lock: &str) -> Option<PathBuf> {
    if !runs("python3", "--version") {
        return unavailable("python3 was not found");
    }
    let lock_file = interop_dir().join(lock);
    let venv = cache_dir("python", &lock_file);
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if !venv.join(DONE).exists() {
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
        run_ok(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
        run_ok(
            Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--require-hashes", "--no-deps", "--only-binary", ":all:"])
                .arg("-r")
                .arg(&lock_file),
            &format!("pip install (interop/{lock})"),
        );
        std::fs::write(venv.join(DONE), "").unwrap();
    }
    Some(venv)
}
