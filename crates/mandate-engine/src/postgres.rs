//! PostgreSQL logins per task. Issue runs the role's creation statements in
//! one transaction (all or nothing: no half-made role); revoke first turns
//! the login off, ends its sessions, then reassigns and drops what it owns
//! and drops it. The role's `VALID UNTIL` is the task's deadline, so even
//! an unreachable broker cannot keep a login past it.

use crate::template::{self, Inputs, quote_ident};
use crate::{Engine, EngineError, IssueRequest, Issued};
use async_trait::async_trait;
use mandate_core::{DbRole, TaskId};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

/// Idle admin connections kept for reuse.
const POOL: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const DEFAULT_REVOCATION: [&str; 5] = [
    "ALTER ROLE {{name}} NOLOGIN",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {{name_literal}}",
    "REASSIGN OWNED BY {{name}} TO CURRENT_USER",
    "DROP OWNED BY {{name}}",
    "DROP ROLE IF EXISTS {{name}}",
];

struct Role {
    creation: Vec<String>,
    revocation: Vec<String>,
}

pub struct PostgresEngine {
    admin: Config,
    /// Where a login connects: host, port, database (from the admin DSN).
    host: String,
    port: u16,
    database: String,
    roles: BTreeMap<String, Role>,
    idle: Mutex<Vec<Client>>,
}

/// The role's statements: the operator's, or the defaults (a login in the
/// role's groups, valid until the deadline). Every template is checked.
fn statements(r: &DbRole) -> Result<Role, EngineError> {
    let creation = if r.creation.is_empty() {
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

/// Check a role list's templates (at tool registration).
pub fn check_roles(roles: &[DbRole]) -> Result<(), (usize, EngineError)> {
    for (i, r) in roles.iter().enumerate() {
        statements(r).map_err(|e| (i, e))?;
    }
    Ok(())
}

fn unreachable(e: tokio_postgres::Error) -> EngineError {
    EngineError::Unreachable(e.to_string())
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
    /// membership of the groups it grants).
    pub fn new(admin_dsn: &SecretString, roles: &[DbRole]) -> Result<Self, EngineError> {
        let mut admin = Config::from_str(admin_dsn.expose_secret()).map_err(|_| {
            EngineError::Refused("the admin DSN does not parse (its text is not shown)".into())
        })?;
        admin.connect_timeout(CONNECT_TIMEOUT);
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
        Ok(PostgresEngine {
            admin,
            host,
            port,
            database,
            roles,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<Client, EngineError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
            && !c.is_closed()
        {
            return Ok(c);
        }
        let (client, conn) = self.admin.connect(NoTls).await.map_err(unreachable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "engine connection ended");
            }
        });
        // Quoting doubles quotes only; with backslash escapes on it would not be enough.
        let scs = client
            .query_one("SHOW standard_conforming_strings", &[])
            .await
            .map_err(refused)?;
        if scs.get::<_, String>(0) != "on" {
            return Err(EngineError::Refused(
                "standard_conforming_strings is off; refusing to build SQL".into(),
            ));
        }
        Ok(client)
    }

    fn put_back(&self, c: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL && !c.is_closed() {
            idle.push(c);
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

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<Issued, EngineError> {
        let role = self.role(req.role)?;
        let password = SecretString::from(crate::http::random_token());
        let valid_until = timestamp(req.valid_until);
        let inputs = Inputs {
            name: req.login,
            password: password.expose_secret(),
            valid_until: &valid_until,
        };
        let sql: Vec<zeroize::Zeroizing<String>> = role
            .creation
            .iter()
            .map(|t| template::render(t, &inputs).map(zeroize::Zeroizing::new))
            .collect::<Result<_, _>>()?;
        let mut client = self.connect().await?;
        let tx = client.transaction().await.map_err(refused)?;
        for s in &sql {
            tx.batch_execute(s).await.map_err(refused)?;
        }
        tx.commit().await.map_err(refused)?;
        self.put_back(client);
        let url = format!(
            "postgresql://{}:{}@{}:{}/{}",
            userinfo(req.login),
            userinfo(password.expose_secret()),
            self.host,
            self.port,
            userinfo(&self.database)
        );
        Ok(Issued {
            login: req.login.to_owned(),
            password,
            url: SecretString::from(url),
            facts: vec![
                ("PGHOST", self.host.clone()),
                ("PGPORT", self.port.to_string()),
                ("PGDATABASE", self.database.clone()),
                ("PGUSER", req.login.to_owned()),
            ],
        })
    }

    async fn revoke(&self, login: &str, role: &str) -> Result<(), EngineError> {
        let role = self.role(role)?;
        let client = self.connect().await?;
        if !exists(&client, login).await? {
            self.put_back(client);
            return Ok(());
        }
        let inputs = Inputs {
            name: login,
            password: "",
            valid_until: "",
        };
        for t in &role.revocation {
            client
                .batch_execute(&template::render(t, &inputs)?)
                .await
                .map_err(refused)?;
        }
        self.put_back(client);
        Ok(())
    }

    async fn verify_gone(&self, login: &str) -> Result<bool, EngineError> {
        let client = self.connect().await?;
        let gone = !exists(&client, login).await?;
        self.put_back(client);
        Ok(gone)
    }

    async fn health(&self) -> Result<(), EngineError> {
        let client = self.connect().await?;
        client.simple_query("SELECT 1").await.map_err(refused)?;
        self.put_back(client);
        Ok(())
    }
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
