//! What the audit log says about use, for the inventory and the posture
//! report: who was seen when, which agents reached which tools, how their
//! tokens were bound, and which live grants there are. These scan the
//! events of the period: an operator's report, not a hot path.

use crate::StoreError;
use crate::sql::{self, Sql, Write, args};
use mandate_audit::NewEvent;
use mandate_core::{AgentName, Grant, ToolName, UnixTime};
use std::collections::{BTreeMap, BTreeSet};

/// Use seen in the audit log since a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Each agent's latest event of any kind, ever (ms).
    pub last_seen_ms: BTreeMap<AgentName, i64>,
    /// Per tool, the agents whose calls reached it (allowed proxy calls,
    /// revealed secrets) in the period.
    pub tool_users: BTreeMap<ToolName, BTreeSet<AgentName>>,
    /// Per agent, tokens minted in the period and how many were DPoP-bound.
    pub tokens: BTreeMap<AgentName, (u64, u64)>,
    /// Anomaly events (by `seq`) an operator acknowledged, ever.
    pub acknowledged_anomalies: BTreeSet<u64>,
}

fn agent(s: &str) -> Result<AgentName, StoreError> {
    AgentName::parse(s).map_err(StoreError::corrupt)
}

pub(crate) fn since(db: &mut dyn Sql, since_ms: i64) -> Result<Usage, StoreError> {
    let mut u = Usage::default();
    for r in db.query(
        "SELECT agent, MAX(time_ms) FROM events WHERE agent IS NOT NULL GROUP BY agent",
        &[],
    )? {
        u.last_seen_ms.insert(agent(r.text(0)?)?, r.get(1)?);
    }
    for r in db.query(
        "SELECT DISTINCT tool, agent FROM events
         WHERE time_ms >= $1 AND agent IS NOT NULL AND tool IS NOT NULL
           AND (kind = 'secret.retrieved' OR (kind = 'tool.invoked' AND decision = 'allow'))",
        args![since_ms],
    )? {
        let tool = ToolName::parse(r.text(0)?).map_err(StoreError::corrupt)?;
        u.tool_users
            .entry(tool)
            .or_default()
            .insert(agent(r.text(1)?)?);
    }
    // The detail is compact JSON: a bound token's grant event holds
    // `"dpop_jkt":"<thumbprint>"`; an unbound one's null or nothing.
    for r in db.query(
        "SELECT agent, COUNT(*), SUM(CASE WHEN detail LIKE '%\"dpop_jkt\":\"%' THEN 1 ELSE 0 END)
         FROM events WHERE kind = 'grant.minted' AND time_ms >= $1 AND agent IS NOT NULL
         GROUP BY agent",
        args![since_ms],
    )? {
        let (all, bound): (i64, i64) = (r.get(1)?, r.get(2)?);
        u.tokens
            .insert(agent(r.text(0)?)?, (all as u64, bound as u64));
    }
    u.acknowledged_anomalies = acknowledged(db)?;
    Ok(u)
}

/// The `seq` of every anomaly an operator acknowledged.
pub(crate) fn acknowledged(db: &mut dyn Sql) -> Result<BTreeSet<u64>, StoreError> {
    let mut out = BTreeSet::new();
    for r in db.query(
        "SELECT detail FROM events WHERE kind = 'anomaly.acknowledged'",
        &[],
    )? {
        let d: serde_json::Value = r.json(0)?;
        if let Some(seq) = d["anomaly"].as_u64() {
            out.insert(seq);
        }
    }
    Ok(out)
}

/// Grants whose token is unexpired, not revoked one by one, and whose task
/// is active, soonest to expire first.
pub(crate) fn live_grants(
    db: &mut dyn Sql,
    now: UnixTime,
    limit: usize,
) -> Result<Vec<Grant>, StoreError> {
    let revoked: BTreeSet<String> = db
        .query(
            "SELECT id FROM revocations WHERE kind = 'token' AND expires_at > $1",
            args![now],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect::<Result<_, _>>()?;
    let grants: Vec<Grant> = sql::bodies(
        db,
        "SELECT g.body FROM grants g JOIN tasks t ON t.id = g.task
         WHERE g.expires_at > $1 AND t.state = 'active' ORDER BY g.expires_at, g.jti LIMIT $2",
        args![now, (limit + revoked.len()).min(i64::MAX as usize) as i64],
    )?;
    Ok(grants
        .into_iter()
        .filter(|g| !revoked.contains(g.jti.as_str()))
        .take(limit)
        .collect())
}

/// Raise a rotation notice once: `false` (and nothing written) when this
/// one (`secret`, `kind`, `marker`) was already raised.
pub(crate) fn notice(
    w: &mut dyn Write,
    secret: &str,
    kind: &str,
    marker: i64,
    now: UnixTime,
    ev: NewEvent,
) -> Result<bool, StoreError> {
    // Not `try_insert`: a refused row must not fail the write.
    if w.exec(
        "INSERT INTO secret_notices (secret, kind, marker, noticed_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        args![secret, kind, marker, now],
    )? == 0
    {
        return Ok(false);
    }
    w.audit(ev)?;
    Ok(true)
}
