//! Tools: the upstream APIs agents are granted access to, each with its
//! own audience.

use crate::sql::{self, Sql, Write, args};
use crate::{StoreError, owners};
use mandate_audit::NewEvent;
use mandate_core::Tool;

/// Unique by name and by audience (a token for one tool must never be
/// accepted by another).
pub(crate) fn create(w: &mut dyn Write, tool: &Tool, ev: NewEvent) -> Result<(), StoreError> {
    owners::require(w, &tool.owner)?;
    if sql::exists(
        w,
        "SELECT 1 FROM tools WHERE audience = $1",
        args![&tool.audience],
    )? {
        return Err(StoreError::Conflict {
            what: "tool audience",
            id: tool.audience.clone(),
        });
    }
    sql::insert(
        w,
        "INSERT INTO tools (name, audience, body, created_at) VALUES ($1, $2, $3, $4)",
        args![
            tool.name.as_str(),
            &tool.audience,
            &serde_json::to_string(tool)?,
            tool.created_at
        ],
        "tool",
        tool.name.as_str(),
    )?;
    w.audit(ev)
}

pub(crate) fn get(db: &mut dyn Sql, name: &str) -> Result<Option<Tool>, StoreError> {
    sql::body(db, "SELECT body FROM tools WHERE name = $1", args![name])
}

/// Replace the stored definition of the tool with this name and audience
/// (`NotFound` otherwise: the audience never changes).
pub(crate) fn update(w: &mut dyn Write, tool: &Tool, ev: NewEvent) -> Result<(), StoreError> {
    let changed = w.exec(
        "UPDATE tools SET body = $1 WHERE name = $2 AND audience = $3",
        args![
            &serde_json::to_string(tool)?,
            tool.name.as_str(),
            &tool.audience
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: "tool",
            id: tool.name.to_string(),
        });
    }
    w.audit(ev)
}

/// By name, in byte order (see `sql`).
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<Tool>, StoreError> {
    let mut tools: Vec<Tool> = sql::bodies(db, "SELECT body FROM tools", &[])?;
    tools.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(tools)
}

pub(crate) fn exists(db: &mut dyn Sql, name: &str) -> Result<bool, StoreError> {
    sql::exists(db, "SELECT 1 FROM tools WHERE name = $1", args![name])
}
