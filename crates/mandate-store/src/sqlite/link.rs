//! rusqlite behind the store's one SQL interface ([`Sql`]): `$n`
//! placeholders become SQLite's `?n`, arguments and rows are converted,
//! and a uniqueness or foreign-key failure is told apart from the rest.

use crate::StoreError;
use crate::sql::{Arg, Cell, Row, Sql};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ffi};
use std::borrow::Cow;

/// A connection as the rooms see it: a pooled reader, or the writer inside
/// a job's savepoint.
pub(crate) struct Link<'c>(pub &'c Connection);

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Int(Some(v)) => ValueRef::Integer(v),
            Arg::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Arg::Bytes(v) => ValueRef::Blob(v),
            Arg::Int(None) | Arg::Text(None) => ValueRef::Null,
        }))
    }
}

/// `$1` → `?1`: the same numbered placeholder in SQLite's spelling (its own
/// `$name` would be numbered by first appearance instead).
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn cell(v: ValueRef<'_>) -> Result<Cell, StoreError> {
    Ok(match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Text(t) => {
            Cell::Text(String::from_utf8(t.to_vec()).map_err(StoreError::corrupt)?)
        }
        ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
        ValueRef::Real(_) => return Err(StoreError::Corrupt("a REAL column".into())),
    })
}

/// What PostgreSQL calls a unique or foreign-key violation; other
/// constraint failures (NOT NULL, CHECK) are errors like any other.
fn refused_by_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(
        f.extended_code,
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    ))
}

impl Sql for Link<'_> {
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(&numbered(sql))?
            .execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.0.prepare_cached(&numbered(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Row((0..width)
                .map(|i| cell(r.get_ref(i)?))
                .collect::<Result<_, _>>()?));
        }
        Ok(out)
    }

    fn try_insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        match self
            .0
            .prepare_cached(&numbered(sql))?
            .execute(rusqlite::params_from_iter(args))
        {
            Ok(_) => Ok(true),
            Err(e) if refused_by_constraint(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(
            numbered("UPDATE t SET a = $2 WHERE b = $1 AND c > $12"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c > ?12"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}
