//! One PostgreSQL connection and the statements prepared on it, behind
//! the store's one SQL interface ([`Sql`]). Prepared once per connection
//! (a statement outlives the transactions it ran in), so a query costs one
//! round trip, not a parse and an execute.

use crate::StoreError;
use crate::sql::{Arg, Cell, Row, Sql};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Statement};
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

    /// A statement with PostgreSQL-typed parameters (arrays for `unnest`).
    pub fn execute(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.execute(&s, p)?)
    }

    /// A query with PostgreSQL-typed parameters; its rows as returned.
    pub fn rows(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<postgres::Row>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query(&s, p)?)
    }
}

fn params<'a>(args: &'a [Arg<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Int(v) => v as &(dyn ToSql + Sync),
            Arg::Text(v) => v as &(dyn ToSql + Sync),
            Arg::Bytes(v) => v as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Column `i` of a row, for the column types the schema uses.
fn cell(r: &postgres::Row, i: usize) -> Result<Cell, StoreError> {
    let bad = |e: postgres::Error| StoreError::Corrupt(format!("column {i}: {e}"));
    let ty = r.columns()[i].type_();
    let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
    Ok(if *ty == Type::INT8 {
        int(r.try_get::<_, Option<i64>>(i).map_err(bad)?)
    } else if *ty == Type::INT4 {
        int(r.try_get::<_, Option<i32>>(i).map_err(bad)?.map(i64::from))
    } else if *ty == Type::INT2 {
        int(r.try_get::<_, Option<i16>>(i).map_err(bad)?.map(i64::from))
    } else if *ty == Type::BOOL {
        int(r.try_get::<_, Option<bool>>(i).map_err(bad)?.map(i64::from))
    } else if *ty == Type::BYTEA {
        r.try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Bytes)
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
        r.try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Text)
    } else {
        return Err(StoreError::Corrupt(format!(
            "column {i} is of type {ty}, which the store does not read"
        )));
    })
}

pub(crate) fn row(r: &postgres::Row) -> Result<Row, StoreError> {
    (0..r.len())
        .map(|i| cell(r, i))
        .collect::<Result<_, _>>()
        .map(Row)
}

impl<C: GenericClient> Sql for Db<'_, C> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.execute(sql, &params(args))
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        self.rows(sql, &params(args))?.iter().map(row).collect()
    }

    fn try_insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        let s = self.stmt(sql)?;
        match self.c.execute(&s, &params(args)) {
            Ok(_) => Ok(true),
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.c.batch_execute(sql)?)
    }
}
