//! Admin verbs: owners, agents, tools, policy, keys, admin tokens.

use crate::client::{Client, path_segment};
use crate::output;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum OwnerCmd {
    /// Register an owner: a team, a service, or (for prototypes and
    /// exceptions) a person, who may not own a production agent alone.
    Create {
        name: String,
        /// team, service or person.
        #[arg(long, default_value = "team")]
        kind: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List owners.
    List,
}

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Register an agent: spiffe://<trust-domain>/agent/<NAME>.
    Create {
        name: String,
        #[arg(long)]
        owner: String,
        /// sandbox, staging or production.
        #[arg(long = "env")]
        environment: String,
        /// A tool the agent may ever ask for (repeatable).
        #[arg(long = "tool")]
        tools: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// The model the agent runs on (its sessions declare it unless a
        /// login names another).
        #[arg(long)]
        model: Option<String>,
        /// The model's version.
        #[arg(long, requires = "model")]
        model_version: Option<String>,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show {
        #[arg(value_parser = path_segment)]
        name: String,
    },
    /// Revoke an agent: its sessions and every task it has die now.
    Revoke {
        #[arg(value_parser = path_segment)]
        name: String,
    },
    /// Issue a one-time join token (≤ 1 h) with which the agent enrols its key.
    JoinToken {
        #[arg(value_parser = path_segment)]
        name: String,
        #[arg(long, default_value_t = 600)]
        ttl: u32,
    },
    /// Map a federated identity (issuer + subject [+ claims]) to the agent.
    Bind {
        #[arg(value_parser = path_segment)]
        name: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
        /// Extra claim that must match exactly, as NAME=VALUE (repeatable).
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
    /// (Agent side) generate a key pair, enrol its public half with a join token,
    /// and save the private half to --key-file (mode 0600).
    Enroll {
        #[arg(long, env = "MANDATE_JOIN_TOKEN", hide_env_values = true)]
        join_token: String,
        /// Where to write the key file: JSON with `client_id`, `alg`, `kid` and
        /// `private_key`, a PKCS#8 v1 PEM that OpenSSL, Node and Python load as
        /// it is (`jq -r .private_key F | openssl pkey`). Must not exist yet.
        #[arg(long)]
        key_file: PathBuf,
        /// EdDSA, ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
    },
}

// Parsed once per process: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ToolCmd {
    /// Register a tool.
    Create {
        name: String,
        /// Audience URI (RFC 8707 resource), e.g. https://api.github.com.
        #[arg(long)]
        audience: String,
        #[arg(long)]
        owner: String,
        #[arg(long = "env")]
        environment: String,
        /// public, internal, confidential or restricted.
        #[arg(long)]
        sensitivity: String,
        /// Longest credential lifetime for this tool, seconds.
        #[arg(long, default_value_t = 900)]
        max_ttl: u32,
        /// An action the tool has, e.g. issues:read (repeatable; with
        /// --engine, its role names by default).
        #[arg(long = "action", required_unless_present = "engine")]
        actions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Base URL the proxy forwards to, e.g. https://api.github.com.
        #[arg(long)]
        upstream: Option<String>,
        /// A JSON file describing a dynamic-credential engine, e.g.
        /// {"kind": "postgres", "roles": [{"name": "readonly", "member_of": ["app_read"]}]}:
        /// tasks get a login per task instead of a shared secret (needs the
        /// `secrets` right; store the engine's admin DSN as the tool's secret).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["upstream", "reveal"])]
        engine: Option<std::path::PathBuf>,
        /// A proxy route: "METHOD PATH ACTION [RESOURCE]", e.g.
        /// "GET /repos/{owner}/{repo}/issues issues:read repo:{owner}/{repo}" (repeatable; first match wins).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// How the proxy injects the secret: bearer, header:NAME[:PREFIX], basic:USERNAME or query:PARAM.
        #[arg(long, default_value = "bearer", conflicts_with = "reveal")]
        inject: String,
        /// Flagged exception: hand the secret to active tasks instead of injecting it.
        #[arg(long)]
        reveal: bool,
        /// Tasks holding this tool cannot hand it to a sub-agent.
        #[arg(long)]
        no_delegation: bool,
        /// A host besides the upstream's that a task may tunnel to through
        /// the proxy's egress listener (reveal tools only): NAME[:PORT],
        /// *.DOMAIN[:PORT] or an IP; port 443 by default (repeatable).
        #[arg(long = "egress-host", requires = "reveal")]
        egress_hosts: Vec<String>,
    },
    /// Change a tool; flags not given keep their value. Name, audience,
    /// owner and environment are fixed; actions can only be added.
    Update {
        #[arg(value_parser = path_segment)]
        name: String,
        #[arg(long)]
        sensitivity: Option<String>,
        #[arg(long)]
        max_ttl: Option<u32>,
        /// Add an action (repeatable).
        #[arg(long = "add-action")]
        add_actions: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        upstream: Option<String>,
        /// Replace every route with these (repeatable), as for create.
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Switch to injecting: bearer, header:NAME[:PREFIX], basic:USERNAME or query:PARAM.
        #[arg(long, conflicts_with = "reveal")]
        inject: Option<String>,
        /// Switch to the flagged reveal exception.
        #[arg(long)]
        reveal: bool,
        /// Forbid handing this tool to a sub-agent.
        #[arg(long, conflicts_with = "allow_delegation")]
        no_delegation: bool,
        /// Allow handing this tool to a sub-agent again.
        #[arg(long)]
        allow_delegation: bool,
        /// Replace the egress hosts with these (repeatable), as for create.
        #[arg(long = "egress-host", conflicts_with = "no_egress_hosts")]
        egress_hosts: Vec<String>,
        /// Remove every egress host.
        #[arg(long)]
        no_egress_hosts: bool,
    },
    /// List tools.
    List,
    /// Show one tool.
    Show {
        #[arg(value_parser = path_segment)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate Cedar policy files against the schema (offline).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Schema file; defaults to the built-in Mandate schema.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Show the server's loaded policy ids.
    Show,
    /// Reload the server's policy directory now.
    Reload,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// List the published signing keys (JWKS).
    List,
    /// Add a new signing key; the old one stays published until its tokens expire.
    Rotate,
    /// Withdraw a retired key at once (it leaked): unpublished, deleted, and
    /// every token it signed refused by the broker and, through the
    /// revocation feed, by proxies. Rotate first if it is the current key.
    Revoke {
        /// The key's `kid` (see `mandate keys list`). A kid is base64url and
        /// may start with `-`: it is taken as the value, not an option.
        #[arg(value_parser = path_segment, allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Subcommand)]
pub enum AdminTokenCmd {
    /// Create an admin token with some rights (needs the root token).
    Create {
        /// agents, tools, tasks, audit, policy, secrets, proxy, verify,
        /// metrics, approve, breakglass or webhooks (repeatable).
        #[arg(long = "right", required = true)]
        rights: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<u32>,
        /// Issue the token to this agent (a supervising agent acting as
        /// approver): it can never approve that agent's requests nor those
        /// of agents with the same owner.
        #[arg(long, value_parser = path_segment)]
        agent: Option<String>,
    },
    /// List admin tokens: id, rights, description, expiry, revocation (never the token).
    List,
    /// Revoke an admin token by id (`adm_…`); it fails on its next use.
    /// The last live root token cannot be revoked.
    Revoke {
        #[arg(value_parser = path_segment)]
        id: String,
    },
}

fn parse_routes(texts: &[String]) -> Result<Vec<Value>> {
    texts.iter().map(|r| parse_route(r)).collect()
}

/// `"GET /repos/{owner}/{repo}/issues issues:read repo:{owner}/{repo}"`.
fn parse_route(text: &str) -> Result<Value> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    match parts.as_slice() {
        [method, path, action] => Ok(json!({"method": method, "path": path, "action": action})),
        [method, path, action, resource] => {
            Ok(json!({"method": method, "path": path, "action": action, "resource": resource}))
        }
        _ => bail!("--route `{text}`: expected \"METHOD PATH ACTION [RESOURCE]\""),
    }
}

/// `bearer`, `header:NAME[:PREFIX]`, `basic:USERNAME`, `query:PARAM`.
fn parse_inject(text: &str) -> Result<Value> {
    let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
    Ok(match (kind, rest) {
        ("bearer", "") => json!({"kind": "bearer"}),
        ("header", r) if !r.is_empty() => {
            let (name, prefix) = r.split_once(':').unwrap_or((r, ""));
            json!({"kind": "header", "name": name, "prefix": prefix})
        }
        ("basic", u) if !u.is_empty() => json!({"kind": "basic", "username": u}),
        ("query", p) if !p.is_empty() => json!({"kind": "query", "param": p}),
        _ => bail!(
            "--inject `{text}`: expected bearer, header:NAME[:PREFIX], basic:USERNAME or query:PARAM"
        ),
    })
}

fn show(v: &Value, as_json: bool) {
    if as_json {
        output::json(v)
    } else {
        output::record(v)
    }
}

pub async fn owner(c: &Client, cmd: OwnerCmd, as_json: bool) -> Result<()> {
    c.require_token("owner")?;
    match cmd {
        OwnerCmd::Create {
            name,
            kind,
            description,
        } => show(
            &c.post(
                "/v1/owners",
                &json!({"name": name, "kind": kind, "description": description}),
            )
            .await?,
            as_json,
        ),
        OwnerCmd::List => {
            let v = c.get("/v1/owners").await?;
            if as_json {
                output::json(&v)
            } else {
                output::table(
                    v["owners"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[("name", "/name"), ("description", "/description")],
                )
            }
        }
    }
    Ok(())
}

pub async fn agent(c: &Client, cmd: AgentCmd, as_json: bool) -> Result<()> {
    if let AgentCmd::Enroll {
        join_token,
        key_file,
        alg,
    } = cmd
    {
        return crate::agent_side::enroll(c, &join_token, &key_file, &alg, as_json).await;
    }
    c.require_token("agent")?;
    let v = match cmd {
        AgentCmd::Create { name, owner, environment, tools, description, model, model_version } => {
            c.post(
                "/v1/agents",
                &json!({"name": name, "owner": owner, "environment": environment, "allowed_tools": tools,
                        "description": description, "model": model, "model_version": model_version}),
            )
            .await?
        }
        AgentCmd::List => {
            let v = c.get("/v1/agents").await?;
            if !as_json {
                output::table(
                    v["agents"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[("name", "/name"), ("environment", "/environment"), ("owner", "/owner"), ("state", "/state"), ("tools", "/allowed_tools"), ("spiffe id", "/spiffe_id")],
                );
                return Ok(());
            }
            v
        }
        AgentCmd::Show { name } => c.get(&format!("/v1/agents/{name}")).await?,
        AgentCmd::Revoke { name } => c.post(&format!("/v1/agents/{name}/revoke"), &json!({})).await?,
        AgentCmd::JoinToken { name, ttl } => {
            let v = c.post(&format!("/v1/agents/{name}/join-tokens"), &json!({"ttl_secs": ttl})).await?;
            if !as_json {
                println!("{}", v["join_token"].as_str().unwrap_or_default());
                eprintln!("single use, expires at {} (unix); give it to the agent's first boot only", v["expires_at"]);
                return Ok(());
            }
            v
        }
        AgentCmd::Bind { name, issuer, subject, claims } => {
            let mut map = serde_json::Map::new();
            for c in claims {
                let (k, v) = c.split_once('=').with_context(|| format!("--claim `{c}` must be NAME=VALUE"))?;
                map.insert(k.to_owned(), json!(v));
            }
            c.post(&format!("/v1/agents/{name}/bindings"), &json!({"issuer": issuer, "subject": subject, "claims": map}))
                .await?
        }
        AgentCmd::Enroll { .. } => unreachable!("handled above"),
    };
    show(&v, as_json);
    Ok(())
}

pub async fn tool(c: &Client, cmd: ToolCmd, as_json: bool) -> Result<()> {
    c.require_token("tool")?;
    let v = match cmd {
        ToolCmd::Create {
            name,
            audience,
            owner,
            environment,
            sensitivity,
            max_ttl,
            actions,
            description,
            upstream,
            engine,
            routes,
            inject,
            reveal,
            no_delegation,
            egress_hosts,
        } => {
            let routes = parse_routes(&routes)?;
            let engine: Option<Value> = match &engine {
                None => None,
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("--engine: cannot read {}", p.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("--engine: {} is not JSON", p.display()))?,
                    )
                }
            };
            let mut actions = actions;
            if actions.is_empty()
                && let Some(e) = &engine
            {
                actions = e["roles"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x["name"].as_str().or(x.as_str()).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            let delivery = if reveal {
                json!({"mode": "reveal"})
            } else {
                json!({"mode": "inject", "inject": parse_inject(&inject)?})
            };
            c.post(
                "/v1/tools",
                &json!({"name": name, "audience": audience, "owner": owner, "environment": environment,
                        "sensitivity": sensitivity, "max_ttl_secs": max_ttl, "actions": actions, "description": description,
                        "upstream": upstream, "routes": routes, "delivery": delivery,
                        "no_delegation": no_delegation, "egress_hosts": egress_hosts, "engine": engine}),
            )
            .await?
        }
        ToolCmd::Update {
            name,
            sensitivity,
            max_ttl,
            add_actions,
            description,
            upstream,
            routes,
            inject,
            reveal,
            no_delegation,
            allow_delegation,
            egress_hosts,
            no_egress_hosts,
        } => {
            let mut tool = c.get(&format!("/v1/tools/{name}")).await?;
            if let Some(o) = tool.as_object_mut() {
                o.remove("created_at");
            }
            if let Some(s) = sensitivity {
                tool["sensitivity"] = json!(s);
            }
            if let Some(t) = max_ttl {
                tool["max_ttl_secs"] = json!(t);
            }
            if let Some(actions) = tool["actions"].as_array_mut() {
                actions.extend(add_actions.into_iter().map(Value::from));
            }
            if let Some(d) = description {
                tool["description"] = json!(d);
            }
            if let Some(u) = upstream {
                tool["upstream"] = json!(u);
            }
            if !routes.is_empty() {
                tool["routes"] = json!(parse_routes(&routes)?);
            }
            if reveal {
                tool["delivery"] = json!({"mode": "reveal"});
            } else if let Some(i) = inject {
                tool["delivery"] = json!({"mode": "inject", "inject": parse_inject(&i)?});
            }
            if no_delegation || allow_delegation {
                tool["no_delegation"] = json!(no_delegation);
            }
            if no_egress_hosts || !egress_hosts.is_empty() {
                tool["egress_hosts"] = json!(egress_hosts);
            }
            c.put(&format!("/v1/tools/{name}"), &tool).await?
        }
        ToolCmd::List => {
            let v = c.get("/v1/tools").await?;
            if !as_json {
                output::table(
                    v["tools"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[
                        ("name", "/name"),
                        ("audience", "/audience"),
                        ("environment", "/environment"),
                        ("sensitivity", "/sensitivity"),
                        ("max ttl", "/max_ttl_secs"),
                        ("actions", "/actions"),
                    ],
                );
                return Ok(());
            }
            v
        }
        ToolCmd::Show { name } => c.get(&format!("/v1/tools/{name}")).await?,
    };
    show(&v, as_json);
    Ok(())
}

pub async fn policy(c: &Client, cmd: PolicyCmd, as_json: bool) -> Result<()> {
    match cmd {
        PolicyCmd::Check { files, schema } => {
            let schema = match schema {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => mandate_policy::DEFAULT_SCHEMA.to_owned(),
            };
            let mut sources = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                sources.push((f.display().to_string(), text));
            }
            let set = mandate_policy::PolicySet::from_sources(&schema, &sources)?;
            if as_json {
                output::json(&json!({"valid": true, "policies": set.policy_ids()}));
            } else {
                println!(
                    "ok: {} policies valid against the schema: {}",
                    set.policy_count(),
                    set.policy_ids().join(", ")
                );
            }
        }
        PolicyCmd::Show => {
            c.require_token("policy show")?;
            show(&c.get("/v1/policy").await?, as_json)
        }
        PolicyCmd::Reload => {
            c.require_token("policy reload")?;
            show(&c.post("/v1/policy/reload", &json!({})).await?, as_json)
        }
    }
    Ok(())
}

pub async fn keys(c: &Client, cmd: KeysCmd, as_json: bool) -> Result<()> {
    match cmd {
        KeysCmd::List => {
            let v = c.get("/.well-known/jwks.json").await?;
            if as_json {
                output::json(&v)
            } else {
                output::table(
                    v["keys"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    &[("kid", "/kid"), ("alg", "/alg"), ("kty", "/kty")],
                )
            }
        }
        KeysCmd::Rotate => {
            c.require_token("keys rotate")?;
            show(&c.post("/v1/keys/rotate", &json!({})).await?, as_json)
        }
        KeysCmd::Revoke { kid } => {
            c.require_token("keys revoke")?;
            show(
                &c.post(&format!("/v1/keys/{kid}/revoke"), &json!({}))
                    .await?,
                as_json,
            )
        }
    }
    Ok(())
}

pub async fn admin_token(c: &Client, cmd: AdminTokenCmd, as_json: bool) -> Result<()> {
    c.require_token("admin-token")?;
    let (rights, description, ttl, agent) = match cmd {
        AdminTokenCmd::Create {
            rights,
            description,
            ttl,
            agent,
        } => (rights, description, ttl, agent),
        AdminTokenCmd::List => {
            let v = c.get("/v1/admin/tokens").await?;
            if as_json {
                output::json(&v);
            } else {
                output::table(
                    v["admin_tokens"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                    &[
                        ("id", "/id"),
                        ("rights", "/rights"),
                        ("live", "/live"),
                        ("description", "/description"),
                        ("expires at", "/expires_at"),
                        ("revoked at", "/revoked_at"),
                    ],
                );
            }
            return Ok(());
        }
        AdminTokenCmd::Revoke { id } => {
            let v = c
                .post(&format!("/v1/admin/tokens/{id}/revoke"), &json!({}))
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!("revoked {}", v["id"].as_str().unwrap_or_default());
            }
            return Ok(());
        }
    };
    if rights.is_empty() {
        bail!("--right is required");
    }
    let v = c
        .post(
            "/v1/admin/tokens",
            &json!({"rights": rights, "description": description, "ttl_secs": ttl, "agent": agent}),
        )
        .await?;
    if as_json {
        output::json(&v);
    } else {
        println!("{}", v["token"].as_str().unwrap_or_default());
        eprintln!(
            "id {} with rights {}; shown once, stored only as a hash",
            v["id"], v["rights"]
        );
    }
    Ok(())
}
