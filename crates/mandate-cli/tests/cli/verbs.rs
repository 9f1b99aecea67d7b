//! The `mandate` binary against a real server: the README walkthrough's
//! verbs, clear errors with non-zero exit, offline audit verification.

use mandate_testkit::TestServer;
use std::process::{Command, Output};

fn mandate(s: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mandate"));
    c.args(args)
        .env("MANDATE_ADDR", &s.base)
        .env("MANDATE_TOKEN", &s.root)
        .env_remove("MANDATE_SESSION");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn run(s: &TestServer, args: &[&str], env: &[(&str, &str)]) -> String {
    ok(&mandate(s, args, env)).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_from_enrolment_to_revocation_and_audit_verify() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bot.key").to_str().unwrap().to_owned();
    let s = tokio::task::spawn_blocking(move || {
        let key = key.as_str();
        run(&s, &["owner", "create", "platform"], &[]);
        run(
            &s,
            &[
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
                "--max-ttl",
                "600",
                "--action",
                "issues:read",
                "--action",
                "issues:write",
            ],
            &[],
        );
        run(
            &s,
            &[
                "agent", "create", "bot", "--owner", "platform", "--env", "staging", "--tool",
                "github",
            ],
            &[],
        );
        assert!(run(&s, &["agent", "list"], &[]).contains("spiffe://test.local/agent/bot"));
        let jt = run(&s, &["agent", "join-token", "bot"], &[]);
        run(
            &s,
            &["agent", "enroll", "--join-token", &jt, "--key-file", key],
            &[],
        );
        let session = run(&s, &["login", "--key-file", key], &[]);
        let env = [("MANDATE_SESSION", session.as_str())];
        let task = run(
            &s,
            &[
                "task",
                "create",
                "--intent",
                "triage",
                "--scope",
                "github=issues:read",
                "--resources",
                "github=repo:acme/*",
            ],
            &env,
        );
        assert!(task.starts_with("task_"), "{task}");
        let token = run(
            &s,
            &[
                "token",
                "exchange",
                "--task",
                &task,
                "--resource",
                "https://api.github.com",
            ],
            &env,
        );
        let authz = |action: &str| {
            run(
                &s,
                &[
                    "token",
                    "authorize",
                    "--access-token",
                    &token,
                    "--action",
                    action,
                    "--resource",
                    "repo:acme/w",
                ],
                &[],
            )
        };
        assert!(authz("issues:read").starts_with("allow"));
        assert!(authz("issues:write").starts_with("deny policy_denied"));
        run(&s, &["task", "revoke", &task], &[]);
        assert!(authz("issues:read").starts_with("deny revoked"));
        assert!(run(&s, &["audit", "verify"], &[]).starts_with("ok:"));
        let export = run(&s, &["audit", "export", "--format", "jsonl"], &[]);
        assert!(export.lines().count() > 10);
        assert!(!export.contains(&token), "tokens never reach the audit log");
        s
    })
    .await
    .unwrap();
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_audit_row_is_named_by_offline_verify() {
    let mut s = TestServer::start().await;
    s.seed().await;
    s.stop().await;
    let db = s.data_dir.join("mandate.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE events SET actor = 'admin:someone-else' WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let out = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args([
            "audit",
            "verify",
            "--data-dir",
            s.data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 3"), "{err}");
}

/// Deleting the newest rows leaves a valid chain; the head an auditor
/// kept from an earlier `verify` is what exposes the cut.
#[tokio::test]
async fn a_truncated_log_fails_verify_against_a_kept_head() {
    let mut s = TestServer::start().await;
    s.seed().await;
    s.stop().await;
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "audit",
            "verify",
            "--data-dir",
            s.data_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(&args)
            .output()
            .unwrap()
    };
    let first: serde_json::Value = serde_json::from_slice(&verify(&[]).stdout).unwrap();
    let head = first["head"].as_str().unwrap().to_owned();
    let last: u64 = head.split(':').next().unwrap().parse().unwrap();
    assert!(last > 3, "{first}");

    let conn = rusqlite::Connection::open(s.data_dir.join("mandate.db")).unwrap();
    conn.execute("DELETE FROM events WHERE seq > 3", [])
        .unwrap();
    drop(conn);
    let plain = verify(&[]);
    assert!(plain.status.success(), "a cut chain is still a chain");
    let checked = verify(&["--expect", &head]);
    assert!(!checked.status.success());
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains(&format!("record {last}")) && err.contains("truncated"),
        "{err}"
    );
    let bad = verify(&["--expect", "12:nothex"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HASH"));
}

/// A signed checkpoint, kept with the JWKS outside the broker, pins the
/// head: a log cut short fails verification naming the record; an edited
/// checkpoint or one whose key the kept JWKS lacks is refused, naming the
/// file. Only an admin with the `audit` right gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_checkpoint_exposes_a_cut_log_and_cannot_be_forged() {
    let s = TestServer::start().await;
    s.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let (st, jwks) = s.get("/.well-known/jwks.json", None).await;
    assert_eq!(st, reqwest::StatusCode::OK);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    let (st, v) = s.get("/v1/audit/checkpoint", Some(&s.root)).await;
    assert_eq!(st, reqwest::StatusCode::OK, "{v}");
    let keys: mandate_token::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let claims =
        mandate_token::checkpoint::verify(v["checkpoint"].as_str().unwrap(), &keys).unwrap();
    let (_, events) = s
        .get("/v1/audit/events?since=0&limit=10000", Some(&s.root))
        .await;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (claims.seq, claims.hash.as_str()),
        (
            last["seq"].as_u64().unwrap(),
            last["hash"].as_str().unwrap()
        )
    );
    assert_eq!(v["seq"], last["seq"]);
    let (_, agents_only) = s
        .post(
            "/v1/admin/tokens",
            Some(&s.root),
            &serde_json::json!({"rights": ["agents"], "description": "no audit"}),
        )
        .await;
    let (st, _) = s
        .get("/v1/audit/checkpoint", agents_only["token"].as_str())
        .await;
    assert_eq!(st, reqwest::StatusCode::FORBIDDEN);

    let cp_file = dir.path().join("head.jws");
    let s = tokio::task::spawn_blocking(move || {
        let jws = run(&s, &["audit", "checkpoint"], &[]);
        std::fs::write(&cp_file, &jws).unwrap();
        (s, cp_file)
    })
    .await
    .unwrap();
    let (mut s, cp_file) = s;
    s.stop().await;
    let verify = |cp: &std::path::Path, jwks: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&s.data_dir)
            .arg("--checkpoint")
            .arg(cp)
            .arg("--jwks")
            .arg(jwks)
            .output()
            .unwrap()
    };
    let ok = verify(&cp_file, &jwks_file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // An edited checkpoint (another head) does not verify.
    let jws = std::fs::read_to_string(&cp_file).unwrap();
    let parts: Vec<&str> = jws.trim().split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&mandate_token::b64_decode(parts[1]).unwrap()).unwrap();
    let kept_seq = payload["seq"].as_u64().unwrap();
    assert!(
        kept_seq > claims.seq,
        "the admin token's creation came after"
    );
    payload["seq"] = serde_json::json!(3);
    let forged = [
        parts[0],
        &mandate_token::b64(payload.to_string().as_bytes()),
        parts[2],
    ]
    .join(".");
    let forged_file = dir.path().join("forged.jws");
    std::fs::write(&forged_file, forged).unwrap();
    let out = verify(&forged_file, &jwks_file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("forged.jws") && err.contains("signature"),
        "{err}"
    );
    // A JWKS without its key cannot vouch for it.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    let out = verify(&cp_file, &empty);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("head.jws") && err.contains("no key with kid"),
        "{err}"
    );

    // Cut the log short: the chain alone still verifies, the checkpoint does not.
    let conn = rusqlite::Connection::open(s.data_dir.join("mandate.db")).unwrap();
    conn.execute("DELETE FROM events WHERE seq > 3", [])
        .unwrap();
    drop(conn);
    let out = verify(&cp_file, &jwks_file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("record {kept_seq}")) && err.contains("truncated"),
        "{err}"
    );
    let no_jwks = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["audit", "verify", "--checkpoint"])
        .arg(&cp_file)
        .output()
        .unwrap();
    assert!(!no_jwks.status.success());
    assert!(String::from_utf8_lossy(&no_jwks.stderr).contains("--jwks"));
}

/// Someone with write access to the database rewrites a record and
/// recomputes every hash after it: the chain alone checks out, but the
/// broker's signed `audit.checkpoint` record, verified with a kept JWKS,
/// exposes the rewrite at the record it signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rewritten_with_fresh_hashes_fails_at_the_chains_signed_checkpoint() {
    let mut s = TestServer::start_with(|c| c.audit_checkpoint_secs = 1).await;
    s.seed().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let signed_seq = loop {
        let found = s
            .events()
            .await
            .into_iter()
            .find(|e| e["kind"] == "audit.checkpoint");
        if let Some(e) = found {
            let detail: serde_json::Value =
                serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            break detail["seq"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (_, jwks) = s.get("/.well-known/jwks.json", None).await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    s.stop().await;

    let db = s.data_dir.join("mandate.db");
    let verify = |jwks: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mandate"));
        c.args(["audit", "verify", "--data-dir"]).arg(&s.data_dir);
        if jwks {
            c.arg("--jwks").arg(&jwks_file);
        }
        c.output().unwrap()
    };
    let before = verify(true);
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );

    // Rewrite record 3 and re-chain everything after it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut events = mandate_store::read_events(&conn, 0, 10_000).unwrap();
    let mut prev = events[1].hash.clone();
    for e in events.iter_mut().skip(2) {
        if e.seq == 3 {
            e.actor = "admin:someone-else".into();
        }
        e.prev_hash = prev.clone();
        e.hash = mandate_audit::record_hash(e);
        prev = e.hash.clone();
        conn.execute(
            "UPDATE events SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![e.actor, e.prev_hash, e.hash, e.seq as i64],
        )
        .unwrap();
    }
    drop(conn);
    assert!(
        verify(false).status.success(),
        "the rewritten chain is consistent on its own"
    );
    let after = verify(true);
    let err = String::from_utf8_lossy(&after.stderr);
    assert!(!after.status.success());
    assert!(
        err.contains(&format!("record {signed_seq}")) && err.contains("checkpoint"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_clear_and_exit_non_zero() {
    let s = TestServer::start().await;
    let s = tokio::task::spawn_blocking(move || {
        let o = mandate(
            &s,
            &["agent", "create", "x", "--owner", "nobody", "--env", "prod"],
            &[],
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("environment") && err.contains("HTTP 400"),
            "{err}"
        );
        let o = mandate(&s, &["agent", "list"], &[("MANDATE_TOKEN", "mdt_nope")]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("admin token is not valid"));
        let o = mandate(
            &s,
            &["agent", "list"],
            &[("MANDATE_ADDR", "http://127.0.0.1:1")],
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach"));
        for (k, v, says) in [
            ("MANDATE_ADDR", "http://[::1", "not a valid URL"),
            ("MANDATE_TOKEN", "x\ny", "characters a token cannot have"),
            (
                "MANDATE_CA_FILE",
                "/nonexistent/ca.pem",
                "--ca-file /nonexistent/ca.pem: cannot read",
            ),
            ("MANDATE_CA_FILE", "Cargo.toml", "no PEM certificate"),
        ] {
            let o = mandate(&s, &["agent", "list"], &[(k, v)]);
            assert!(!o.status.success());
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(says), "{k}: {err}");
        }
        s
    })
    .await
    .unwrap();
    drop(s);
}

#[test]
fn policy_check_validates_files_offline() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.cedar");
    std::fs::write(&good, mandate_policy::DEFAULT_POLICIES).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["policy", "check", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "@id(\"oops\")\npermit(principal, action, resource) when { principal.colour == \"red\" };",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["policy", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("oops") || err.contains("bad.cedar"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_tool_and_secret_from_env_never_printed() {
    let s = TestServer::start().await;
    tokio::task::spawn_blocking(move || {
        run(&s, &["owner", "create", "platform"], &[]);
        let tool = run(
            &s,
            &[
                "--json",
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
                "--upstream",
                "http://127.0.0.1:9",
                "--route",
                "GET /repos/{owner}/{repo}/issues issues:read repo:{owner}/{repo}",
                "--inject",
                "header:X-Api-Key",
            ],
            &[],
        );
        let tool: serde_json::Value = serde_json::from_str(&tool).unwrap();
        assert_eq!(tool["routes"][0]["resource"], "repo:{owner}/{repo}");
        assert_eq!(tool["delivery"]["inject"]["name"], "X-Api-Key");
        let updated = run(
            &s,
            &[
                "--json",
                "tool",
                "update",
                "github",
                "--add-action",
                "pulls:read",
                "--route",
                "GET /repos/{owner}/{repo}/pulls pulls:read repo:{owner}/{repo}",
                "--inject",
                "bearer",
            ],
            &[],
        );
        let updated: serde_json::Value = serde_json::from_str(&updated).unwrap();
        assert_eq!(
            updated["actions"],
            serde_json::json!(["issues:read", "pulls:read"])
        );
        assert_eq!(updated["routes"].as_array().unwrap().len(), 1);
        assert_eq!(updated["routes"][0]["action"], "pulls:read");
        assert_eq!(updated["delivery"]["inject"]["kind"], "bearer");
        assert_eq!(
            updated["upstream"], "http://127.0.0.1:9",
            "untouched flags keep their value"
        );
        let out = run(
            &s,
            &[
                "secret",
                "put",
                "gh-token",
                "--tool",
                "github",
                "--class",
                "tool",
                "--owner",
                "platform",
                "--from-env",
                "GH_KEY",
            ],
            &[("GH_KEY", "ghp_cli_secret_value")],
        );
        let list = run(&s, &["secret", "list"], &[]);
        assert!(list.contains("gh-token"), "{list}");
        for text in [&out, &list] {
            assert!(!text.contains("ghp_cli_secret_value"), "{text}");
        }
        // Errors name the flag and exit non-zero.
        let o = mandate(
            &s,
            &[
                "tool",
                "create",
                "x",
                "--audience",
                "urn:x",
                "--owner",
                "platform",
                "--env",
                "staging",
                "--sensitivity",
                "internal",
                "--action",
                "a:b",
                "--route",
                "GET",
            ],
            &[],
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--route"));
        let o = mandate(
            &s,
            &[
                "secret",
                "put",
                "x",
                "--tool",
                "github",
                "--class",
                "tool",
                "--owner",
                "platform",
                "--from-env",
                "NOT_SET_ANYWHERE",
            ],
            &[],
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--from-env"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_are_created_listed_and_revoked() {
    let s = TestServer::start().await;
    let s = tokio::task::spawn_blocking(move || {
        let token = run(&s, &["admin-token", "create", "--right", "audit"], &[]);
        assert!(token.starts_with("mdt_"), "{token}");
        let listed = run(&s, &["--json", "admin-token", "list"], &[]);
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let id = v["admin_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["rights"] == serde_json::json!(["audit"]))
            .expect("new token listed")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!listed.contains(&token), "list printed a token");
        run(&s, &["audit", "verify"], &[("MANDATE_TOKEN", &token)]);
        assert_eq!(
            run(&s, &["admin-token", "revoke", &id], &[]),
            format!("revoked {id}")
        );
        let o = mandate(&s, &["audit", "verify"], &[("MANDATE_TOKEN", &token)]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("revoked"));
        s
    })
    .await
    .unwrap();
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_created_listed_and_deleted() {
    let s = TestServer::start().await;
    let s = tokio::task::spawn_blocking(move || {
        let secret = run(
            &s,
            &[
                "webhook",
                "create",
                "--url",
                "https://pager.example/mandate",
                "--kind",
                "task.*",
                "--kind",
                "token.misuse",
                "--description",
                "pager",
            ],
            &[],
        );
        assert!(secret.starts_with("whsec_"), "{secret}");
        let listed = run(&s, &["--json", "webhook", "list"], &[]);
        assert!(!listed.contains(&secret), "list printed a secret");
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let hook = &v["webhooks"][0];
        assert_eq!(hook["kinds"], serde_json::json!(["task.*", "token.misuse"]));
        let id = hook["id"].as_str().unwrap().to_owned();
        assert!(run(&s, &["webhook", "list"], &[]).contains(&id));
        assert_eq!(
            run(&s, &["webhook", "delete", &id], &[]),
            format!("deleted {id}")
        );
        let o = mandate(
            &s,
            &[
                "webhook",
                "create",
                "--url",
                "ftp://x.example",
                "--kind",
                "task.*",
            ],
            &[],
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("url"));
        let o = mandate(&s, &["webhook", "delete", &id], &[]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
        s
    })
    .await
    .unwrap();
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_then_revoke_the_old_one() {
    let s = TestServer::start().await;
    let s = tokio::task::spawn_blocking(move || {
        let kids = |s: &TestServer| -> Vec<String> {
            let v: serde_json::Value =
                serde_json::from_str(&run(s, &["--json", "keys", "list"], &[])).unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        let old = kids(&s).remove(0);
        // The current key: refused with the way out, non-zero exit.
        let o = mandate(&s, &["keys", "revoke", &old], &[]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("keys rotate"), "{err}");
        run(&s, &["keys", "rotate"], &[]);
        assert_eq!(kids(&s).len(), 2);
        let out = run(&s, &["keys", "revoke", &old], &[]);
        assert!(out.contains(&old), "{out}");
        assert_eq!(kids(&s).len(), 1);
        assert!(!kids(&s).contains(&old));
        let o = mandate(&s, &["keys", "revoke", &old], &[]);
        assert!(!o.status.success(), "a second time: not found");
        s
    })
    .await
    .unwrap();
    drop(s);
}

/// Names and ids go into URL paths: one that tries to climb out of its
/// collection (`../agents/victim`) is refused before any request, and the
/// resource it aimed at is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_cannot_address_another_resource() {
    let s = TestServer::start().await;
    s.seed().await;
    let s = tokio::task::spawn_blocking(move || {
        for args in [
            &["task", "revoke", "../agents/bot"][..],
            &["secret", "show", "../admin/tokens"],
            &["agent", "show", "bot/../../tools/github"],
            &["tool", "show", "github?x=1"],
            &["admin-token", "revoke", ".."],
            &["task", "list", "--state", "active&agent=bot"],
        ] {
            let o = mandate(&s, args, &[]);
            assert!(!o.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("must be a name or id"), "{args:?}: {err}");
        }
        let agent = run(&s, &["agent", "show", "bot", "--json"], &[]);
        assert!(agent.contains("\"active\""), "{agent}");
        s
    })
    .await
    .unwrap();
    drop(s);
}

/// Whether `program` runs here; says so loudly when it does not.
fn have(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIPPED: `{program}` not found; the key file is not checked with it");
    }
    found
}

/// The key file `mandate agent enroll` writes holds standard PKCS#8 v1
/// PEM that OpenSSL, Python's `cryptography` and Node load as it is (with
/// the client id, algorithm and key id beside it); a file in the earlier
/// format (base64url PKCS#8 v2) still logs in; a file of an unknown
/// format is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_standard_pkcs8_pem_and_old_key_files_still_log_in() {
    use mandate_token::{SigningAlg, SigningKey};
    let s = TestServer::start().await;
    s.seed().await;
    // An agent enrolled the way earlier releases wrote its key file.
    let old_jt = s
        .admin_post(
            "/v1/agents/bot/join-tokens",
            mandate_testkit::serde_json::json!({}),
        )
        .await["join_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (old_key, v2) = SigningKey::generate(SigningAlg::EdDsa).unwrap();
    let (st, v) = s
        .post(
            "/v1/enroll",
            None,
            &mandate_testkit::serde_json::json!({"join_token": old_jt, "jwk": old_key.public_jwk()}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    std::fs::write(
        &old,
        mandate_testkit::serde_json::json!({
            "client_id": v["client_id"], "alg": "EdDSA", "pkcs8": mandate_token::b64(&v2),
        })
        .to_string(),
    )
    .unwrap();
    s.admin_post(
        "/v1/agents",
        mandate_testkit::serde_json::json!({"name": "ec", "owner": "platform", "environment": "staging"}),
    )
    .await;
    let dir_path = dir.path().to_owned();
    let s = tokio::task::spawn_blocking(move || {
        let old = old.to_str().unwrap();
        assert!(run(&s, &["login", "--key-file", old], &[]).contains('.'));
        for (agent, alg) in [("bot", "EdDSA"), ("ec", "ES256")] {
            let jt = run(&s, &["agent", "join-token", agent], &[]);
            let file = dir_path.join(format!("{agent}.json"));
            let f = file.to_str().unwrap();
            run(&s, &["agent", "enroll", "--join-token", &jt, "--key-file", f, "--alg", alg], &[]);
            let v: mandate_testkit::serde_json::Value =
                mandate_testkit::serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(v["alg"], alg);
            assert!(v["client_id"].as_str().unwrap().ends_with(&format!("/agent/{agent}")));
            assert!(v["kid"].is_string() && v.get("pkcs8").is_none(), "{v}");
            let pem = dir_path.join(format!("{agent}.pem"));
            std::fs::write(&pem, v["private_key"].as_str().unwrap()).unwrap();
            let p = pem.to_str().unwrap();
            let loads = [
                ("openssl", vec!["pkey", "-in", p, "-noout"]),
                (
                    "python3",
                    vec![
                        "-c",
                        "import sys; from cryptography.hazmat.primitives.serialization import load_pem_private_key as l; l(open(sys.argv[1],'rb').read(), None)",
                        p,
                    ],
                ),
                (
                    "node",
                    vec!["-e", "require('crypto').createPrivateKey(require('fs').readFileSync(process.argv[1]))", p],
                ),
            ];
            for (program, args) in loads {
                if have(program) {
                    let o = Command::new(program).args(&args).output().unwrap();
                    assert!(
                        o.status.success(),
                        "{program} cannot load the {alg} key: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            }
            assert!(run(&s, &["login", "--key-file", f], &[]).contains('.'));
        }
        // Unknown formats are refused by name, with a non-zero exit.
        let bare = dir_path.join("bot.pem");
        let o = mandate(&s, &["login", "--key-file", bare.to_str().unwrap()], &[]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("is not a Mandate key file"));
        let broken = dir_path.join("broken.json");
        std::fs::write(&broken, r#"{"client_id":"x","alg":"EdDSA","private_key":"nonsense"}"#).unwrap();
        let o = mandate(&s, &["login", "--key-file", broken.to_str().unwrap()], &[]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("private_key") && err.contains("BEGIN PRIVATE KEY"), "{err}");
        s
    })
    .await
    .unwrap();
    drop(s);
}

/// A key file that cannot be created fails the enrolment before the join
/// token is spent: the same token then works with a good path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_fails_before_spending_the_join_token() {
    let s = TestServer::start().await;
    s.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("bot.key");
    let good = good.to_str().unwrap().to_owned();
    let s = tokio::task::spawn_blocking(move || {
        let join = run(&s, &["agent", "join-token", "bot"], &[]);
        let o = mandate(
            &s,
            &[
                "agent",
                "enroll",
                "--join-token",
                &join,
                "--key-file",
                "/nonexistent/dir/k.key",
            ],
            &[],
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir/k.key"));
        let out = run(
            &s,
            &[
                "agent",
                "enroll",
                "--join-token",
                &join,
                "--key-file",
                &good,
            ],
            &[],
        );
        assert!(out.contains("enrolled"), "{out}");
        s
    })
    .await
    .unwrap();
    drop(s);
}

/// `mandate proxy` reads its config before it starts: a bad key is named
/// with a non-zero exit; with a good one it serves, and stops cleanly on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_errors_are_named_and_sigterm_stops_it_cleanly() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |workers: &str| {
        let p = dir.path().join(format!("proxy-{workers}.toml"));
        std::fs::write(
            &p,
            format!(
                "listen = \"127.0.0.1:{port}\"\nbroker = \"{}\"\nspool_dir = \"{}\"\nworker_threads = {workers}\n",
                s.base,
                dir.path().join("spool").display()
            ),
        )
        .unwrap();
        p
    };
    let proxy = |cfg: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mandate"));
        c.args(["proxy", "--config"])
            .arg(cfg)
            .env("MANDATE_PROXY_TOKEN", "mdt_not_checked_at_start");
        c
    };

    let bad = proxy(&config("0")).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("worker_threads") && err.contains("between 1 and 1024"),
        "{err}"
    );

    let mut child = proxy(&config("1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let served = loop {
        if let Ok(r) = reqwest::get(&url).await {
            break r.status();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // SIGTERM (systemd, Kubernetes) stops it gracefully: a clean exit.
    // SAFETY: kill(2) with a pid we spawned and still wait for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = child.wait().unwrap();
    assert!(stopped.success(), "after SIGTERM: {stopped}");
    assert_eq!(served, reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_handed_down_and_shown_as_a_tree() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        run(&s, &["owner", "create", "platform"], &[]);
        for (tool, flags) in [("github", &[][..]), ("payroll", &["--no-delegation"][..])] {
            let aud = format!("https://{tool}.example");
            let mut args = vec![
                "tool",
                "create",
                tool,
                "--audience",
                &aud,
                "--owner",
                "platform",
                "--env",
                "staging",
                "--sensitivity",
                "internal",
                "--action",
                "issues:read",
                "--action",
                "issues:write",
            ];
            args.extend_from_slice(flags);
            run(&s, &args, &[]);
        }
        let mut sessions = Vec::new();
        for agent in ["lead", "helper"] {
            run(
                &s,
                &[
                    "agent", "create", agent, "--owner", "platform", "--env", "staging", "--tool",
                    "github", "--tool", "payroll",
                ],
                &[],
            );
            let jt = run(&s, &["agent", "join-token", agent], &[]);
            let key = dir.path().join(format!("{agent}.key"));
            let key = key.to_str().unwrap();
            run(
                &s,
                &["agent", "enroll", "--join-token", &jt, "--key-file", key],
                &[],
            );
            sessions.push(run(&s, &["login", "--key-file", key], &[]));
        }
        let lead = [("MANDATE_SESSION", sessions[0].as_str())];
        let helper = [("MANDATE_SESSION", sessions[1].as_str())];
        let parent = run(
            &s,
            &[
                "task",
                "create",
                "--intent",
                "release",
                "--scope",
                "github=issues:read,issues:write",
                "--scope",
                "payroll=issues:read",
            ],
            &lead,
        );
        let token = run(
            &s,
            &[
                "token",
                "exchange",
                "--task",
                &parent,
                "--resource",
                "https://github.example",
            ],
            &lead,
        );
        let child = run(
            &s,
            &[
                "task",
                "delegate",
                &parent,
                "--to",
                "helper",
                "--parent-token",
                &token,
                "--scope",
                "github=issues:read",
                "--resources",
                "github=repo:acme/*",
            ],
            &helper,
        );
        assert!(child.starts_with("task_") && child != parent, "{child}");
        let tree = run(&s, &["task", "tree", &parent], &[]);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(
            lines[0].starts_with(&parent) && lines[0].contains("lead"),
            "{tree}"
        );
        assert!(
            lines[1].starts_with(&format!("  {child}  helper  active")),
            "{tree}"
        );
        assert!(
            lines[1].contains("github=issues:read [repo:acme/*]"),
            "{tree}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&run(&s, &["--json", "task", "tree", &parent], &[])).unwrap();
        assert_eq!(json["children"][0]["id"], child.as_str());
        // Named errors, non-zero exit: the wrong --to, a tool that may not
        // be handed on, a scope wider than the parent's.
        for (args, says) in [
            (
                vec!["--to", "lead", "--scope", "github=issues:read"],
                "--to lead",
            ),
            (
                vec!["--to", "helper", "--scope", "payroll=issues:read"],
                "cannot be delegated",
            ),
            (
                vec!["--to", "helper", "--scope", "github=issues:delete"],
                "scope[0].actions[0]",
            ),
        ] {
            let mut full = vec![
                "task",
                "delegate",
                parent.as_str(),
                "--parent-token",
                token.as_str(),
            ];
            full.extend(args);
            let o = mandate(&s, &full, &helper);
            assert!(!o.status.success());
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(says), "{says}: {err}");
        }
        // Revoking the parent takes the child with it.
        let out = run(&s, &["--json", "task", "revoke", &parent], &[]);
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["revoked_subtree"], serde_json::json!([child]));

        // A context switch narrows a task and names the token it cut off.
        let task = run(
            &s,
            &[
                "task",
                "create",
                "--intent",
                "triage",
                "--scope",
                "github=issues:read,issues:write",
            ],
            &lead,
        );
        let writes = run(
            &s,
            &[
                "token",
                "exchange",
                "--task",
                &task,
                "--resource",
                "https://github.example",
            ],
            &lead,
        );
        let out = run(
            &s,
            &[
                "task",
                "rescope",
                &task,
                "--scope",
                "github=issues:read",
                "--intent",
                "only reading",
            ],
            &lead,
        );
        let jti = mandate_testkit::claims(&writes)["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(out, format!("{task}  active\nrevoked token {jti}"));
        let o = mandate(&s, &["task", "rescope", &task, "--scope", "github"], &lead);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("TOOL=ITEM"));
        // Suspended by its agent, resumed by an operator (the server
        // refuses an agent's resume: tested there).
        run(&s, &["task", "suspend", &task], &lead);
        let shown = run(&s, &["--json", "task", "show", &task], &[]);
        assert!(shown.contains("\"suspended\""), "{shown}");
        let out = run(&s, &["--json", "task", "resume", &task], &[]);
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["state"], "active");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_declares_its_model_and_a_change_mid_task_stops_the_task() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        run(&s, &["owner", "create", "platform"], &[]);
        run(
            &s,
            &[
                "tool",
                "create",
                "github",
                "--audience",
                "https://github.example",
                "--owner",
                "platform",
                "--env",
                "staging",
                "--sensitivity",
                "internal",
                "--action",
                "issues:read",
            ],
            &[],
        );
        let agent = run(
            &s,
            &[
                "--json",
                "agent",
                "create",
                "bot",
                "--owner",
                "platform",
                "--env",
                "staging",
                "--tool",
                "github",
                "--model",
                "claude-sonnet-4",
                "--model-version",
                "1",
            ],
            &[],
        );
        assert!(agent.contains("\"model_version\": \"1\""), "{agent}");
        let jt = run(&s, &["agent", "join-token", "bot"], &[]);
        let key = dir.path().join("bot.key");
        let key = key.to_str().unwrap();
        run(
            &s,
            &["agent", "enroll", "--join-token", &jt, "--key-file", key],
            &[],
        );
        let first = run(&s, &["login", "--key-file", key], &[]);
        let task = run(
            &s,
            &[
                "task",
                "create",
                "--intent",
                "triage",
                "--scope",
                "github=issues:read",
            ],
            &[("MANDATE_SESSION", first.as_str())],
        );
        // The next login declares a new version (flag or MANDATE_MODEL_*).
        let next = run(
            &s,
            &["login", "--key-file", key],
            &[
                ("MANDATE_MODEL", "claude-sonnet-4"),
                ("MANDATE_MODEL_VERSION", "2"),
            ],
        );
        let o = mandate(
            &s,
            &[
                "token",
                "exchange",
                "--task",
                &task,
                "--resource",
                "https://github.example",
            ],
            &[("MANDATE_SESSION", next.as_str())],
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("model changed from claude-sonnet-4@1 to claude-sonnet-4@2"),
            "{err}"
        );
        let shown = run(&s, &["--json", "task", "show", &task], &[]);
        assert!(shown.contains("\"suspended\""), "{shown}");
        // A version alone is refused before anything is sent.
        let o = mandate(
            &s,
            &["login", "--key-file", key, "--model-version", "3"],
            &[],
        );
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--model"));
    })
    .await
    .unwrap();
}
