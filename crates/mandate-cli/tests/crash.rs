//! `mandate server` as a real process, killed with SIGKILL in the middle of
//! a burst of writes: on restart every acknowledged write is there, the
//! audit chain verifies offline, and the root token is nowhere on disk.

mod common;

use common::{cli, free_port, start};
use mandate_testkit::{contains, files_under};
use std::process::Command;
use std::time::Duration;

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
    let (mut server, root) = start(&config, &addr, &[], None);
    let root = root.expect("first start prints the root token");

    // A burst of concurrent writers; the server is killed while they run.
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let (addr, root) = (addr.clone(), root.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 15));
                let name = format!("team-{i}");
                let o = cli(&addr, &root, &["owner", "create", &name]);
                o.status.success().then_some(name)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(180));
    server.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.wait().unwrap();
    let acknowledged: Vec<String> = writers
        .into_iter()
        .filter_map(|w| w.join().unwrap())
        .collect();

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
    server.kill().unwrap();
    server.wait().unwrap();
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
