//! Owners: the teams that agents, tools and secrets belong to.

use crate::StoreError;
use crate::sql::{self, Sql, Write, args};
use mandate_audit::NewEvent;
use mandate_core::{Owner, OwnerName};

pub(crate) fn create(w: &mut dyn Write, owner: &Owner, ev: NewEvent) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO owners (name, description, created_at) VALUES ($1, $2, $3)",
        args![owner.name.as_str(), &owner.description, owner.created_at],
        "owner",
        owner.name.as_str(),
    )?;
    w.audit(ev)
}

/// By name, in byte order (see `sql`).
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<Owner>, StoreError> {
    let mut owners = db
        .query("SELECT name, description, created_at FROM owners", &[])?
        .iter()
        .map(|r| {
            Ok(Owner {
                name: OwnerName::parse(r.text(0)?).map_err(StoreError::corrupt)?,
                description: r.get(1)?,
                created_at: r.get(2)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    owners.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(owners)
}

/// `NotFound` unless `owner` exists: whatever names an owner names one
/// that is there.
pub(crate) fn require(db: &mut dyn Sql, owner: &OwnerName) -> Result<(), StoreError> {
    if sql::exists(
        db,
        "SELECT 1 FROM owners WHERE name = $1",
        args![owner.as_str()],
    )? {
        Ok(())
    } else {
        Err(StoreError::NotFound {
            what: "owner",
            id: owner.to_string(),
        })
    }
}
