//! The posture rules: each turns facts into findings, with evidence and
//! the command that fixes it. A fixed thing produces no finding on the
//! next run, so a report is a to-do list that empties.

use crate::facts::Facts;
use crate::finding::Finding;
use crate::frameworks;
use crate::inventory::Inventory;
use crate::kind::{FindingKind as K, Severity};
use mandate_core::{AgentState, AuthStrength, DeliveryMode, Environment, LeaseState, OwnerKind};
use serde_json::json;
use std::collections::BTreeSet;

/// Every finding the facts support, most severe first, then by id.
pub fn assess(f: &Facts) -> Vec<Finding> {
    let inv = Inventory::of(f);
    let mut out = Vec::new();
    secrets(f, &inv, &mut out);
    agents(&inv, &mut out);
    tools(f, &mut out);
    activity(f, &mut out);
    leases(f, &mut out);
    limits(f, &mut out);
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    out
}

fn finding(
    kind: K,
    subject: (&str, &str),
    title: String,
    evidence: serde_json::Value,
    fix: String,
) -> Finding {
    Finding::new(
        kind,
        frameworks::severity(kind),
        subject,
        title,
        evidence,
        fix,
    )
}

fn secrets(f: &Facts, inv: &Inventory, out: &mut Vec<Finding>) {
    for e in &inv.secrets {
        let s = &e.secret;
        let name = s.name.as_str();
        let subject = ("secret", name);
        if s.human_credential && !e.used_by.is_empty() {
            out.push(finding(
                K::HumanCredentialUsed,
                subject,
                format!("a person's credential `{name}` is used by {} agent(s)", e.used_by.len()),
                json!({"secret": name, "tool": s.tool, "class": s.class, "used_by": e.used_by,
                    "expires_at": s.expires_at}),
                format!("mandate secret rotate {name} --class tool --from-file <an application credential for {}>", s.tool),
            ));
        }
        let owners: BTreeSet<&str> = f
            .agents
            .iter()
            .filter(|a| e.used_by.contains(&a.name) || e.allowed_agents.contains(&a.name))
            .map(|a| a.owner.as_str())
            .collect();
        if owners.len() > 1 {
            out.push(finding(
                K::SecretSharedAcrossOwners,
                subject,
                format!("`{name}` reaches agents of {} owners", owners.len()),
                json!({"secret": name, "tool": s.tool, "owners": owners}),
                format!("give each owner its own tool and secret (mandate tool create <{}-OWNER> …; mandate secret put …), then narrow {}'s agents", s.tool, s.tool),
            ));
        }
        let p = f.rotation.of(s.class);
        if e.rotation.overdue {
            out.push(finding(
                K::RotationOverdue,
                subject,
                format!(
                    "`{name}` ({}) was last rotated more than {} days ago",
                    s.class,
                    p.max_age_secs / 86_400
                ),
                json!({"secret": name, "class": s.class, "version": s.version,
                    "last_rotated": s.rotated_at.unwrap_or(s.created_at),
                    "rotation_due_at": e.rotation.rotation_due_at, "max_age_secs": p.max_age_secs}),
                format!(
                    "mandate secret rotate {name} --from-file <the new {} credential>",
                    s.tool
                ),
            ));
        }
        if e.rotation.unused {
            out.push(finding(
                K::SecretUnused,
                subject,
                format!(
                    "`{name}` has not been used for {} days or more",
                    p.unused_after_secs / 86_400
                ),
                json!({"secret": name, "class": s.class, "last_used_at": s.last_used_at,
                    "idle_since": e.rotation.idle_since, "unused_after_secs": p.unused_after_secs}),
                format!("revoke it at its provider, then: mandate secret delete {name}"),
            ));
        }
        if s.human_credential && s.is_expired(f.now) {
            out.push(finding(
                K::ExceptionExpired,
                subject,
                format!("the exception for `{name}` expired"),
                json!({"secret": name, "class": s.class, "expires_at": s.expires_at}),
                format!("revoke it at its provider, then: mandate secret delete {name}"),
            ));
        }
        if e.owner_kind == OwnerKind::Person {
            out.push(finding(
                K::NoTeamOwner,
                subject,
                format!("secret `{name}` is owned by a person (`{}`)", s.owner),
                json!({"secret": name, "owner": s.owner, "owner_kind": e.owner_kind}),
                format!(
                    "mandate owner create <team> --kind team; then store `{name}` again under it"
                ),
            ));
        }
    }
}

fn agents(inv: &Inventory, out: &mut Vec<Finding>) {
    for a in inv.agents.iter().filter(|a| a.state == AgentState::Active) {
        let name = a.name.as_str();
        if a.owner_kind == OwnerKind::Person {
            let mut x = finding(
                K::NoTeamOwner,
                ("agent", name),
                format!("agent `{name}` is owned by a person (`{}`)", a.owner),
                json!({"agent": name, "owner": a.owner, "environment": a.environment}),
                format!(
                    "mandate agent create <{name}-2> --owner <team> …, move its work, then: mandate agent revoke {name}"
                ),
            );
            if a.environment == Environment::Production {
                x.severity = Severity::High;
            }
            out.push(x);
        }
        if a.environment == Environment::Production && a.auth_strength == AuthStrength::JoinToken {
            out.push(finding(
                K::JoinTokenOnly,
                ("agent", name),
                format!("production agent `{name}` has no key and no federation binding: only a join token"),
                json!({"agent": name, "auth": a.auth, "auth_strength": a.auth_strength}),
                format!("mandate agent join-token {name}; on the workload: mandate agent enroll … (then use DPoP-bound tokens)"),
            ));
        }
    }
}

fn tools(f: &Facts, out: &mut Vec<Finding>) {
    for t in f
        .tools
        .iter()
        .filter(|t| t.delivery.mode == DeliveryMode::Reveal)
    {
        let name = t.name.as_str();
        out.push(finding(
            K::RevealTool,
            ("tool", name),
            format!("tool `{name}` hands its secret to agents (reveal)"),
            json!({"tool": name, "environment": t.environment, "sensitivity": t.sensitivity,
                "egress_hosts": t.egress_hosts.len()}),
            format!("mandate tool update {name} --delivery inject --upstream <its API base URL>"),
        ));
    }
    for w in &f.wildcard_permits {
        out.push(finding(
            K::WildcardOnRestricted,
            ("policy", &format!("{}@{}", w.policy, w.tool)),
            format!("policy `{}` permits any action on restricted tool `{}`", w.policy, w.tool),
            json!({"policy": w.policy, "tool": w.tool, "probe": "an action outside every grant"}),
            format!("add `context.grant_actions.contains(context.request.action)` to `{}`, then: mandate policy check <dir> && mandate policy reload", w.policy),
        ));
    }
    for t in &f.tools {
        let Some(s) = f.secrets.iter().find(|s| s.tool == t.name) else {
            continue;
        };
        let ceiling = f.rotation.of(s.class).max_task_ttl_secs;
        if f.task_max_ttl_secs > ceiling {
            let name = t.name.as_str();
            out.push(finding(
                K::TaskTtlAboveCeiling,
                ("tool", name),
                format!("tasks may last {} s, longer than the {} class allows for `{name}` ({} s)", f.task_max_ttl_secs, s.class, ceiling),
                json!({"tool": name, "class": s.class, "task_max_ttl_secs": f.task_max_ttl_secs,
                    "class_max_task_ttl_secs": ceiling}),
                format!("set task_max_ttl_secs = {ceiling} in the broker's config (or raise [rotation.{}] max_task_ttl_secs knowingly)", s.class),
            ));
        }
    }
}

fn activity(f: &Facts, out: &mut Vec<Finding>) {
    let since = f.period_start();
    for t in &f.breakglass {
        let Some(b) = t.breakglass.as_ref().filter(|b| b.opened_at >= since) else {
            continue;
        };
        let id = t.id.as_str();
        out.push(finding(
            K::BreakglassUsed,
            ("task", id),
            format!(
                "break-glass task `{id}` of `{}` was opened by {}",
                t.agent, b.opened_by
            ),
            json!({"task": id, "agent": t.agent, "opened_by": b.opened_by, "opened_at": b.opened_at,
                "justification": b.justification, "state": t.state}),
            format!("mandate task show {id}; mandate audit events --task {id}"),
        ));
    }
    for a in f.open_anomalies.iter().filter(|a| a.at >= since) {
        let seq = a.seq.to_string();
        out.push(finding(
            K::AnomalyUnacknowledged,
            ("anomaly", &seq),
            format!("anomaly `{}` (event {seq}) is not acknowledged", a.rule),
            json!({"seq": a.seq, "rule": a.rule, "task": a.task, "agent": a.agent, "at": a.at}),
            format!("mandate anomalies list; then: mandate anomalies ack {seq}"),
        ));
    }
}

fn leases(f: &Facts, out: &mut Vec<Finding>) {
    for l in f.leases.iter().filter(|l| l.state == LeaseState::Failed) {
        out.push(finding(
            K::LeaseRevocationFailed,
            ("lease", l.id.as_str()),
            format!("login `{}` of ended task `{}` is not confirmed gone ({} attempts)", l.login, l.task, l.attempts),
            json!({"lease": l.id, "login": l.login, "tool": l.tool, "task": l.task, "attempts": l.attempts,
                "last_error": l.last_error, "expires_at": l.expires_at}),
            format!("mandate lease show {}; check the engine's server; the broker retries with backoff", l.id),
        ));
    }
}

fn limits(f: &Facts, out: &mut Vec<Finding>) {
    if f.max_delegation_depth > f.delegation_depth_limit {
        out.push(finding(
            K::DelegationDepthAboveLimit,
            ("config", "max_delegation_depth"),
            format!(
                "tasks may be delegated {} hops deep; the chosen limit is {}",
                f.max_delegation_depth, f.delegation_depth_limit
            ),
            json!({"max_delegation_depth": f.max_delegation_depth,
                "limit": f.delegation_depth_limit}),
            format!(
                "set max_delegation_depth = {} in the broker's config",
                f.delegation_depth_limit
            ),
        ));
    }
}

#[cfg(test)]
#[path = "assess_tests.rs"]
mod tests;
