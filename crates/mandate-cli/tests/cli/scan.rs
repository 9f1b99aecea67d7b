//! `mandate scan` as a user runs it: exit codes, formats, baselines, clear
//! errors, and `--import` / `--rewrite` against a real broker — the value
//! never printed.

use mandate_testkit::TestServer;
use std::path::Path;
use std::process::{Command, Output};

fn mandate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .current_dir(dir)
        .env_remove("MANDATE_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A GitHub personal token with a valid CRC32 tail (generated, worthless).
fn github_pat() -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random = "Zt7kQ2vLm9Xc4Rb8Nw3Jp6Hd1Fg5Sy";
    let mut n = crc32(random.as_bytes());
    let mut tail = [b'0'; 6];
    for slot in tail.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    format!("ghp_{random}{}", std::str::from_utf8(&tail).unwrap())
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const DB_PASSWORD: &str = "Zq8vR2nLw5Kp7Tx";

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("# agent\nGITHUB_TOKEN={}\nDATABASE_URL=postgres://app:{DB_PASSWORD}@db.internal:5432/app\n", github_pat()),
    )
    .unwrap();
    std::fs::write(dir.path().join("clean.yaml"), "token: ${GITHUB_TOKEN}\n").unwrap();
    dir
}

#[test]
fn exit_codes_say_clean_findings_or_could_not_scan() {
    let dir = workspace();
    let o = mandate(dir.path(), &["scan", "clean.yaml"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = mandate(dir.path(), &["scan", "."], &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains(
            ".env:2:14: github-pat (human-exception, a person's credential) ghp_…(40 chars)"
        ),
        "{out}"
    );
    assert!(out.contains(".env:3:"), "{out}");
    assert!(!out.contains(&github_pat()) && !out.contains(DB_PASSWORD));
    assert!(
        o.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        text(&o.stderr)
    );
    let o = mandate(dir.path(), &["scan", "missing-dir"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("missing-dir: no such file or directory"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_baseline_keys_on_fingerprints_and_survives_moved_lines() {
    let dir = workspace();
    let o = mandate(dir.path(), &["scan", "--format", "json", "."], &[]);
    std::fs::write(dir.path().join("baseline.json"), &o.stdout).unwrap();
    // Lines move; the secrets do not change: nothing new.
    let env = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    std::fs::write(dir.path().join(".env"), format!("# moved\n\n\n{env}")).unwrap();
    let o = mandate(
        dir.path(),
        &["scan", "--baseline", "baseline.json", ".env"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("2 in the baseline not shown"));
    // SARIF output is a baseline too.
    let o = mandate(dir.path(), &["scan", "--format", "sarif", "."], &[]);
    std::fs::write(dir.path().join("baseline.sarif"), &o.stdout).unwrap();
    let o = mandate(
        dir.path(),
        &["scan", "--baseline", "baseline.sarif", ".env"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    // A baseline of another format is refused, naming it; exit 2.
    std::fs::write(
        dir.path().join("ds.json"),
        r#"{"version":"1.5.0","plugins_used":[],"results":{}}"#,
    )
    .unwrap();
    let o = mandate(dir.path(), &["scan", "--baseline", "ds.json", "."], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("ds.json") && err.contains("detect-secrets baseline"),
        "{err}"
    );
    let o = mandate(dir.path(), &["scan", "--baseline", ".env", "."], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("not JSON") && !err.contains(DB_PASSWORD),
        "{err}"
    );
}

#[test]
fn help_documents_exit_codes_and_formats() {
    let o = mandate(Path::new("."), &["scan", "--help"], &[]);
    let help = text(&o.stdout);
    for needle in [
        "Exit status: 0 no findings",
        "2 the scan could not be done",
        "sarif",
        "--baseline",
        "--import",
        "--rewrite",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_stores_the_value_by_class_and_rewrite_keeps_a_backup() {
    let s = TestServer::start().await;
    let dir = workspace();
    let base = s.base.clone();
    let root = s.root.clone();
    tokio::task::spawn_blocking(move || {
        let env = [
            ("MANDATE_ADDR", base.as_str()),
            ("MANDATE_TOKEN", root.as_str()),
        ];
        let run = |args: &[&str]| mandate(dir.path(), args, &env);
        assert!(run(&["owner", "create", "platform"]).status.success());
        let tool = run(&[
            "tool",
            "create",
            "github",
            "--audience",
            "https://api.github.com",
            "--owner",
            "platform",
            "--env",
            "staging",
            "--sensitivity",
            "internal",
            "--action",
            "issues:read",
        ]);
        assert!(tool.status.success(), "{}", text(&tool.stderr));
        assert!(
            run(&[
                "tool",
                "create",
                "orders-db",
                "--audience",
                "https://orders-db.internal",
                "--owner",
                "platform",
                "--env",
                "staging",
                "--sensitivity",
                "confidential",
                "--action",
                "db:read",
            ])
            .status
            .success()
        );
        let report: serde_json::Value =
            serde_json::from_slice(&run(&["scan", "--format", "json", "."]).stdout).unwrap();
        let fp = |rule: &str| {
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["rule"] == rule)
                .unwrap()["fingerprint"]
                .as_str()
                .unwrap()[..12]
                .to_owned()
        };
        let (pat, db) = (fp("github-pat"), fp("database-url-password"));
        let original = std::fs::read_to_string(dir.path().join(".env")).unwrap();

        // A person's token needs an expiry: refused before anything is stored.
        let o = run(&[
            "scan", ".", "--import", &pat, "--tool", "github", "--owner", "platform",
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            text(&o.stderr).contains("needs --expires"),
            "{}",
            text(&o.stderr)
        );

        let o = run(&[
            "scan",
            ".",
            "--import",
            &pat,
            "--tool",
            "github",
            "--owner",
            "platform",
            "--expires",
            "2099-12-31",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(
            out.contains("class human-exception (a person's credential)"),
            "{out}"
        );
        assert!(
            out.contains("replace the value with ${MANDATE_GITHUB_TOKEN}"),
            "{out}"
        );
        assert!(
            out.contains("http://127.0.0.1:8400/github/")
                && out.contains("--resource https://api.github.com"),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".env")).unwrap(),
            original,
            "untouched without --rewrite"
        );

        let o = run(&[
            "scan",
            ".",
            "--import",
            &db,
            "--tool",
            "orders-db",
            "--owner",
            "platform",
            "--name",
            "orders-db-password",
            "--rewrite",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(
            out.contains("stored secret orders-db-password: class database"),
            "{out}"
        );
        let rewritten = std::fs::read_to_string(dir.path().join(".env")).unwrap();
        assert!(
            rewritten.contains("postgres://app:${MANDATE_ORDERS_DB_TOKEN}@db.internal"),
            "{rewritten}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".env.mandate-backup")).unwrap(),
            original
        );

        let list = text(&run(&["--json", "secret", "list"]).stdout);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let secrets = list["secrets"].as_array().unwrap();
        let gh = secrets.iter().find(|s| s["tool"] == "github").unwrap();
        assert_eq!(
            (gh["class"].as_str(), gh["human_credential"].as_bool()),
            (Some("human-exception"), Some(true))
        );
        assert!(gh["expires_at"].as_i64().is_some());
        let db = secrets
            .iter()
            .find(|s| s["name"] == "orders-db-password")
            .unwrap();
        assert_eq!(db["class"], "database");
        for out in [text(&o.stdout), text(&o.stderr), list.to_string()] {
            assert!(!out.contains(DB_PASSWORD) && !out.contains(&github_pat()));
        }
    })
    .await
    .unwrap();
    // The broker holds the real value: what the proxy injects.
    let (status, v) = s.get("/v1/proxy/secrets/orders-db", Some(&s.root)).await;
    assert!(status.is_success(), "{v}");
    assert_eq!(v["value"], DB_PASSWORD);
}
