//! The one SQL interface the rooms (owners, agents, tasks, …) are written
//! against, so each statement and each rule exists once for both backends.
//!
//! Statements use PostgreSQL's `$1` placeholders and only SQL both
//! dialects accept (`RETURNING`, `ON CONFLICT`, `CAST`); the SQLite side
//! renumbers the placeholders. Arguments and rows are converted to and
//! from the small [`Arg`] and [`Cell`] types, and each backend says which
//! of its errors mean "a constraint refused the row".
//!
//! Listings ordered by text (names, ids) are sorted in Rust, in byte order,
//! not by `ORDER BY`: a PostgreSQL database sorts text by its locale's
//! collation (`a_b` before `a1` under ICU or glibc), SQLite by bytes.

use crate::StoreError;
use mandate_audit::NewEvent;
use mandate_core::Grant;
use serde::de::DeserializeOwned;

/// A statement's argument. Typed even when null: PostgreSQL checks a
/// null's type against the column's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

/// `args![a, b]`: a statement's arguments, each converted with `Arg::from`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        &[$($crate::sql::Arg::from($a)),*]
    };
}
pub(crate) use args;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A result row, read by column index.
#[derive(Debug)]
pub(crate) struct Row(pub Vec<Cell>);

/// A Rust type a [`Cell`] can be read as.
pub(crate) trait FromCell: Sized {
    const WHAT: &'static str;
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    const WHAT: &'static str = "an integer";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromCell for String {
    const WHAT: &'static str = "text";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromCell for Vec<u8> {
    const WHAT: &'static str = "bytes";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Bytes(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    const WHAT: &'static str = T::WHAT;
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as a `T`, or `Corrupt` if it is not what the schema says
    /// (never a panic).
    pub fn get<T: FromCell>(&self, i: usize) -> Result<T, StoreError> {
        self.0
            .get(i)
            .and_then(T::from_cell)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is not {}", T::WHAT)))
    }

    /// Column `i` as text, borrowed.
    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.0.get(i) {
            Some(Cell::Text(v)) => Ok(v),
            _ => Err(StoreError::Corrupt(format!("column {i} is not text"))),
        }
    }

    /// Column `i`, a JSON document, parsed.
    pub fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        Ok(serde_json::from_str(self.text(i)?)?)
    }
}

/// A connection (or the writer's transaction) as the rooms see it.
pub(crate) trait Sql {
    /// Run a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError>;
    /// Run a statement; the rows it returned.
    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Run an INSERT; `false` if a uniqueness or reference constraint
    /// refused the row. The write must then fail: PostgreSQL accepts no
    /// further statement until the write's savepoint is rolled back.
    fn try_insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError>;
    /// Statements without arguments, `;`-separated (migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

/// The writer's side: a write job's savepoint, and the audit chain.
pub(crate) trait Write: Sql {
    /// Chain one audit event into this write; it commits with it or not at all.
    fn audit(&mut self, ev: NewEvent) -> Result<(), StoreError>;
    /// Chain many events into this write, in order, as `audit` would one
    /// by one, but stored together (a cascade's, one per ended task).
    fn audit_all(&mut self, evs: Vec<NewEvent>) -> Result<(), StoreError>;
    /// Store a minted grant (PostgreSQL writes a group's grants in one
    /// statement); `Conflict` if its `jti` is taken or its task unknown.
    fn grant(&mut self, grant: &Grant) -> Result<(), StoreError>;
}

/// The first row, if any.
pub(crate) fn first(
    db: &mut dyn Sql,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Option<Row>, StoreError> {
    Ok(db.query(sql, args)?.into_iter().next())
}

pub(crate) fn exists(db: &mut dyn Sql, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
    Ok(!db.query(sql, args)?.is_empty())
}

/// An INSERT whose refusal by a constraint is `Conflict` on `what` `id`.
pub(crate) fn insert(
    db: &mut dyn Sql,
    sql: &str,
    args: &[Arg<'_>],
    what: &'static str,
    id: &str,
) -> Result<(), StoreError> {
    if db.try_insert(sql, args)? {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            what,
            id: id.to_owned(),
        })
    }
}

/// The first column of the first row, a JSON document, parsed.
pub(crate) fn body<T: DeserializeOwned>(
    db: &mut dyn Sql,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Option<T>, StoreError> {
    first(db, sql, args)?.map(|r| r.json(0)).transpose()
}

/// The first column of every row, JSON documents, parsed.
pub(crate) fn bodies<T: DeserializeOwned>(
    db: &mut dyn Sql,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Vec<T>, StoreError> {
    db.query(sql, args)?.iter().map(|r| r.json(0)).collect()
}

/// A client's sequence number or count as a BIGINT: past `i64::MAX`
/// nothing can follow it, so it saturates (a plain cast would wrap to a
/// negative and replay from the start).
pub(crate) fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
