//! Owners: the teams that agents, tools and secrets belong to.

use crate::StoreError;
use crate::sql::{self, Sql, Write, args};
use mandate_audit::NewEvent;
use mandate_core::{Owner, OwnerKind, OwnerName};

pub(crate) fn create(w: &mut dyn Write, owner: &Owner, ev: NewEvent) -> Result<(), StoreError> {
    sql::insert(
        w,
        "INSERT INTO owners (name, kind, description, created_at) VALUES ($1, $2, $3, $4)",
        args![
            owner.name.as_str(),
            owner.kind.as_str(),
            &owner.description,
            owner.created_at
        ],
        "owner",
        owner.name.as_str(),
    )?;
    w.audit(ev)
}

/// By name, in byte order (see `sql`).
pub(crate) fn list(db: &mut dyn Sql) -> Result<Vec<Owner>, StoreError> {
    let mut owners = db
        .query(
            "SELECT name, kind, description, created_at FROM owners",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(Owner {
                name: OwnerName::parse(r.text(0)?).map_err(StoreError::corrupt)?,
                kind: r.text(1)?.parse().map_err(StoreError::corrupt)?,
                description: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    owners.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(owners)
}

/// The owner's kind, or `NotFound`: whatever names an owner names one
/// that is there.
pub(crate) fn require(db: &mut dyn Sql, owner: &OwnerName) -> Result<OwnerKind, StoreError> {
    match sql::first(
        db,
        "SELECT kind FROM owners WHERE name = $1",
        args![owner.as_str()],
    )? {
        Some(r) => r.text(0)?.parse().map_err(StoreError::corrupt),
        None => Err(StoreError::NotFound {
            what: "owner",
            id: owner.to_string(),
        }),
    }
}
