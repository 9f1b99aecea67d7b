//! PostgreSQL logins per task. Issue sends the role's creation statements
//! as one message, which PostgreSQL runs as one transaction (all or
//! nothing: no half-made role), with the password as its SCRAM-SHA-256
//! verifier (see [`crate::scram`]): the password itself stays in the
//! broker and the agent. Revoke commits the first revocation
//! statement on its own (by default `NOLOGIN`: the door shuts before any
//! session is ended), then runs the rest as one transaction (end its
//! sessions, reassign and drop what it owns, drop it). The role's `VALID
//! UNTIL` is the task's deadline, so even an unreachable broker cannot keep
//! a login past it. Every login is made with a comment naming its role
//! (`COMMENT ON ROLE … IS 'mandate role=<role>'`, in the same transaction),
//! so one found at the source without a lease row can be destroyed by its
//! own role's revocation. Admin connections stay open for reuse, at most
//! [`MAX_OPEN`] at once; a caller beyond that waits for one.

use crate::scram;
use crate::template::{self, Inputs, quote_ident, quote_literal};
use crate::{Engine, EngineError, IssueRequest, Issued, LOGIN_PREFIX, MadeLogin, Prepared};
use async_trait::async_trait;
use mandate_core::{DbRole, TaskId};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

/// Admin connections open at once (each a PostgreSQL backend): enough for
/// the broker's parallel revoker and a burst of issues, few enough that a
/// busy broker cannot exhaust `max_connections`.
pub const MAX_OPEN: usize = 16;
/// The longest a caller waits for a connection, or for one to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The admin connections' `application_name`.
pub const APPLICATION_NAME: &str = "mandate engine";
/// No admin statement may hold a connection longer than this.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

const DEFAULT_REVOCATION: [&str; 5] = [
    "ALTER ROLE {{name}} NOLOGIN",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {{name_literal}}",
    "REASSIGN OWNED BY {{name}} TO CURRENT_USER",
    "DROP OWNED BY {{name}}",
    "DROP ROLE IF EXISTS {{name}}",
];

/// What a login's comment begins with; the role's name follows.
const ROLE_MARK: &str = "mandate role=";

struct Role {
    creation: Vec<String>,
    revocation: Vec<String>,
}

pub struct PostgresEngine {
    admin: Config,
    /// TLS whenever the server offers it, verified (`mandate_pg_connect`).
    tls: mandate_pg_connect::Connector,
    /// Where a login connects: host, port, database (from the admin DSN).
    host: String,
    port: u16,
    database: String,
    roles: BTreeMap<String, Role>,
    idle: Mutex<Vec<Client>>,
    open: Semaphore,
    spare: Arc<Spare>,
}

/// Passwords with their verifiers made ahead, while the broker has time,
/// so an issue does not wait for 4,096 rounds of HMAC. One not yet used is
/// a random string no role has.
struct Spare {
    made: Mutex<Vec<(SecretString, SecretString)>>,
    filling: AtomicBool,
}

/// How many the spare holds.
const SPARE: usize = 4;

impl Spare {
    /// Refill in the background, one filler at a time.
    fn top_up(self: &Arc<Self>) {
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let spare = self.clone();
        tokio::task::spawn_blocking(move || {
            while spare.made.lock().unwrap_or_else(|p| p.into_inner()).len() < SPARE {
                match password_and_verifier() {
                    Ok(pair) => spare
                        .made
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(pair),
                    Err(_) => break,
                }
            }
            spare.filling.store(false, Ordering::Release);
        });
    }
}

/// A fresh random password and its verifier with a fresh salt.
fn password_and_verifier() -> Result<(SecretString, SecretString), EngineError> {
    let password = crate::http::random_token();
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| EngineError::Internal("the system RNG failed".into()))?;
    let verifier = scram::verifier(&password, &salt);
    Ok((SecretString::from(password), SecretString::from(verifier)))
}

/// A connection lent to one caller; its permit counts it as open.
struct Admin<'a> {
    client: Client,
    _permit: SemaphorePermit<'a>,
}

/// The role's statements: the operator's, or the defaults (a login in the
/// role's groups, valid until the deadline). Every template is checked.
fn statements(r: &DbRole) -> Result<Role, EngineError> {
    let mut creation = if r.creation.is_empty() {
        let mut c = vec![
            "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{valid_until}}"
                .to_owned(),
        ];
        for g in &r.member_of {
            c.push(format!("GRANT {} TO {{{{name}}}}", quote_ident(g)?));
        }
        c
    } else {
        r.creation.clone()
    };
    // Last, so it holds for the operator's templates too.
    creation.push(format!(
        "COMMENT ON ROLE {{{{name}}}} IS {}",
        quote_literal(&format!("{ROLE_MARK}{}", r.name))?
    ));
    let revocation = if r.revocation.is_empty() {
        DEFAULT_REVOCATION.iter().map(|s| s.to_string()).collect()
    } else {
        r.revocation.clone()
    };
    for t in creation.iter().chain(&revocation) {
        template::check(t)?;
    }
    Ok(Role {
        creation,
        revocation,
    })
}

/// The certificates of an engine's `ca_pem` (checked at tool registration).
pub fn check_ca(
    pem: &str,
) -> Result<Vec<mandate_pg_connect::CertificateDer<'static>>, EngineError> {
    mandate_pg_connect::roots_from_pem(pem).map_err(|e| EngineError::Refused(e.to_string()))
}

/// Check a role list's templates (at tool registration).
pub fn check_roles(roles: &[DbRole]) -> Result<(), (usize, EngineError)> {
    for (i, r) in roles.iter().enumerate() {
        statements(r).map_err(|e| (i, e))?;
    }
    Ok(())
}

fn unreachable(e: tokio_postgres::Error) -> EngineError {
    EngineError::Unreachable(mandate_pg_connect::with_sources(&e))
}

/// The server's message, never the statement (which may hold a password).
fn refused(e: tokio_postgres::Error) -> EngineError {
    match e.as_db_error() {
        Some(db) => {
            EngineError::Refused(format!("{} (SQLSTATE {})", db.message(), db.code().code()))
        }
        None if e.is_closed() => EngineError::Unreachable(e.to_string()),
        None => EngineError::Refused(e.to_string()),
    }
}

/// `2026-12-07 18:00:00+00` for `VALID UNTIL`.
fn timestamp(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Percent-encode a URL's user or password part (RFC 3986 unreserved kept).
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl PostgresEngine {
    /// `admin_dsn` is the tool's secret: a role with `CREATEROLE` (and
    /// membership of the groups it grants). `ca_pem`: certificates trusted
    /// for the server's beside the public web roots.
    pub fn new(
        admin_dsn: &SecretString,
        roles: &[DbRole],
        ca_pem: Option<&str>,
    ) -> Result<Self, EngineError> {
        let mut admin = Config::from_str(admin_dsn.expose_secret()).map_err(|_| {
            EngineError::Refused("the admin DSN does not parse (its text is not shown)".into())
        })?;
        admin.connect_timeout(CONNECT_TIMEOUT);
        // What a DBA sees in `pg_stat_activity`, unless the DSN names one.
        if admin.get_application_name().is_none() {
            admin.application_name(APPLICATION_NAME);
        }
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(EngineError::Refused(
                    "the admin DSN must name a TCP host".into(),
                ));
            }
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        let database = admin
            .get_dbname()
            .or(admin.get_user())
            .unwrap_or("postgres")
            .to_owned();
        let roles = roles
            .iter()
            .map(|r| Ok((r.name.clone(), statements(r)?)))
            .collect::<Result<_, EngineError>>()?;
        let roots = match ca_pem {
            Some(pem) => check_ca(pem)?,
            None => Vec::new(),
        };
        let tls = mandate_pg_connect::connector(mandate_pg_connect::PostgresTls {
            roots,
            client: None,
        })
        .map_err(|e| EngineError::Refused(e.to_string()))?;
        Ok(PostgresEngine {
            admin,
            tls,
            host,
            port,
            database,
            roles,
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(MAX_OPEN),
            spare: Arc::new(Spare {
                made: Mutex::new(Vec::with_capacity(SPARE)),
                filling: AtomicBool::new(false),
            }),
        })
    }

    /// An idle connection, or a new one. A connection that fails mid-use
    /// is dropped (closed), never put back.
    async fn connect(&self) -> Result<Admin<'_>, EngineError> {
        let permit = tokio::time::timeout(CONNECT_TIMEOUT, self.open.acquire())
            .await
            .map_err(|_| {
                EngineError::Unreachable(format!(
                    "all {MAX_OPEN} admin connections stayed busy for {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|_| EngineError::Unreachable("the engine is shutting down".into()))?;
        loop {
            let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                break;
            };
            if !c.is_closed() {
                return Ok(Admin {
                    client: c,
                    _permit: permit,
                });
            }
        }
        let (client, conn) = self
            .admin
            .connect(self.tls.clone())
            .await
            .map_err(unreachable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "engine connection ended");
            }
        });
        // Quoting doubles quotes only; with backslash escapes on it would not be enough.
        let rows = client
            .simple_query(&format!(
                "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SHOW standard_conforming_strings"
            ))
            .await
            .map_err(refused)?;
        let scs = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        if scs.as_deref() != Some("on") {
            return Err(EngineError::Refused(
                "standard_conforming_strings is off; refusing to build SQL".into(),
            ));
        }
        Ok(Admin {
            client,
            _permit: permit,
        })
    }

    fn put_back(&self, a: Admin<'_>) {
        if !a.client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(a.client);
        }
    }

    fn role(&self, role: &str) -> Result<&Role, EngineError> {
        self.roles
            .get(role)
            .ok_or_else(|| EngineError::UnknownRole(role.chars().take(63).collect()))
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn login_name(&self, task: &TaskId, random: [u8; 8]) -> String {
        crate::login_for(task, random)
    }

    /// A password and its SCRAM verifier: one made ahead if there is one,
    /// else made now, on a blocking thread. The spare is topped up in the
    /// background once the server has answered (see `issue`), so the
    /// derivation does not compete with the server for the CPU meanwhile;
    /// at once only when it ran dry.
    async fn prepare(&self) -> Result<Prepared, EngineError> {
        let ahead = self
            .spare
            .made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if ahead.is_none() {
            self.spare.top_up();
        }
        let (password, verifier) = match ahead {
            Some(pair) => pair,
            None => tokio::task::spawn_blocking(password_and_verifier)
                .await
                .map_err(|e| {
                    EngineError::Internal(format!("deriving the verifier failed: {e}"))
                })??,
        };
        Ok(Prepared {
            password: Some(password),
            stored: Some(verifier),
        })
    }

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<Issued, EngineError> {
        let role = self.role(req.role)?;
        let prepared = match &req.prepared {
            Some(p) => p.clone(),
            None => self.prepare().await?,
        };
        let (Some(password), Some(verifier)) = (prepared.password, prepared.stored) else {
            return Err(EngineError::Internal(
                "prepared without a password and its verifier".into(),
            ));
        };
        let valid_until = timestamp(req.valid_until);
        let inputs = Inputs {
            name: req.login,
            password: verifier.expose_secret(),
            valid_until: &valid_until,
        };
        let sql = script(&role.creation, &inputs)?;
        let admin = self.connect().await?;
        // One simple-query message: PostgreSQL runs it as one transaction.
        let done = admin.client.batch_execute(&sql).await.map_err(refused);
        self.spare.top_up();
        done?;
        self.put_back(admin);
        // An admin DSN that insists on TLS makes the login's insist too.
        let require = self.admin.get_ssl_mode() == SslMode::Require;
        let url = format!(
            "postgresql://{}:{}@{}:{}/{}{}",
            userinfo(req.login),
            userinfo(password.expose_secret()),
            self.host,
            self.port,
            userinfo(&self.database),
            if require { "?sslmode=require" } else { "" }
        );
        let mut facts = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGDATABASE", self.database.clone()),
            ("PGUSER", req.login.to_owned()),
        ];
        if require {
            facts.push(("PGSSLMODE", "require".to_owned()));
        }
        Ok(Issued {
            login: req.login.to_owned(),
            password,
            url: SecretString::from(url),
            facts,
        })
    }

    async fn revoke(&self, login: &str, role: &str) -> Result<(), EngineError> {
        let role = self.role(role)?;
        let admin = self.connect().await?;
        if !exists(&admin.client, login).await? {
            self.put_back(admin);
            return Ok(());
        }
        let inputs = Inputs {
            name: login,
            password: "",
            valid_until: "",
        };
        // The first statement commits alone (the login is shut out before
        // its sessions are ended), the rest together.
        let Some((first, rest)) = role.revocation.split_first() else {
            return Err(EngineError::Refused(
                "the role has no revocation statements".into(),
            ));
        };
        for part in [std::slice::from_ref(first), rest] {
            if !part.is_empty() {
                let sql = script(part, &inputs)?;
                admin.client.batch_execute(&sql).await.map_err(refused)?;
            }
        }
        self.put_back(admin);
        Ok(())
    }

    async fn verify_gone(&self, login: &str) -> Result<bool, EngineError> {
        let admin = self.connect().await?;
        let gone = !exists(&admin.client, login).await?;
        self.put_back(admin);
        Ok(gone)
    }

    async fn health(&self) -> Result<(), EngineError> {
        let admin = self.connect().await?;
        admin
            .client
            .simple_query("SELECT 1")
            .await
            .map_err(refused)?;
        self.put_back(admin);
        Ok(())
    }

    fn lists_logins(&self) -> bool {
        true
    }

    async fn logins(&self) -> Result<Vec<MadeLogin>, EngineError> {
        let admin = self.connect().await?;
        let rows = admin
            .client
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles
                 WHERE starts_with(rolname, $1)",
                &[&LOGIN_PREFIX],
            )
            .await
            .map_err(refused)?;
        self.put_back(admin);
        Ok(rows
            .iter()
            .map(|r| MadeLogin {
                login: r.get(0),
                role: r
                    .get::<_, Option<String>>(1)
                    .and_then(|c| c.strip_prefix(ROLE_MARK).map(str::to_owned)),
            })
            .collect())
    }
}

/// Statements rendered and joined into one message (it may hold a
/// password: wiped when dropped).
fn script(
    templates: &[String],
    inputs: &Inputs<'_>,
) -> Result<zeroize::Zeroizing<String>, EngineError> {
    let mut sql = zeroize::Zeroizing::new(String::new());
    for t in templates {
        let s = zeroize::Zeroizing::new(template::render(t, inputs)?);
        sql.push_str(&s);
        // On its own line: a template's trailing `--` comment cannot swallow it.
        sql.push_str("\n;\n");
    }
    Ok(sql)
}

async fn exists(client: &Client, login: &str) -> Result<bool, EngineError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&login])
        .await
        .map_err(refused)?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_are_made_ahead_each_once_with_a_matching_verifier() {
        let engine = PostgresEngine::new(
            &SecretString::from("postgres://admin@127.0.0.1:1/db".to_owned()),
            &[],
            None,
        )
        .unwrap();
        let first = engine.prepare().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.spare.made.lock().unwrap().len() < SPARE {
            assert!(
                std::time::Instant::now() < deadline,
                "the spare never filled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut seen = std::collections::HashSet::new();
        for p in std::iter::once(first).chain([
            engine.prepare().await.unwrap(),
            engine.prepare().await.unwrap(),
        ]) {
            let (password, verifier) = (p.password.unwrap(), p.stored.unwrap());
            assert!(
                seen.insert(password.expose_secret().to_owned()),
                "used twice"
            );
            let salt_b64 = verifier.expose_secret()[19..].split('$').next().unwrap();
            use base64::Engine as _;
            let salt: [u8; 16] = base64::engine::general_purpose::STANDARD
                .decode(salt_b64)
                .unwrap()
                .try_into()
                .unwrap();
            assert_eq!(
                scram::verifier(password.expose_secret(), &salt),
                verifier.expose_secret()
            );
        }
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00+00");
        assert_eq!(timestamp(1_796_668_150), "2026-12-07 18:29:10+00");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00+00");
    }

    #[test]
    fn defaults_grant_the_groups_quoted_and_templates_are_checked() {
        let r = statements(&DbRole {
            name: "ro".into(),
            member_of: vec!["app\"read".into()],
            creation: vec![],
            revocation: vec![],
        })
        .unwrap();
        assert_eq!(r.creation[1], "GRANT \"app\"\"read\" TO {{name}}");
        assert_eq!(
            r.creation[2],
            "COMMENT ON ROLE {{name}} IS 'mandate role=ro'"
        );
        assert_eq!(r.revocation.len(), 5);
        let bad = DbRole {
            name: "x".into(),
            member_of: vec![],
            creation: vec!["CREATE ROLE {{name}} COMMENT {{intent}}".into()],
            revocation: vec![],
        };
        assert!(matches!(
            check_roles(&[bad]),
            Err((0, EngineError::Template(_)))
        ));
        assert_eq!(userinfo("a b@c"), "a%20b%40c");
    }
}
