//! One PostgreSQL connection and the statements prepared on it. Prepared
//! once per connection (a statement outlives the transactions it ran in),
//! so a query costs one round trip, not a parse and an execute.

use crate::StoreError;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row, Statement};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A connection idle this long is pinged before use: the server may have
/// restarted or a firewall may have dropped it meanwhile.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Conn {
    pub client: Client,
    pub stmts: HashMap<String, Statement>,
    last_used: Instant,
}

impl Conn {
    pub fn new(client: Client) -> Self {
        Conn {
            client,
            stmts: HashMap::new(),
            last_used: Instant::now(),
        }
    }

    /// Still usable? Closed connections are not; one idle for a while is
    /// asked (one round trip), a busy one is trusted.
    pub fn is_alive(&mut self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        let idle = self.last_used.elapsed() >= PING_AFTER_IDLE;
        self.last_used = Instant::now();
        !idle || self.client.is_valid(PING_TIMEOUT).is_ok()
    }

    pub fn db(&mut self) -> Db<'_, Client> {
        Db {
            c: &mut self.client,
            stmts: &mut self.stmts,
        }
    }
}

/// A client (or transaction) with its connection's statement cache.
pub(crate) struct Db<'a, C> {
    pub c: &'a mut C,
    pub stmts: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    fn stmt(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub fn exec(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.execute(&s, p)?)
    }

    pub fn query(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query(&s, p)?)
    }

    pub fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query_opt(&s, p)?)
    }

    pub fn exists(&mut self, sql: &str, p: Params<'_>) -> Result<bool, StoreError> {
        Ok(self.opt(sql, p)?.is_some())
    }

    /// An INSERT whose uniqueness (or reference) failure is `Conflict`, as
    /// SQLite reports any constraint failure.
    pub fn insert(
        &mut self,
        sql: &str,
        p: Params<'_>,
        what: &'static str,
        id: &str,
    ) -> Result<(), StoreError> {
        let s = self.stmt(sql)?;
        match self.c.execute(&s, p) {
            Ok(_) => Ok(()),
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                Err(StoreError::Conflict {
                    what,
                    id: id.to_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
