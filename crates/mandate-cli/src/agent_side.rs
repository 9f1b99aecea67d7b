//! What an agent (or an admin on its behalf) does: enrol a key, log in,
//! open tasks, exchange a session for tool tokens, check and revoke them.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mandate_token::{SigningAlg, SigningKey, b64_decode, jwt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The agent's key file (mode 0600), in the shape of a cloud
/// service-account key: JSON naming the client id, the algorithm and the
/// key id, with the private key as standard PKCS#8 v1 PEM, which OpenSSL,
/// Node's crypto, Python's `cryptography` and JOSE libraries load as it is.
/// Files from before (`pkcs8`: base64url PKCS#8 v2) are still read.
#[derive(serde::Serialize, serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    client_id: String,
    #[zeroize(skip)]
    alg: SigningAlg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs8: Option<String>,
}

impl KeyFile {
    fn read(path: &Path) -> Result<(KeyFile, SigningKey)> {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a Mandate key file (JSON with client_id, alg and private_key): {e}",
                path.display()
            )
        })?;
        let der = match (&file.private_key, &file.pkcs8) {
            (Some(pem), _) => mandate_token::pem::pkcs8_from_pem(pem)
                .with_context(|| format!("{}: private_key", path.display()))?,
            (None, Some(old)) => zeroize::Zeroizing::new(
                b64_decode(old)
                    .with_context(|| format!("{}: pkcs8 is not base64url", path.display()))?,
            ),
            (None, None) => bail!("{}: the key file has no private_key", path.display()),
        };
        let key = SigningKey::from_pkcs8(file.alg, &der)
            .with_context(|| format!("{}: the key is not a {} key", path.display(), file.alg))?;
        Ok((file, key))
    }
}

/// Create the key file (mode 0600) before anything else, so a path that
/// cannot be written fails before the join token is spent.
fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

pub async fn enroll(
    c: &Client,
    join_token: &str,
    key_file: &Path,
    alg: &str,
    as_json: bool,
) -> Result<()> {
    use std::io::Write;
    let alg: SigningAlg = alg
        .parse()
        .map_err(|_| anyhow::anyhow!("--alg must be EdDSA, ES256 or RS256"))?;
    let mut file = create_private(key_file)?;
    let enrolled = async {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        let v = c
            .with_token(None)
            .post(
                "/v1/enroll",
                &json!({"join_token": join_token, "jwk": key.public_jwk()}),
            )
            .await?;
        let client_id = v["client_id"]
            .as_str()
            .context("server response lacks client_id")?
            .to_owned();
        let pem = mandate_token::pem::pkcs8_to_pem(&key.to_pkcs8_v1()?);
        drop(pkcs8);
        let saved = KeyFile {
            client_id: client_id.clone(),
            alg,
            kid: Some(key.kid.clone()),
            private_key: Some(pem.to_string()),
            pkcs8: None,
        };
        file.write_all(&serde_json::to_vec_pretty(&saved)?)?;
        file.sync_all()?;
        anyhow::Ok((v, client_id))
    }
    .await;
    let (v, client_id) = match enrolled {
        Ok(ok) => ok,
        Err(e) => {
            let _ = std::fs::remove_file(key_file);
            return Err(e);
        }
    };
    if as_json {
        output::json(&v);
    } else {
        println!(
            "enrolled {client_id}; private key saved to {} (0600)",
            key_file.display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct LoginArgs {
    /// Key file written by `mandate agent enroll` (private_key_jwt login).
    #[arg(long, conflicts_with_all = ["jwt", "jwt_file"])]
    key_file: Option<PathBuf>,
    /// A workload JWT from a trusted issuer (Kubernetes, CI, SPIRE).
    #[arg(long, conflicts_with = "jwt_file")]
    jwt: Option<String>,
    /// File holding the workload JWT (e.g. a projected service-account token).
    #[arg(long)]
    jwt_file: Option<PathBuf>,
    /// Print `export MANDATE_SESSION=…` instead of the bare token.
    #[arg(long)]
    export: bool,
    #[command(flatten)]
    model: ModelFlags,
}

/// The model the agent declares at login (the session carries it; a
/// task records what it started under, and a change mid-task is decided
/// by policy, by default suspending the task).
#[derive(Args, Clone, Default)]
pub struct ModelFlags {
    /// The model this agent runs on (default: the agent's record).
    #[arg(long, env = "MANDATE_MODEL")]
    model: Option<String>,
    /// Its version.
    #[arg(long, env = "MANDATE_MODEL_VERSION", requires = "model")]
    model_version: Option<String>,
}

impl ModelFlags {
    /// The login form's `model` and `model_version`, as declared.
    fn form(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(m) = &self.model {
            out.push(("model", m.as_str()));
        }
        if let Some(v) = &self.model_version {
            out.push(("model_version", v.as_str()));
        }
        out
    }
}

async fn token_endpoint(c: &Client) -> Result<String> {
    let meta = c
        .with_token(None)
        .get("/.well-known/oauth-authorization-server")
        .await?;
    Ok(meta["token_endpoint"]
        .as_str()
        .context("metadata lacks token_endpoint")?
        .to_owned())
}

/// How an agent proves who it is at login, and the model it declares.
#[derive(Clone)]
pub struct Credential {
    proof: Proof,
    model: ModelFlags,
}

#[derive(Clone)]
enum Proof {
    /// An enrolled key (`private_key_jwt`).
    KeyFile(PathBuf),
    /// A workload JWT, given or read from a file (re-read at every login,
    /// so a rotated projected token is picked up).
    Jwt(String),
    JwtFile(PathBuf),
}

impl Credential {
    pub fn from_flags(
        key_file: Option<PathBuf>,
        jwt: Option<String>,
        jwt_file: Option<PathBuf>,
        model: ModelFlags,
    ) -> Option<Credential> {
        let proof = match (key_file, jwt, jwt_file) {
            (Some(k), _, _) => Proof::KeyFile(k),
            (None, Some(j), _) => Proof::Jwt(j),
            (None, None, Some(f)) => Proof::JwtFile(f),
            (None, None, None) => return None,
        };
        Some(Credential { proof, model })
    }
}

/// Log in: the token endpoint's answer (`access_token`, `expires_in`).
pub async fn log_in(c: &Client, credential: &Credential) -> Result<Value> {
    let anon = c.with_token(None);
    let model = credential.model.form();
    let jwt = match &credential.proof {
        Proof::KeyFile(path) => {
            let (file, key) = KeyFile::read(path)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let assertion = jwt::encode(
                &key,
                "client-authentication+jwt",
                &json!({
                    "iss": file.client_id, "sub": file.client_id, "aud": token_endpoint(c).await?,
                    "iat": now, "exp": now + 60, "jti": hex::encode(mandate_token::random_bytes::<16>()),
                }),
            )?;
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_id", file.client_id.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ];
            form.extend(model);
            return anon.post_form("/oauth/token", &form).await;
        }
        Proof::Jwt(j) => j.clone(),
        Proof::JwtFile(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned(),
    };
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", jwt.as_str()),
    ];
    form.extend(model);
    anon.post_form("/oauth/token", &form).await
}

pub async fn login(c: &Client, a: LoginArgs, as_json: bool) -> Result<()> {
    let Some(credential) = Credential::from_flags(a.key_file, a.jwt, a.jwt_file, a.model) else {
        bail!("pass --key-file (enrolled key) or --jwt/--jwt-file (workload token)")
    };
    let v = log_in(c, &credential).await?;
    let token = v["access_token"]
        .as_str()
        .context("no access_token in response")?;
    if as_json {
        output::json(&v);
    } else if a.export {
        println!("export MANDATE_SESSION={token}");
    } else {
        println!("{token}");
        eprintln!(
            "identity session, expires in {}s; it grants no tool access by itself",
            v["expires_in"]
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Ask for a mandate. With --session the agent asks for itself; with an
    /// admin token, name the agent with --agent.
    Create {
        #[command(flatten)]
        request: TaskRequest,
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        session: Session,
    },
    /// List tasks (an agent sees its own).
    List {
        #[arg(long, value_parser = path_segment)]
        agent: Option<String>,
        /// pending_approval, active, completed, revoked, expired or denied.
        #[arg(long, value_parser = path_segment)]
        state: Option<String>,
        #[command(flatten)]
        session: Session,
    },
    /// Show a task, then its anomaly findings (with an admin token that
    /// has the audit or tasks right).
    Show {
        #[arg(value_parser = path_segment)]
        id: String,
        #[command(flatten)]
        session: Session,
    },
    /// Mark a task done: every grant under it dies.
    Complete {
        #[arg(value_parser = path_segment)]
        id: String,
        #[command(flatten)]
        session: Session,
    },
    /// Revoke a task: every grant under it, and every task delegated below
    /// it, dies now.
    Revoke {
        #[arg(value_parser = path_segment)]
        id: String,
        #[command(flatten)]
        session: Session,
    },
    /// Pause a task: its tokens are revoked and every task delegated below
    /// it ends. Only an operator can resume it.
    Suspend {
        #[arg(value_parser = path_segment)]
        id: String,
        #[command(flatten)]
        session: Session,
    },
    /// Let a suspended task go on (operators only, with the admin token).
    /// Its old tokens stay revoked; the agent exchanges for new ones.
    Resume {
        #[arg(value_parser = path_segment)]
        id: String,
    },
    /// Switch a live task to a new scope (and intent). Narrowing cuts off
    /// at once every token and delegated task outside the new scope;
    /// anything wider is decided by policy like a new task.
    #[command(
        after_help = "Example:\n  mandate task rescope task_… --scope github=issues:read --intent \"only reading now\""
    )]
    Rescope {
        #[arg(value_parser = path_segment)]
        id: String,
        /// TOOL=ACTION[,ACTION…] (repeatable): the whole new scope.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// TOOL=RESOURCE[,RESOURCE…] narrowing a tool to resources.
        #[arg(long = "resources")]
        resources: Vec<String>,
        /// The new intent (default: unchanged).
        #[arg(long)]
        intent: Option<String>,
        #[command(flatten)]
        session: Session,
    },
    /// Take part of another agent's task: run as the receiving agent (its
    /// session), with an access token of the parent task that its agent
    /// handed over. The child's scope lies inside the parent's, its
    /// deadline no later. Prints the child task's id.
    Delegate {
        /// The parent task.
        #[arg(value_parser = path_segment)]
        parent: String,
        /// The receiving agent: must be the session's.
        #[arg(long, value_parser = path_segment)]
        to: String,
        /// An access token of the parent task (the parent agent's consent).
        #[arg(long, env = "MANDATE_PARENT_TOKEN", hide_env_values = true)]
        parent_token: String,
        /// TOOL=ACTION[,ACTION…] (repeatable), within the parent's scope.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// TOOL=RESOURCE[,RESOURCE…]: only narrower than the parent's.
        #[arg(long = "resources")]
        resources: Vec<String>,
        /// Lifetime in seconds (default: what the parent has left).
        #[arg(long)]
        ttl: Option<u32>,
        /// Default: the parent's intent.
        #[arg(long)]
        intent: Option<String>,
        #[command(flatten)]
        session: Session,
    },
    /// Print a task and every task delegated below it, indented: each
    /// node's id, agent, state, deadline and scope.
    Tree {
        #[arg(value_parser = path_segment)]
        id: String,
        #[command(flatten)]
        session: Session,
    },
}

#[derive(Args)]
pub struct Session {
    /// Agent session (from `mandate login`); used instead of the admin token.
    #[arg(long, env = "MANDATE_SESSION", hide_env_values = true)]
    session: Option<String>,
    /// File holding the agent session, read at each use (`mandate run`
    /// keeps one fresh for the command it runs).
    #[arg(long, env = "MANDATE_SESSION_FILE", conflicts_with = "session")]
    session_file: Option<PathBuf>,
}

impl Session {
    /// The session, if one was given (directly or as a file).
    fn token(&self) -> Result<Option<String>> {
        if let Some(s) = &self.session {
            return Ok(Some(s.clone()));
        }
        let Some(path) = &self.session_file else {
            return Ok(None);
        };
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("reading the session file {}", path.display()))?;
        Ok(Some(s.trim().to_owned()))
    }

    fn client(&self, c: &Client) -> Result<Client> {
        Ok(match self.token()? {
            Some(s) => c.with_token(Some(s)),
            // No session: act with the admin token, if any.
            None => c.with_token(c.token_clone()),
        })
    }
}

fn parse_pairs(list: &[String], flag: &str) -> Result<Vec<(String, Vec<String>)>> {
    list.iter()
        .map(|s| {
            let (tool, rest) = s
                .split_once('=')
                .with_context(|| format!("{flag} `{s}` must be TOOL=ITEM[,ITEM…]"))?;
            Ok((
                tool.to_owned(),
                rest.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ))
        })
        .collect()
}

/// What a task asks for, as flags (`task create`, `run`).
#[derive(Args)]
pub struct TaskRequest {
    /// What the work is for, in words a reviewer understands.
    #[arg(long)]
    intent: String,
    /// TOOL=ACTION[,ACTION…] (repeatable), e.g. github=issues:read.
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// TOOL=RESOURCE[,RESOURCE…] narrowing a tool to resources (default `*`).
    #[arg(long = "resources")]
    resources: Vec<String>,
    /// Lifetime in seconds (server default 900).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// Who asked for this work (a person or system, for the audit trail).
    #[arg(long)]
    requested_by: Option<String>,
}

impl TaskRequest {
    /// The body of `POST /v1/tasks`.
    pub fn body(&self) -> Result<Value> {
        let scope = scope_items(&self.scopes, &self.resources)?;
        let mut body = json!({"intent": self.intent, "scope": scope});
        if let Some(t) = self.ttl {
            body["ttl_secs"] = json!(t);
        }
        if let Some(r) = &self.requested_by {
            body["requested_by"] = json!(r);
        }
        Ok(body)
    }
}

/// A scope from `--scope TOOL=ACTIONS` and `--resources TOOL=RESOURCES`.
fn scope_items(scopes: &[String], resources: &[String]) -> Result<Vec<Value>> {
    let resources = parse_pairs(resources, "--resources")?;
    Ok(parse_pairs(scopes, "--scope")?
        .into_iter()
        .map(|(tool, actions)| {
            let mut item = json!({"tool": tool, "actions": actions});
            if let Some((_, r)) = resources.iter().find(|(t, _)| *t == tool) {
                item["resources"] = json!(r);
            }
            item
        })
        .collect())
}

/// `mandate task tree`: one line per task, indented by depth.
fn print_tree(node: &Value, depth: usize) {
    let scope: Vec<String> = node["scope"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let list = |k: &str| {
                i[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{}={} [{}]",
                i["tool"].as_str().unwrap_or("?"),
                list("actions"),
                list("resources")
            )
        })
        .collect();
    println!(
        "{}{}  {}  {}  until {}  {}",
        "  ".repeat(depth),
        node["id"].as_str().unwrap_or("?"),
        node["agent"].as_str().unwrap_or("?"),
        node["state"].as_str().unwrap_or("?"),
        node["deadline"],
        scope.join(" ")
    );
    for child in node["children"].as_array().into_iter().flatten() {
        print_tree(child, depth + 1);
    }
}

pub async fn task(c: &Client, cmd: TaskCmd, as_json: bool) -> Result<()> {
    let v = match cmd {
        TaskCmd::Create {
            request,
            agent,
            session,
        } => {
            let mut body = request.body()?;
            if let Some(a) = agent {
                body["agent"] = json!(a);
            }
            let v = session.client(c)?.post("/v1/tasks", &body).await?;
            if !as_json {
                println!("{}", v["id"].as_str().unwrap_or_default());
                eprintln!(
                    "task {} until {} (unix)",
                    v["state"].as_str().unwrap_or_default(),
                    v["deadline"]
                );
                return Ok(());
            }
            v
        }
        TaskCmd::List {
            agent,
            state,
            session,
        } => {
            let mut q = vec![];
            if let Some(a) = agent {
                q.push(format!("agent={a}"));
            }
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            let v = session
                .client(c)?
                .get(&format!("/v1/tasks?{}", q.join("&")))
                .await?;
            if !as_json {
                output::table(
                    v["tasks"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("agent", "/agent"),
                        ("state", "/state"),
                        ("deadline", "/deadline"),
                        ("intent", "/intent"),
                    ],
                );
                return Ok(());
            }
            v
        }
        TaskCmd::Show { id, session } => {
            let v = session.client(c)?.get(&format!("/v1/tasks/{id}")).await?;
            if !as_json {
                output::record(&v);
                crate::anomalies::section(&session.client(c)?, &id).await;
                return Ok(());
            }
            v
        }
        TaskCmd::Complete { id, session } => {
            session
                .client(c)?
                .post(&format!("/v1/tasks/{id}/complete"), &json!({}))
                .await?
        }
        TaskCmd::Revoke { id, session } => {
            session
                .client(c)?
                .post(&format!("/v1/tasks/{id}/revoke"), &json!({}))
                .await?
        }
        TaskCmd::Suspend { id, session } => {
            session
                .client(c)?
                .post(&format!("/v1/tasks/{id}/suspend"), &json!({}))
                .await?
        }
        TaskCmd::Resume { id } => {
            c.post(&format!("/v1/tasks/{id}/resume"), &json!({}))
                .await?
        }
        TaskCmd::Rescope {
            id,
            scopes,
            resources,
            intent,
            session,
        } => {
            let mut body = json!({"scope": scope_items(&scopes, &resources)?});
            if let Some(i) = intent {
                body["intent"] = json!(i);
            }
            let v = session
                .client(c)?
                .post(&format!("/v1/tasks/{id}/rescope"), &body)
                .await?;
            if !as_json {
                println!("{id}  {}", v["state"].as_str().unwrap_or("?"));
                for (what, key) in [("token", "revoked_tokens"), ("task", "revoked_subtree")] {
                    for x in v[key].as_array().into_iter().flatten() {
                        println!("revoked {what} {}", x.as_str().unwrap_or("?"));
                    }
                }
                return Ok(());
            }
            v
        }
        TaskCmd::Delegate {
            parent,
            to,
            parent_token,
            scopes,
            resources,
            ttl,
            intent,
            session,
        } => {
            let Some(token) = session.token()? else {
                bail!(
                    "task delegate runs as the receiving agent: set MANDATE_SESSION (its session from `mandate login`)"
                );
            };
            let me = unverified_claim(&token, "sub").unwrap_or_default();
            if me.rsplit('/').next() != Some(to.as_str()) {
                bail!(
                    "--to {to}: the session is `{me}`'s; the receiving agent asks with its own session"
                );
            }
            let mut body =
                json!({"subject_token": parent_token, "scope": scope_items(&scopes, &resources)?});
            if let Some(t) = ttl {
                body["ttl_secs"] = json!(t);
            }
            if let Some(i) = intent {
                body["intent"] = json!(i);
            }
            let v = session
                .client(c)?
                .post(&format!("/v1/tasks/{parent}/delegate"), &body)
                .await?;
            if !as_json {
                println!("{}", v["id"].as_str().unwrap_or_default());
                eprintln!(
                    "task {} for {to} until {} (unix), depth {}",
                    v["state"].as_str().unwrap_or_default(),
                    v["deadline"],
                    v["delegation"]["chain"].as_array().map_or(0, Vec::len)
                );
                return Ok(());
            }
            v
        }
        TaskCmd::Tree { id, session } => {
            let v = session
                .client(c)?
                .get(&format!("/v1/tasks/{id}/tree"))
                .await?;
            if !as_json {
                print_tree(&v, 0);
                return Ok(());
            }
            v
        }
    };
    if as_json {
        output::json(&v)
    } else {
        output::record(&v)
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Exchange the agent's session for one tool's access token (RFC 8693).
    Exchange {
        #[arg(long)]
        task: String,
        /// The tool's audience URI (RFC 8707).
        #[arg(long)]
        resource: String,
        /// Space-separated actions (default: all the task allows on this tool).
        #[arg(long)]
        scope: Option<String>,
        /// Ask for a shorter lifetime, seconds.
        #[arg(long)]
        ttl: Option<u32>,
        #[command(flatten)]
        session: Session,
    },
    /// Ask the broker whether this token may do ACTION on RESOURCE now, as a
    /// gateway would (MANDATE_TOKEN: an admin token with the `verify` right).
    Authorize {
        #[arg(
            long = "access-token",
            env = "MANDATE_ACCESS_TOKEN",
            hide_env_values = true
        )]
        access_token: String,
        /// Ask as this resource server (its tool's audience URI); a token
        /// minted for another audience is denied. Default: the token's own
        /// `aud`, read without verifying (the broker verifies).
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
        #[arg(long = "env")]
        environment: Option<String>,
        #[arg(long)]
        data_sensitivity: Option<String>,
    },
    /// RFC 7662 introspection (admin token or the agent's session).
    Introspect {
        #[arg(
            long = "access-token",
            env = "MANDATE_ACCESS_TOKEN",
            hide_env_values = true
        )]
        access_token: String,
        #[command(flatten)]
        session: Session,
    },
    /// RFC 7009 revocation of one token (admin token or the agent's session).
    Revoke {
        #[arg(
            long = "access-token",
            env = "MANDATE_ACCESS_TOKEN",
            hide_env_values = true
        )]
        access_token: String,
        #[command(flatten)]
        session: Session,
    },
}

/// RFC 8693: the agent's session for an access token of `task` at the
/// tool whose audience is `resource`; the token endpoint's answer.
pub async fn exchange(
    c: &Client,
    session: &str,
    task: &str,
    resource: &str,
    scope: Option<&str>,
    ttl: Option<u32>,
) -> Result<Value> {
    let ttl = ttl.map(|t| t.to_string());
    let mut form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", session),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("task_id", task),
        ("resource", resource),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    if let Some(t) = &ttl {
        form.push(("requested_ttl", t));
    }
    c.with_token(None).post_form("/oauth/token", &form).await
}

pub async fn token(c: &Client, cmd: TokenCmd, as_json: bool) -> Result<()> {
    let v = match cmd {
        TokenCmd::Exchange {
            task,
            resource,
            scope,
            ttl,
            session,
        } => {
            let Some(session) = session.token()? else {
                bail!(
                    "an agent session is needed: --session, MANDATE_SESSION or MANDATE_SESSION_FILE (from `mandate login`)"
                )
            };
            let v = exchange(c, &session, &task, &resource, scope.as_deref(), ttl).await?;
            if !as_json {
                println!("{}", v["access_token"].as_str().unwrap_or_default());
                eprintln!(
                    "scope `{}`, expires in {}s",
                    v["scope"].as_str().unwrap_or_default(),
                    v["expires_in"]
                );
                return Ok(());
            }
            v
        }
        TokenCmd::Authorize {
            access_token,
            audience,
            action,
            resource,
            environment,
            data_sensitivity,
        } => {
            let audience = match audience {
                Some(a) => a,
                None => unverified_claim(&access_token, "aud")
                    .context("--access-token is not a JWT with an `aud`; pass --audience")?,
            };
            let mut body = json!({"token": access_token, "audience": audience,
                                  "action": action, "resource": resource});
            if let Some(e) = environment {
                body["environment"] = json!(e);
            }
            if let Some(d) = data_sensitivity {
                body["data_sensitivity"] = json!(d);
            }
            c.require_token("token authorize (an admin token with the `verify` right)")?;
            let v = c.post("/v1/authorize", &body).await?;
            if !as_json {
                // `deny <code>`: the same code the proxy answers with.
                match v["code"].as_str() {
                    Some(code) => println!("{} {code}", v["decision"].as_str().unwrap_or_default()),
                    None => println!("{}", v["decision"].as_str().unwrap_or_default()),
                }
                for r in v["reasons"].as_array().into_iter().flatten() {
                    println!("  {}", r.as_str().unwrap_or_default());
                }
                return Ok(());
            }
            v
        }
        TokenCmd::Introspect {
            access_token,
            session,
        } => {
            session
                .client(c)?
                .post_form("/oauth/introspect", &[("token", &access_token)])
                .await?
        }
        TokenCmd::Revoke {
            access_token,
            session,
        } => {
            session
                .client(c)?
                .post_form("/oauth/revoke", &[("token", &access_token)])
                .await?;
            if !as_json {
                println!("revoked (if the token was valid and yours to revoke)");
                return Ok(());
            }
            json!({})
        }
    };
    if as_json {
        output::json(&v)
    } else {
        output::record(&v)
    }
    Ok(())
}

/// A session's `exp`, read without verifying it (the broker verifies).
pub fn unverified_exp(token: &str) -> Option<u64> {
    let payload = b64_decode(token.split('.').nth(1)?)?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims["exp"].as_u64()
}

/// A string claim of a compact JWT, read without verifying it.
fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let payload = b64_decode(token.split('.').nth(1)?)?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims[name].as_str().map(str::to_owned)
}
