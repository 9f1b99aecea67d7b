//! `mandate server` as a real process, killed with SIGKILL in the middle of
//! a burst of writes: on restart every acknowledged write is there, the
//! audit chain verifies offline, and the root token is nowhere on disk.

use crate::common;

use common::{cli, free_port, kill_mid_burst, start};
use mandate_testkit::{contains, files_under};
use std::process::Command;

#[test]
fn sigkill_mid_burst_loses_no_acknowledged_write_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!("listen = \"{addr}\"\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    let (server, root) = start(&config, &addr, &[], None);
    let root = root.expect("first start prints the root token");

    // A burst of concurrent writers; the server is killed while they run.
    let acknowledged = kill_mid_burst(server, &addr, &root);

    let verify = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "chain after SIGKILL: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    for f in files_under(&data) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, &root),
            "the root token is stored in clear in {}",
            f.display()
        );
    }

    let (mut server, again) = start(&config, &addr, &[], None);
    assert!(again.is_none(), "a restart must not mint a new root token");
    let o = cli(&addr, &root, &["--json", "owner", "list"]);
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    // SIGTERM (systemd, Kubernetes) is a graceful stop: a clean exit.
    // SAFETY: kill(2) with a pid we spawned and still wait for.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let stopped = server.wait().unwrap();
    assert!(stopped.success(), "after SIGTERM: {stopped}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in &acknowledged {
        assert!(
            listed.contains(&format!("\"{name}\"")),
            "acknowledged owner {name} lost: {listed}"
        );
    }
    eprintln!(
        "{} of 24 writes were acknowledged before SIGKILL",
        acknowledged.len()
    );
}
