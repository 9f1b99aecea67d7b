//! Decisions the rooms make in Rust rather than in SQL, kept free of any
//! connection so they are tested on their own: which task states are live,
//! cascade events, what may be revoked by id, task page sizes, the
//! last-root-token guard and proxy batch de-duplication.

use crate::{Invocation, StoreError};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, AdminToken, RevocationKind};

/// Task states a revocation or the sweeper still has to act on.
pub(crate) const LIVE_TASK_STATES: &str = "('pending_approval', 'active', 'suspended')";

/// The event for one task of a cascade: same actor and request as the cause.
pub(crate) fn cascade_event(
    cause: &NewEvent,
    kind: EventKind,
    agent: &str,
    task: &str,
) -> NewEvent {
    let mut ev = NewEvent::new(kind, cause.actor.clone())
        .request_id(cause.request_id.clone())
        .reasons(vec![format!("cascade from {}", cause.kind)]);
    ev.agent = Some(agent.to_owned());
    ev.task = Some(task.to_owned());
    ev
}

/// Only tokens and keys are revoked by id; tasks and agents change state.
pub(crate) fn check_revocable_by_id(kind: RevocationKind) -> Result<(), StoreError> {
    if matches!(kind, RevocationKind::Token | RevocationKind::Key) {
        Ok(())
    } else {
        Err(StoreError::Refused(
            "tasks and agents are revoked with their own state change",
        ))
    }
}

/// A page size for task listings: 100 by default, at most 1000.
pub(crate) fn task_page(limit: usize) -> i64 {
    if limit == 0 {
        100
    } else {
        limit.min(1000) as i64
    }
}

/// The live token `id` among `all`, unless it is the last live root token
/// (nobody could administer the broker any more).
pub(crate) fn revocable_admin_token(
    all: &[AdminToken],
    id: &str,
    at: i64,
) -> Result<AdminToken, StoreError> {
    let Some(target) = all
        .iter()
        .find(|k| k.id == id && k.revoked_at.is_none())
        .cloned()
    else {
        return Err(StoreError::NotFound {
            what: "live admin token",
            id: id.to_owned(),
        });
    };
    let is_root = |k: &AdminToken| k.rights.contains(&AdminRight::Root) && k.is_live(at);
    if is_root(&target) && !all.iter().any(|k| k.id != id && is_root(k)) {
        return Err(StoreError::Refused(
            "refusing to revoke the last live root token: nobody could administer the broker any more",
        ));
    }
    Ok(target)
}

/// What to do with a proxy's batch, given the highest `seq` already
/// chained from its spool.
pub(crate) struct IngestPlan {
    /// Records to chain, each with the events that follow it.
    pub events: Vec<(NewEvent, Vec<NewEvent>)>,
    pub duplicates: usize,
    /// Tools whose secrets the batch used (once each, not once per call).
    pub used_tools: Vec<String>,
    /// The new high-water mark, if anything was accepted.
    pub high: Option<i64>,
}

pub(crate) fn plan_ingest(
    mut high: Option<i64>,
    batch: Vec<Invocation>,
) -> Result<IngestPlan, StoreError> {
    let mut plan = IngestPlan {
        events: Vec::with_capacity(batch.len()),
        duplicates: 0,
        used_tools: Vec::new(),
        high: None,
    };
    // What was chained before this batch (a whole call's opening is
    // compared with it, not with records of this batch).
    let chained = high;
    for inv in batch {
        let seq = i64::try_from(inv.seq)
            .map_err(|_| StoreError::Refused("a record's seq is out of range"))?;
        if high.is_some_and(|h| seq <= h) {
            plan.duplicates += 1;
            continue;
        }
        high = Some(seq);
        plan.high = high;
        let mut event = inv.event;
        if let Some(opened) = inv.opened
            && chained.is_some_and(|h| i64::try_from(opened).is_ok_and(|o| o <= h))
        {
            event.kind = event.kind.outcome();
        }
        // A tunnel's host may be a tool's, but the proxy used no secret.
        let proxied = matches!(
            event.kind,
            EventKind::ToolInvoked | EventKind::ToolCompleted
        );
        if proxied
            && event.decision.as_deref() == Some("allow")
            && let Some(tool) = &event.tool
            && !plan.used_tools.contains(tool)
        {
            plan.used_tools.push(tool.clone());
        }
        plan.events.push((event, inv.also));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(seq: u64, tool: &str, decision: &str) -> Invocation {
        let mut event = NewEvent::new(EventKind::ToolInvoked, "proxy").decision(decision);
        event.tool = Some(tool.into());
        Invocation {
            seq,
            opened: None,
            event,
            also: Vec::new(),
        }
    }

    /// A whole-call record is `tool.invoked` unless its `invoked` part is
    /// at or below what was chained: then only its outcome is new.
    #[test]
    fn a_whole_call_whose_opening_was_chained_is_chained_as_its_completion() {
        let whole = |seq: u64, opened: u64| Invocation {
            opened: Some(opened),
            ..inv(seq, "a", "allow")
        };
        let plan = plan_ingest(Some(5), vec![whole(8, 5), whole(9, 6), whole(12, 4)]).unwrap();
        let kinds: Vec<EventKind> = plan.events.iter().map(|(e, _)| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::ToolCompleted,
                EventKind::ToolInvoked,
                EventKind::ToolCompleted
            ]
        );
        let first = plan_ingest(None, vec![whole(3, 1)]).unwrap();
        assert_eq!(first.events[0].0.kind, EventKind::ToolInvoked);
    }

    /// A tunnel's outcome resent after its opening was chained is
    /// `egress.closed`, and a tunnel marks no secret used.
    #[test]
    fn a_tunnels_outcome_is_chained_as_egress_closed_and_uses_no_secret() {
        let mut tunnel = inv(8, "a", "allow");
        tunnel.event.kind = EventKind::EgressAllowed;
        tunnel.opened = Some(5);
        let plan = plan_ingest(Some(5), vec![tunnel]).unwrap();
        assert_eq!(plan.events[0].0.kind, EventKind::EgressClosed);
        assert!(plan.used_tools.is_empty());
    }

    #[test]
    fn ingest_skips_resent_and_out_of_order_records() {
        let plan = plan_ingest(
            Some(5),
            vec![
                inv(4, "a", "allow"),
                inv(6, "a", "allow"),
                inv(6, "b", "allow"),
                inv(7, "b", "deny"),
                inv(9, "a", "allow"),
            ],
        )
        .unwrap();
        assert_eq!(plan.events.len(), 3);
        assert_eq!(plan.duplicates, 2);
        assert_eq!(plan.high, Some(9));
        assert_eq!(
            plan.used_tools,
            vec!["a".to_owned()],
            "a deny uses no secret"
        );
        let none = plan_ingest(Some(9), vec![inv(9, "a", "allow")]).unwrap();
        assert_eq!((none.events.len(), none.high), (0, None));
        assert!(plan_ingest(None, vec![inv(u64::MAX, "a", "allow")]).is_err());
    }

    #[test]
    fn the_last_live_root_token_cannot_be_revoked() {
        let tok = |id: &str, rights: Vec<AdminRight>, revoked: Option<i64>| AdminToken {
            id: id.into(),
            hash: format!("h{id}"),
            rights,
            description: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: revoked,
            agent: None,
        };
        let all = vec![
            tok("root", vec![AdminRight::Root], None),
            tok("old", vec![AdminRight::Root], Some(1)),
            tok("agents", vec![AdminRight::Agents], None),
        ];
        assert!(matches!(
            revocable_admin_token(&all, "root", 10),
            Err(StoreError::Refused(_))
        ));
        assert_eq!(
            revocable_admin_token(&all, "agents", 10).unwrap().id,
            "agents"
        );
        assert!(matches!(
            revocable_admin_token(&all, "old", 10),
            Err(StoreError::NotFound { .. })
        ));
    }
}
