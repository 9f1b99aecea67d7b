//! Bad input: a missing path is an error; a symlink loop, a 2 GB file,
//! invalid UTF-8, a FIFO and dangling links are not — the scan goes on,
//! says what it skipped, and never panics.

use mandate_scan::{Engine, ScanError, ScanOptions, Skipped, scan};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn engine() -> Engine {
    Engine::with_default_rules().unwrap()
}

#[test]
fn a_missing_path_is_an_error_that_names_it() {
    let e = scan(
        &[PathBuf::from("/no/such/dir")],
        &engine(),
        &ScanOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    let ScanError::Root { path, reason } = &e;
    assert_eq!(path, "/no/such/dir");
    assert_eq!(reason, "no such file or directory");
}

#[test]
fn a_symlink_loop_is_skipped_followed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a"), sub.join("up")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("x"), dir.path().join("y")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("y"), dir.path().join("x")).unwrap();
    std::fs::write(
        sub.join("key.env"),
        "DB=postgres://app:Zq8vR2nLw5Kp@db.internal/app\n",
    )
    .unwrap();
    let report = scan(
        &[dir.path().to_path_buf()],
        &engine(),
        &ScanOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.summary.skipped.get(&Skipped::Symlink), Some(&3));
    let follow = ScanOptions {
        follow_symlinks: true,
        ..ScanOptions::default()
    };
    let report = scan(&[dir.path().to_path_buf()], &engine(), &follow, &|_| {}).unwrap();
    assert_eq!(report.findings.len(), 1, "the loop is not walked twice");
    assert!(
        report.summary.warnings.iter().any(|w| w.contains("loop")),
        "the loop is named: {:?}",
        report.summary.warnings
    );
    assert!(
        report
            .summary
            .skipped
            .get(&Skipped::Unreadable)
            .is_some_and(|n| *n >= 1)
    );
}

#[test]
fn a_2gb_file_is_skipped_by_its_size_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("dump.sql")).unwrap();
    big.set_len(2 << 30).unwrap(); // sparse: no disk, and a read would take seconds
    std::fs::write(dir.path().join("small.env"), "OK=1\n").unwrap();
    let t = Instant::now();
    let report = scan(
        &[dir.path().to_path_buf()],
        &engine(),
        &ScanOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(report.summary.skipped.get(&Skipped::TooLarge), Some(&1));
    assert_eq!(report.summary.files_scanned, 1);
    assert!(report.summary.bytes_scanned < 100);
}

#[test]
fn invalid_utf8_scans_like_any_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"# caf\xe9 \xff\xfe\n".to_vec();
    bytes.extend_from_slice(b"AWS_ACCESS_KEY_ID=AKIA2E3F4G5H6J7K2L3M\n\xc3\x28\n");
    std::fs::write(dir.path().join("latin1.env"), &bytes).unwrap();
    let report = scan(
        &[dir.path().to_path_buf()],
        &engine(),
        &ScanOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(
        (report.findings[0].line, report.findings[0].column),
        (2, 19)
    );
}

#[test]
fn fifos_and_dangling_links_do_not_block_or_stop_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();
    std::fs::write(dir.path().join("a.env"), "X=1\n").unwrap();
    let follow = ScanOptions {
        follow_symlinks: true,
        ..ScanOptions::default()
    };
    let report = scan(&[dir.path().to_path_buf()], &engine(), &follow, &|_| {}).unwrap();
    assert_eq!(report.summary.files_scanned, 1);
    assert!(
        report
            .summary
            .warnings
            .iter()
            .any(|w| w.contains("dangling")),
        "{:?}",
        report.summary.warnings
    );
}
