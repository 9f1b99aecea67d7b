//! `mandate inventory` and `mandate posture` against a real server: the
//! formats, the CI gate's exit codes, and the HTML page opened in a real
//! headless Chromium (skipped loudly where none is installed).

use crate::common::as_operator;
use mandate_testkit::TestServer;
use mandate_testkit::serde_json::{self, Value, json};
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The seed plus a production agent with nothing but a join token (a
/// high finding) and a person-owned staging agent (a medium one).
async fn estate() -> TestServer {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "deployer", "owner": "platform",
        "environment": "production", "allowed_tools": ["vault-prod"]}),
    )
    .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_formats_and_the_ci_gate() {
    let s = estate().await;
    let dir = tempfile::tempdir().unwrap();
    let s = tokio::task::spawn_blocking(move || {
        let o = as_operator(&s, &["owner", "create", "alice", "--kind", "person"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = as_operator(
            &s,
            &[
                "agent", "create", "proto", "--owner", "alice", "--env", "staging",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = as_operator(
            &s,
            &[
                "agent",
                "create",
                "prod2",
                "--owner",
                "alice",
                "--env",
                "production",
            ],
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("owner: a production agent must be owned by a team or a service"),
            "{}",
            stderr(&o)
        );

        let o = as_operator(&s, &["posture", "--fail-on", "high"]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("1 finding(s) at or above high"),
            "{}",
            stderr(&o)
        );
        let md = stdout(&o);
        assert!(md.starts_with("# Mandate posture report"), "{md}");
        assert!(
            md.contains("production-agent-join-token-only:agent/deployer"),
            "{md}"
        );
        assert!(md.contains("NHI4:2025 Insecure Authentication"), "{md}");
        let o = as_operator(
            &s,
            &["posture", "--fail-on", "critical", "--format", "json"],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["summary"]["by_severity"]["high"], 1, "{v}");
        assert_eq!(v["summary"]["by_severity"]["medium"], 1, "{v}");
        let o = as_operator(&s, &["posture", "--format", "sarif"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let log: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(log["version"], "2.1.0");
        let results = log["runs"][0]["results"].as_array().unwrap();
        assert!(
            results
                .iter()
                .any(|r| r["ruleId"] == "production-agent-join-token-only"),
            "{log}"
        );
        let o = as_operator(&s, &["posture", "--format", "pdf"]);
        assert_eq!(o.status.code(), Some(2), "clap refuses: {}", stderr(&o));
        assert!(stderr(&o).contains("pdf"));
        let o = as_operator(&s, &["posture", "--days", "0"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("days: must be between 1 and 365"),
            "{}",
            stderr(&o)
        );

        let page = dir.path().join("posture.html");
        let o = as_operator(
            &s,
            &[
                "posture",
                "--format",
                "html",
                "--output",
                page.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).is_empty(), "written to the file only");
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("severity-chart"));
        assert!(
            !html.contains("<script") && !html.contains("src=\"http"),
            "self-contained"
        );
        open_in_chromium(&page);
        s
    })
    .await
    .unwrap();
    drop(s);
}

/// Headless Chromium loads the page with no console error and renders
/// both charts' bars.
fn open_in_chromium(page: &std::path::Path) {
    let Some(bin) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        eprintln!(
            "SKIPPED: no headless Chromium (Debian: apt-get install chromium); the HTML report was not opened in a browser"
        );
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium: {}", stderr(&o));
    let dom = stdout(&o);
    assert!(
        dom.contains("id=\"severity-chart\"") && dom.contains("id=\"framework-chart\""),
        "{dom}"
    );
    assert!(
        dom.matches("<rect").count() >= 5 + 6,
        "a bar per severity and framework"
    );
    let log = stderr(&o);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_as_table_json_and_csv() {
    let s = estate().await;
    s.admin_post(
        "/v1/secrets",
        json!({"name": "gh", "tool": "github", "class": "tool",
        "owner": "platform", "value": "ghs_NeverPrinted_123"}),
    )
    .await;
    let s = tokio::task::spawn_blocking(move || {
        let o = as_operator(&s, &["inventory"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let t = stdout(&o);
        assert!(
            t.contains("secrets:") && t.contains("agents:") && t.contains("join_token"),
            "{t}"
        );
        let o = as_operator(&s, &["inventory", "--format", "csv"]);
        let csv = stdout(&o);
        let mut lines = csv.lines();
        assert!(
            lines.next().unwrap().starts_with("record,name,class,owner"),
            "{csv}"
        );
        assert!(
            csv.contains("\"secret\",\"gh\",\"tool\",\"platform\""),
            "{csv}"
        );
        assert!(csv.contains("\"agent\",\"deployer\""), "{csv}");
        let o = as_operator(&s, &["inventory", "--class", "model", "--format", "json"]);
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["secrets"], json!([]));
        for text in [t, csv] {
            assert!(!text.contains("ghs_NeverPrinted"), "never the value");
        }
        let o = as_operator(&s, &["inventory", "--class", "password"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("class: `password` is not one of"),
            "{}",
            stderr(&o)
        );
        let o = as_operator(&s, &["anomalies", "ack", "999999"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("anomaly"), "{}", stderr(&o));
        s
    })
    .await
    .unwrap();
    drop(s);
}
