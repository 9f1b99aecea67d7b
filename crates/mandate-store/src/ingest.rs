//! Proxy tool-call records: chained into the audit log once each, by each
//! proxy spool's position (`seq`), marking the tools' secrets used.

use crate::sql::{self, Write, args};
use crate::{Ingested, Invocation, StoreError, rules, secrets};
use mandate_audit::EventKind;
use mandate_core::UnixTime;

/// A refused batch writes nothing.
pub(crate) fn invocations(
    w: &mut dyn Write,
    source: &str,
    batch: Vec<Invocation>,
    now: UnixTime,
) -> Result<Ingested, StoreError> {
    let high = sql::first(
        w,
        "SELECT seq FROM ingest_sources WHERE source = $1",
        args![source],
    )?
    .map(|r| r.get::<i64>(0))
    .transpose()?;
    let plan = rules::plan_ingest(high, batch)?;
    let accepted = plan.events.len();
    let mut misuse = Vec::new();
    for (e, also) in plan.events {
        w.audit(e)?;
        for a in also {
            if a.kind == EventKind::TokenMisuse {
                misuse.push(a.clone());
            }
            w.audit(a)?;
        }
    }
    for tool in &plan.used_tools {
        secrets::mark_used_by_tool(w, tool, now)?;
    }
    if let Some(h) = plan.high {
        w.exec(
            "INSERT INTO ingest_sources (source, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            args![source, h, now],
        )?;
    }
    Ok(Ingested {
        accepted,
        duplicates: plan.duplicates,
        misuse,
    })
}
