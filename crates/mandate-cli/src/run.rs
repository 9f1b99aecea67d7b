//! `mandate run -- COMMAND`: one agent process under one task. Logs the
//! agent in, opens the task, runs the command with the task id and a
//! session kept fresh in a private file (never the admin token), and ends
//! the task when the command exits: completed on success, revoked
//! otherwise, so every grant under it dies with the process. And the other
//! way round: a task that ends first (revoked, expired) stops the command.

use crate::agent_side::{Credential, ModelFlags, TaskRequest, log_in};
use crate::client::Client;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// Key file written by `mandate agent enroll` (private_key_jwt login).
    #[arg(long, conflicts_with = "jwt_file")]
    key_file: Option<PathBuf>,
    /// File holding a workload JWT (re-read at each login, so a rotated
    /// projected token is picked up).
    #[arg(long)]
    jwt_file: Option<PathBuf>,
    /// Without --key-file or --jwt-file: a session from `mandate login`.
    /// It cannot be renewed, so the task is cut to the session's lifetime.
    #[arg(long, env = "MANDATE_SESSION", hide_env_values = true)]
    session: Option<String>,
    #[command(flatten)]
    task: TaskRequest,
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    egress: crate::egress::EgressArgs,
    #[command(flatten)]
    db: crate::db::DbArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// A session with this many seconds left is renewed before use.
const MIN_LEFT_SECS: u64 = 10;

/// Renew a session after two thirds of its lifetime.
fn renew_after(lifetime_secs: u64) -> Duration {
    Duration::from_secs((lifetime_secs * 2 / 3).max(1))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The current session and when it expires (unix seconds).
#[derive(Clone)]
struct Current {
    token: String,
    expires_at: u64,
}

fn from_login(v: &Value) -> Result<Current> {
    Ok(Current {
        token: v["access_token"]
            .as_str()
            .context("no access_token in the login response")?
            .to_owned(),
        expires_at: unix_now() + v["expires_in"].as_u64().unwrap_or(60),
    })
}

/// A directory only this user can enter, holding the session file.
struct SessionDir(PathBuf);

impl SessionDir {
    fn create() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "mandate-run-{}",
            hex::encode(mandate_token::random_bytes::<8>())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(SessionDir(path))
    }

    fn file(&self) -> PathBuf {
        self.0.join("session")
    }

    fn write(&self, token: &str) -> Result<()> {
        write_session(&self.0, token)
    }
}

/// Replace `dir/session` whole (a reader never sees half a token), 0600.
fn write_session(dir: &Path, token: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join("session.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(token.as_bytes())?;
    std::fs::rename(&tmp, dir.join("session")).context("replacing the session file")?;
    Ok(())
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the command under a task of its own; its exit code.
pub async fn under_task(c: &Client, a: RunArgs) -> Result<u8> {
    a.egress.check()?;
    a.db.check()?;
    let credential = Credential::from_flags(a.key_file, None, a.jwt_file, a.model);
    let first = match (&credential, &a.session) {
        (Some(cr), _) => from_login(&log_in(c, cr).await?)?,
        (None, Some(s)) => Current {
            token: s.clone(),
            expires_at: crate::agent_side::unverified_exp(s)
                .context("MANDATE_SESSION is not a session token (no `exp`)")?,
        },
        (None, None) => {
            bail!("log the agent in: --key-file, --jwt-file, or a session in MANDATE_SESSION")
        }
    };
    let mut request = a.task;
    if credential.is_none() {
        // Nothing to renew it with: the task must end while the session
        // can still end it.
        let left = first.expires_at.saturating_sub(unix_now() + MIN_LEFT_SECS);
        if left == 0 {
            bail!("MANDATE_SESSION has expired or is about to; log in again");
        }
        let left = u32::try_from(left).unwrap_or(u32::MAX);
        request.ttl = Some(request.ttl.map_or(left, |t| t.min(left)));
    }
    let body = request.body()?;
    // Before the task exists, so that no failure here leaves one open.
    let dir = SessionDir::create()?;
    dir.write(&first.token)?;
    let task = c
        .with_token(Some(first.token.clone()))
        .post("/v1/tasks", &body)
        .await?;
    let id = task["id"]
        .as_str()
        .context("no task id in the answer")?
        .to_owned();
    let current = Arc::new(Mutex::new(first));
    // Kept fresh from here on: waiting for a person may outlast a session.
    let renewer = credential.as_ref().map(|cr| {
        tokio::spawn(keep_fresh(
            c.with_token(None),
            cr.clone(),
            current.clone(),
            dir.0.clone(),
        ))
    });
    let mut task = task;
    if task["state"] == "pending_approval" {
        let session = || {
            current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .token
                .clone()
        };
        match crate::approvals::wait_for_task(c, &task, session).await {
            Ok(now) => task = now,
            Err(e) => {
                let _ = end(c, &current, credential.as_ref(), &id, false).await;
                bail!("{e:#}; `{}` was not run", a.command[0]);
            }
        }
    }
    if task["state"] != "active" {
        let state = task["state"].as_str().unwrap_or("?").to_owned();
        // Nobody will use it: a later approval must not wake it up.
        let _ = end(c, &current, credential.as_ref(), &id, false).await;
        bail!(
            "task {id} is {state}, not active; `{}` was not run",
            a.command[0]
        );
    }
    eprintln!(
        "mandate run: task {id} active until {} (unix); running `{}`",
        task["deadline"], a.command[0]
    );

    let deadline = task["deadline"].as_u64().unwrap_or(u64::MAX);
    let session = current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .token
        .clone();
    let egress_env = match a.egress.env(c, &session, &id, deadline).await {
        Ok(env) => env,
        Err(e) => {
            let _ = end(c, &current, credential.as_ref(), &id, false).await;
            return Err(e.context(format!("`{}` was not run; task {id} revoked", a.command[0])));
        }
    };
    let db_env = match a.db.env(c, &session, &id).await {
        Ok(env) => env,
        Err(e) => {
            let _ = end(c, &current, credential.as_ref(), &id, false).await;
            return Err(e.context(format!("`{}` was not run; task {id} revoked", a.command[0])));
        }
    };
    let mut child = match tokio::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .env("MANDATE_ADDR", &c.base)
        .env("MANDATE_TASK", &id)
        .env("MANDATE_SESSION_FILE", dir.file())
        .envs(egress_env)
        .envs(db_env)
        // The agent gets its own session, never the operator's powers.
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_SESSION")
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let ended = match end(c, &current, credential.as_ref(), &id, false).await {
                Ok(outcome) => format!("task {id} {outcome}"),
                Err(e) => format!("{e:#}"),
            };
            bail!("cannot run `{}`: {e}; {ended}", a.command[0]);
        }
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let follower = tokio::spawn(crate::revocations::follow(
        c.with_token(None),
        id.clone(),
        task["agent"].as_str().unwrap_or_default().to_owned(),
        wake.clone(),
    ));
    let watch = Watch {
        c,
        current: &current,
        id: &id,
        deadline,
        wake: &wake,
    };
    let waited = wait_forwarding_signals(&mut child, &watch, &a.command[0]).await;
    follower.abort();
    if let Some(r) = renewer {
        r.abort();
    }
    drop(dir);
    // Whatever went wrong while waiting, the task still ends.
    let code = match waited {
        Ok(code) => code,
        Err(e) => {
            let _ = child.start_kill();
            let _ = end(c, &current, credential.as_ref(), &id, false).await;
            return Err(e);
        }
    };
    let outcome = end(c, &current, credential.as_ref(), &id, code == 0).await?;
    eprintln!(
        "mandate run: `{}` exited with {code}; task {id} {outcome}",
        a.command[0]
    );
    Ok(code)
}

/// Renew the session before it expires and rewrite the command's file in `dir`.
async fn keep_fresh(c: Client, credential: Credential, current: Arc<Mutex<Current>>, dir: PathBuf) {
    loop {
        let expires_at = current.lock().unwrap_or_else(|p| p.into_inner()).expires_at;
        let lifetime = expires_at.saturating_sub(unix_now());
        tokio::time::sleep(renew_after(lifetime)).await;
        let renewed = async {
            let next = from_login(&log_in(&c, &credential).await?)?;
            write_session(&dir, &next.token)?;
            *current.lock().unwrap_or_else(|p| p.into_inner()) = next;
            anyhow::Ok(())
        };
        if let Err(e) = renewed.await {
            eprintln!("mandate run: renewing the session failed ({e:#}); retrying in 5s");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// How often the wrapper asks whether the task is still active, besides
/// asking at once when the revocation stream names the task or its agent.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How long a command has to exit after SIGTERM once its task ended.
const GRACE: Duration = Duration::from_secs(10);

/// The task being watched while its command runs.
struct Watch<'a> {
    c: &'a Client,
    current: &'a Mutex<Current>,
    id: &'a str,
    deadline: u64,
    /// Woken by the revocation stream.
    wake: &'a tokio::sync::Notify,
}

impl Watch<'_> {
    /// The task's state if it is no longer active. A broker that cannot be
    /// asked is not taken as an end (the tokens' own checks fail closed).
    async fn ended(&self) -> Option<String> {
        if unix_now() >= self.deadline {
            return Some("expired".into());
        }
        let token = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .token
            .clone();
        let t = self
            .c
            .with_token(Some(token))
            .get(&format!("/v1/tasks/{}", self.id))
            .await
            .ok()?;
        let state = t["state"].as_str()?;
        (state != "active").then(|| state.to_owned())
    }
}

/// Wait for the child. SIGTERM and SIGHUP sent to `mandate run` go to the
/// command; SIGINT does not (a terminal sends it to both already), but it
/// no longer kills the wrapper before the task is ended. If the task ends
/// first (revoked, expired), the command gets SIGTERM, then SIGKILL after
/// a grace period: nothing outlives its mandate.
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
    watch: &Watch<'_>,
    command: &str,
) -> Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<std::time::Instant> = None;
    let pid = child.id().map(|p| p as libc::pid_t);
    let forward = |sig| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with a pid we spawned and still wait for.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig)
            };
        }
    };
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.context("waiting for the command")?,
            _ = term.recv() => forward(libc::SIGTERM),
            _ = hup.recv() => forward(libc::SIGHUP),
            _ = int.recv() => {}
            _ = watch.wake.notified(), if stopping.is_none() => {
                stopping = stop_if_ended(watch, command, &forward).await;
            }
            _ = tick.tick() => match stopping {
                Some(since) if since.elapsed() >= GRACE => forward(libc::SIGKILL),
                Some(_) => {}
                None => stopping = stop_if_ended(watch, command, &forward).await,
            },
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (None, None) => 1,
    })
}

/// If the task has ended, tell the command to stop (SIGTERM) and say so;
/// returns when that was.
async fn stop_if_ended(
    watch: &Watch<'_>,
    command: &str,
    forward: &impl Fn(libc::c_int),
) -> Option<std::time::Instant> {
    let state = watch.ended().await?;
    eprintln!(
        "mandate run: task {} is {state}; stopping `{command}` (SIGTERM, SIGKILL after {}s)",
        watch.id,
        GRACE.as_secs()
    );
    forward(libc::SIGTERM);
    Some(std::time::Instant::now())
}

/// Complete (success) or revoke the task, renewing the session first if
/// it is about to expire; a few tries. A task that already ended (expired,
/// revoked by an admin) is fine. What happened, in words.
async fn end(
    c: &Client,
    current: &Mutex<Current>,
    credential: Option<&Credential>,
    id: &str,
    success: bool,
) -> Result<String> {
    let verb = if success { "complete" } else { "revoke" };
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut now = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if now.expires_at < unix_now() + MIN_LEFT_SECS
            && let Some(cr) = credential
        {
            match log_in(c, cr).await.and_then(|v| from_login(&v)) {
                Ok(next) => now = next,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            }
        }
        let as_agent = c.with_token(Some(now.token));
        match as_agent
            .post(&format!("/v1/tasks/{id}/{verb}"), &json!({}))
            .await
        {
            Ok(v) => return Ok(v["state"].as_str().unwrap_or(verb).to_owned()),
            Err(e) => {
                if let Ok(t) = as_agent.get(&format!("/v1/tasks/{id}")).await
                    && t["state"] != "active"
                    && t["state"] != "pending_approval"
                {
                    return Ok(format!(
                        "already {}",
                        t["state"].as_str().unwrap_or("ended")
                    ));
                }
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| anyhow::anyhow!("no attempt made"));
    Err(e.context(format!(
        "could not {verb} task {id}; it stays active until its deadline (revoke it with `mandate task revoke {id}`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_renewed_after_two_thirds_of_their_life() {
        assert_eq!(renew_after(900), Duration::from_secs(600));
        assert_eq!(renew_after(60), Duration::from_secs(40));
        assert_eq!(renew_after(0), Duration::from_secs(1), "never a busy loop");
    }

    #[test]
    fn the_session_file_is_private_replaced_whole_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = SessionDir::create().unwrap();
        let root = dir.0.clone();
        dir.write("one").unwrap();
        dir.write("two").unwrap();
        assert_eq!(std::fs::read_to_string(dir.file()).unwrap(), "two");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.file()), 0o600);
        drop(dir);
        assert!(!root.exists());
    }
}
