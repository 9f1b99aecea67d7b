//! `mandate run -- COMMAND` against a real server: the command runs under a
//! task of its own with a session and never the admin token; the task ends
//! with the command (completed on 0, revoked otherwise, also when the
//! command is stopped by a forwarded SIGTERM), and its tokens die with it.

use crate::common::ok;
use mandate_testkit::TestServer;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mandate");

fn mandate(s: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("MANDATE_ADDR", &s.base)
        .env("MANDATE_TOKEN", &s.root)
        .env("MANDATE_BIN", BIN)
        .env_remove("MANDATE_SESSION");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn admin(s: &TestServer, args: &[&str]) -> String {
    ok(mandate(s, args, &[]).output().unwrap())
}

/// Owner, tools `github` and `payments` (restricted: its tasks wait for a
/// person's approval), agent `bot` allowed both, with an enrolled key at
/// `key`.
fn agent_with_key(s: &TestServer, key: &Path) {
    admin(s, &["owner", "create", "platform"]);
    admin(
        s,
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
        ],
    );
    admin(
        s,
        &[
            "tool",
            "create",
            "payments",
            "--audience",
            "https://pay.example",
            "--owner",
            "platform",
            "--env",
            "staging",
            "--sensitivity",
            "restricted",
            "--action",
            "charges:read",
        ],
    );
    admin(
        s,
        &[
            "agent", "create", "bot", "--owner", "platform", "--env", "staging", "--tool",
            "github", "--tool", "payments",
        ],
    );
    let jt = admin(s, &["agent", "join-token", "bot"]);
    admin(
        s,
        &[
            "agent",
            "enroll",
            "--join-token",
            &jt,
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
}

/// `f(server, key file, temp dir)` off the async threads, with agent `bot`
/// enrolled on `s`.
async fn with_agent(s: TestServer, f: impl FnOnce(&TestServer, &Path, &Path) + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bot.key");
        agent_with_key(&s, &key);
        f(&s, &key, dir.path());
    })
    .await
    .unwrap();
}

fn task(s: &TestServer, id: &str) -> Value {
    serde_json::from_str(&admin(s, &["--json", "task", "show", id])).unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// `mandate run` of a command that waits (exiting 7 on SIGTERM), once the
/// command has started: the wrapper process and the task id.
fn start_waiting_command(s: &TestServer, key: &Path, dir: &Path) -> (std::process::Child, String) {
    let started = dir.join("task");
    let script = format!(
        "trap 'exit 7' TERM; echo \"$MANDATE_TASK\" > {}; while true; do sleep 0.05; done",
        started.display()
    );
    let run = mandate(
        s,
        &[
            "run",
            "--key-file",
            key.to_str().unwrap(),
            "--intent",
            "long",
            "--scope",
            "github=issues:read",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    for _ in 0..200 {
        if started.exists() && !read(&started).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    (run, read(&started))
}

/// What the command saw and did, written into `out` by a shell script.
const AGENT: &str = r#"out=$1
echo "$MANDATE_TASK" > "$out/task"
echo "${MANDATE_TOKEN:-none}" > "$out/admin_token"
echo "${MANDATE_SESSION:-none}" > "$out/session_var"
echo "$MANDATE_SESSION_FILE" > "$out/session_file"
"$MANDATE_BIN" token exchange --task "$MANDATE_TASK" --resource https://api.github.com > "$out/token" || exit 9
exit "$2""#;

fn run_agent(s: &TestServer, key: &Path, out: &Path, code: &str) -> Output {
    let key = key.to_str().unwrap();
    mandate(
        s,
        &[
            "run",
            "--key-file",
            key,
            "--intent",
            "triage",
            "--scope",
            "github=issues:read",
            "--",
            "sh",
            "-c",
            AGENT,
            "agent",
            out.to_str().unwrap(),
            code,
        ],
        &[],
    )
    .output()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_lives_exactly_as_long_as_the_command() {
    with_agent(TestServer::start().await, |s, key, dir| {
        // Success: the command had a task, a session file and no admin
        // token; its token worked while it ran and is dead now.
        let out = dir.join("ok");
        std::fs::create_dir(&out).unwrap();
        let o = run_agent(s, key, &out, "0");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let id = read(&out.join("task"));
        assert!(id.starts_with("task_"), "{id}");
        assert_eq!(
            read(&out.join("admin_token")),
            "none",
            "the admin token leaked"
        );
        assert_eq!(read(&out.join("session_var")), "none");
        assert!(
            !Path::new(&read(&out.join("session_file"))).exists(),
            "session file left behind"
        );
        let t = task(s, &id);
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["agent"], "bot");
        let token = read(&out.join("token"));
        let intro: Value = serde_json::from_str(&admin(
            s,
            &["--json", "token", "introspect", "--access-token", &token],
        ))
        .unwrap();
        assert_eq!(intro["active"], false, "{intro}");

        // Failure: the command's exit code, and the task revoked.
        let out = dir.join("fail");
        std::fs::create_dir(&out).unwrap();
        let o = run_agent(s, key, &out, "3");
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(task(s, &read(&out.join("task")))["state"], "revoked");

        // A command that cannot start: an error, and its task revoked.
        let o = mandate(
            s,
            &[
                "run",
                "--key-file",
                key.to_str().unwrap(),
                "--intent",
                "x",
                "--scope",
                "github=issues:read",
                "--",
                "/nonexistent/agent",
            ],
            &[],
        )
        .output()
        .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cannot run `/nonexistent/agent`"), "{err}");
        let id = err
            .split_whitespace()
            .find(|w| w.starts_with("task_"))
            .unwrap_or_else(|| panic!("no task id in: {err}"));
        assert_eq!(task(s, id)["state"], "revoked", "{err}");

        // A task the policy refuses: the command never runs.
        let marker = dir.join("ran");
        let o = mandate(
            s,
            &[
                "run",
                "--key-file",
                key.to_str().unwrap(),
                "--intent",
                "x",
                "--scope",
                "github=issues:write",
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
            &[],
        )
        .output()
        .unwrap();
        assert!(!o.status.success());
        assert!(!marker.exists(), "the command ran without a task");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("issues:write"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_the_command_and_the_task_is_revoked() {
    with_agent(TestServer::start().await, |s, key, dir| {
        let (mut run, id) = start_waiting_command(s, key, dir);
        assert_eq!(task(s, &id)["state"], "active");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
        let status = run.wait().unwrap();
        assert_eq!(status.code(), Some(7), "the command's own exit code");
        assert_eq!(task(s, &id)["state"], "revoked");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_bare_session_the_task_ends_before_the_session_does() {
    with_agent(TestServer::start().await, |s, key, dir| {
        let session = admin(s, &["login", "--key-file", key.to_str().unwrap()]);
        let exp = mandate_testkit::claims(&session)["exp"].as_i64().unwrap();
        let out = dir.join("task");
        let o = mandate(
            s,
            &[
                "run",
                "--intent",
                "x",
                "--scope",
                "github=issues:read",
                "--ttl",
                "28000",
                "--",
                "sh",
                "-c",
                "echo \"$MANDATE_TASK\" > \"$1\"",
                "agent",
                out.to_str().unwrap(),
            ],
            &[("MANDATE_SESSION", &session)],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let t = task(s, &read(&out));
        assert_eq!(t["state"], "completed");
        let deadline = t["deadline"].as_i64().unwrap();
        assert!(
            deadline <= exp,
            "task deadline {deadline} after the session's exp {exp}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_task_stops_the_command() {
    with_agent(TestServer::start().await, |s, key, dir| {
        let (run, id) = start_waiting_command(s, key, dir);
        let revoked_at = std::time::Instant::now();
        admin(s, &["task", "revoke", &id]);
        let o = run.wait_with_output().unwrap();
        let took = revoked_at.elapsed();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(7), "{err}");
        assert!(err.contains("is revoked; stopping"), "{err}");
        assert!(err.contains("already revoked"), "{err}");
        // The revocation stream wakes the wrapper at once (it also looks
        // every 2 s); loose bound for a busy CI machine.
        assert!(took < std::time::Duration::from_secs(8), "{took:?}");
        eprintln!("command stopped {took:?} after the revocation");
    })
    .await;
}

/// The session file is renewed before the session expires, and the command
/// can use the new one. (Sessions live at least 60 s, so this waits ~40 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_file_is_renewed_before_it_expires() {
    with_agent(TestServer::start_with(|c| c.session_ttl_secs = 60).await, |s, key, dir| {
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        let script = r#"out=$1
cat "$MANDATE_SESSION_FILE" > "$out/first"
for i in $(seq 1 550); do
  cmp -s "$MANDATE_SESSION_FILE" "$out/first" || break
  sleep 0.1
done
cat "$MANDATE_SESSION_FILE" > "$out/second"
"$MANDATE_BIN" token exchange --task "$MANDATE_TASK" --resource https://api.github.com > "$out/token""#;
        let o = mandate(
            s,
            &[
                "run", "--key-file", key.to_str().unwrap(), "--intent", "renew", "--scope",
                "github=issues:read", "--", "sh", "-c", script, "agent", out.to_str().unwrap(),
            ],
            &[],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (first, second) = (read(&out.join("first")), read(&out.join("second")));
        assert_ne!(first, second, "the session was not renewed within 55 s");
        let claims = |t: &str| mandate_testkit::claims(t);
        assert_eq!(claims(&first)["sub"], claims(&second)["sub"]);
        assert!(claims(&second)["exp"].as_i64() > claims(&first)["exp"].as_i64());
        assert!(read(&out.join("token")).starts_with("ey"), "exchange with the renewed session");
    })
    .await;
}

/// `mandate run` on a held task, until it prints the approval to decide:
/// the wrapper, the approval id, and the file the command would write.
fn run_held(
    s: &TestServer,
    key: &Path,
    ran: &Path,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let mut run = mandate(
        s,
        &[
            "run",
            "--key-file",
            key.to_str().unwrap(),
            "--intent",
            "refund run",
            "--scope",
            "payments=charges:read",
            "--",
            "sh",
            "-c",
            &format!("echo yes > {}", ran.display()),
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = std::io::BufReader::new(run.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("mandate approval approve ") {
            let id = line[at + "mandate approval approve ".len()..]
                .trim()
                .to_owned();
            assert!(id.starts_with("apr_"), "{line}");
            assert!(line.contains("waits for a person's approval"), "{line}");
            // Keep reading: a closed pipe would fail the wrapper's next line.
            let rest = std::thread::spawn(move || {
                lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
            });
            return (run, id, rest);
        }
    }
    let _ = run.kill();
    let _ = run.wait();
    panic!("mandate run never said which approval to decide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_visibly_for_a_person_then_runs_or_gives_up() {
    let s = TestServer::start().await;
    with_agent(s, |s, key, dir| {
        let ran = dir.join("ran");
        let (mut run, id, rest) = run_held(s, key, &ran);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!ran.exists(), "nothing runs before a person approves");
        let shown = admin(s, &["approval", "show", &id]);
        assert!(
            shown.contains("pending") && shown.contains("refund run"),
            "{shown}"
        );
        admin(s, &["approval", "approve", &id, "--note", "ticket 4411"]);
        let ok = run.wait().unwrap().success();
        let said = rest.join().unwrap();
        assert!(ok, "{said}");
        assert!(said.contains(&format!("approval {id} granted")), "{said}");
        assert_eq!(read(&ran), "yes");

        let ran = dir.join("ran-again");
        let (mut run, id, rest) = run_held(s, key, &ran);
        admin(s, &["approval", "deny", &id, "--note", "not today"]);
        assert!(!run.wait().unwrap().success(), "a denial fails the run");
        let said = rest.join().unwrap();
        assert!(
            said.contains("denied") && said.contains("not today"),
            "{said}"
        );
        assert!(!ran.exists(), "the command never ran");
        // Bad durations are refused before anything is sent.
        let o = mandate(s, &["approval", "approve", &id, "--for=-5m"], &[])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("negative"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_egress_proxy_the_command_tunnels_through_the_proxy_with_its_tasks_token() {
    with_agent(TestServer::start().await, |s, key, dir| {
        let out = dir.join("proxy");
        let script = format!(
            "echo \"$HTTPS_PROXY\" > {0}; echo \"$https_proxy\" >> {0}; echo \"${{HTTP_PROXY:-none}}\" >> {0}; echo \"$NO_PROXY\" >> {0}; echo \"$MANDATE_TASK\" >> {0}",
            out.display()
        );
        let o = mandate(
            s,
            &[
                "run",
                "--key-file",
                key.to_str().unwrap(),
                "--intent",
                "fetch through the egress proxy",
                "--scope",
                "github=issues:read",
                "--egress-proxy",
                "http://127.0.0.1:8401",
                "--egress-resource",
                "https://api.github.com",
                "--",
                "sh",
                "-c",
                &script,
            ],
            &[("NO_PROXY", "localhost")],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let seen = read(&out);
        let lines: Vec<&str> = seen.lines().collect();
        let [https, https_lower, http, no_proxy, task] = lines[..] else {
            panic!("{seen}");
        };
        assert_eq!(https, https_lower);
        let token = https
            .strip_prefix("http://mandate:")
            .and_then(|r| r.strip_suffix("@127.0.0.1:8401"))
            .unwrap_or_else(|| panic!("HTTPS_PROXY is {https}"));
        let claims = mandate_testkit::claims(token);
        assert_eq!(claims["txn"], task, "a token of the command's own task");
        assert_eq!(claims["aud"], "https://api.github.com");
        assert_eq!(http, "none", "the egress listener takes only CONNECT");
        assert_eq!(no_proxy, "localhost,127.0.0.1", "the broker stays direct");
        assert_eq!(self::task(s, task)["state"], "completed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_egress_proxy_is_refused_before_any_task_opens() {
    with_agent(TestServer::start().await, |s, key, _| {
        let o = mandate(
            s,
            &[
                "run",
                "--key-file",
                key.to_str().unwrap(),
                "--intent",
                "x",
                "--scope",
                "github=issues:read",
                "--egress-proxy",
                "https://127.0.0.1:8401",
                "--egress-resource",
                "https://api.github.com",
                "--",
                "true",
            ],
            &[],
        )
        .output()
        .unwrap();
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--egress-proxy must be http://host:port")
        );
        let tasks = admin(s, &["--json", "task", "list"]);
        assert!(!tasks.contains("task_"), "{tasks}");
    })
    .await;
}
