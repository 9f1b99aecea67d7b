//! The independent clients: found on the machine, installed from the lock
//! files into a cache outside the source tree (`mandate_testkit::interop`),
//! run with a config file.

use mandate_testkit::interop::{self, interop_dir};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub enum Clients {
    /// The directory holding `node_modules`.
    Node(PathBuf),
    /// The virtualenv.
    Python(PathBuf),
}

impl Clients {
    /// oauth4webapi and jose, `npm ci` from `interop/node/package-lock.json`.
    pub fn node() -> Option<Clients> {
        interop::node_packages("node").map(Clients::Node)
    }

    /// Authlib and joserfc, every wheel pinned by hash in
    /// `interop/python/requirements.lock`.
    pub fn python() -> Option<Clients> {
        interop::python_packages("python/requirements.lock").map(Clients::Python)
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
