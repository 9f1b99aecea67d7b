//! Every finding kind from a state that has it, and gone once it is fixed:
//! a clean estate has no findings, and each breakage adds exactly its own.

use crate::facts::{Facts, OpenAnomaly, WildcardPermit};
use crate::kind::{FindingKind as K, Severity};
use crate::report::Report;
use mandate_core::*;
use serde_json::json;

const DAY: i64 = 86_400;
const NOW: i64 = 400 * DAY;

fn agent(name: &str, owner: &str, env: &str, tools: &[&str]) -> Agent {
    serde_json::from_value(
        json!({"name": name, "spiffe_id": format!("spiffe://t/agent/{name}"),
        "owner": owner, "environment": env, "allowed_tools": tools, "description": "",
        "state": "active", "enrolled_key": {"kty": "OKP"}, "created_at": 0}),
    )
    .unwrap()
}

fn tool(name: &str, mode: &str) -> Tool {
    serde_json::from_value(json!({"name": name, "audience": format!("https://{name}"),
        "owner": "platform", "environment": "production", "sensitivity": "restricted",
        "max_ttl_secs": 600, "actions": ["read"], "description": "", "created_at": 0,
        "delivery": {"mode": mode}}))
    .unwrap()
}

fn secret(name: &str, tool: &str, class: &str) -> Secret {
    serde_json::from_value(
        json!({"name": name, "tool": tool, "class": class, "owner": "platform",
        "human_credential": false, "shared": false, "expires_at": null, "description": "",
        "version": 1, "created_at": NOW - DAY, "rotated_at": null, "last_used_at": NOW - 60}),
    )
    .unwrap()
}

fn owner(name: &str, kind: OwnerKind) -> Owner {
    Owner {
        name: OwnerName::parse(name).unwrap(),
        kind,
        description: String::new(),
        created_at: 0,
    }
}

/// A well-run estate: team owners, keyed agents with DPoP, fresh secrets,
/// inject tools, strict limits.
fn clean() -> Facts {
    let bot = agent("bot", "platform", "production", &["github", "openai"]);
    let mut f = Facts {
        now: NOW,
        period_days: 30,
        owners: vec![
            owner("platform", OwnerKind::Team),
            owner("alice", OwnerKind::Person),
        ],
        agents: vec![bot.clone()],
        tools: vec![tool("github", "inject"), tool("openai", "inject")],
        secrets: vec![
            secret("gh", "github", "tool"),
            secret("oa", "openai", "model"),
        ],
        task_max_ttl_secs: 3600,
        max_delegation_depth: 2,
        delegation_depth_limit: 2,
        ..Facts::default()
    };
    f.tokens.insert(bot.name.clone(), (5, 5));
    f
}

fn kinds(f: &Facts) -> Vec<K> {
    Report::of(f).findings.iter().map(|x| x.kind).collect()
}

#[test]
fn a_clean_estate_has_no_findings() {
    assert_eq!(kinds(&clean()), []);
}

#[test]
fn each_kind_appears_on_its_state_and_only_then() {
    type Break = fn(&mut Facts);
    let cases: Vec<(K, Break)> = vec![
        (K::HumanCredentialUsed, |f| {
            f.secrets[0].human_credential = true;
            f.secrets[0].expires_at = Some(NOW + DAY);
            f.tool_users.insert(
                ToolName::parse("github").unwrap(),
                [AgentName::parse("bot").unwrap()].into(),
            );
        }),
        (K::SecretSharedAcrossOwners, |f| {
            f.owners.push(owner("data", OwnerKind::Team));
            f.agents
                .push(agent("etl", "data", "production", &["github"]));
            f.tokens.insert(AgentName::parse("etl").unwrap(), (1, 1));
        }),
        (K::RotationOverdue, |f| {
            f.secrets[1].created_at = NOW - 31 * DAY;
            f.secrets[1].last_used_at = Some(NOW);
        }),
        (K::SecretUnused, |f| {
            f.secrets[0].last_used_at = Some(NOW - 31 * DAY)
        }),
        (K::ExceptionExpired, |f| {
            f.secrets[0].human_credential = true;
            f.secrets[0].expires_at = Some(NOW - 1);
        }),
        (K::NoTeamOwner, |f| {
            f.secrets[0].owner = OwnerName::parse("alice").unwrap()
        }),
        (K::JoinTokenOnly, |f| f.agents[0].enrolled_key = None),
        (K::RevealTool, |f| {
            f.tools[0].delivery.mode = DeliveryMode::Reveal
        }),
        (K::BreakglassUsed, |f| {
            let mut t: Task = serde_json::from_value(json!({"id": "task_0123456789abcdef0123456789abcdef",
                "agent": "bot", "intent": "outage", "scope": [{"tool": "github", "actions": ["read"]}],
                "environment": "production", "state": "active", "requested_by": null, "reasons": [],
                "created_at": NOW - DAY, "deadline": NOW + 60})).unwrap();
            t.breakglass = Some(BreakGlass {
                justification: "INC-1".into(),
                opened_by: "admin:adm_1".into(),
                opened_at: NOW - DAY,
            });
            f.breakglass.push(t);
        }),
        (K::AnomalyUnacknowledged, |f| {
            f.open_anomalies.push(OpenAnomaly {
                seq: 9,
                at: NOW - 10,
                rule: "denial_burst".into(),
                task: None,
                agent: Some("bot".into()),
            })
        }),
        (K::WildcardOnRestricted, |f| {
            f.wildcard_permits.push(WildcardPermit {
                policy: "ops-anything".into(),
                tool: ToolName::parse("github").unwrap(),
            })
        }),
        (K::TaskTtlAboveCeiling, |f| f.task_max_ttl_secs = 4 * 3600),
        (K::DelegationDepthAboveLimit, |f| f.max_delegation_depth = 3),
        (K::LeaseRevocationFailed, |f| {
            f.leases.push(
                serde_json::from_value(json!({"id": "lease_0123456789abcdef0123456789abcdef",
                "task": "task_0123456789abcdef0123456789abcdef", "agent": "bot", "tool": "github",
                "role": "readonly", "login": "mnd_x", "state": "failed", "created_at": NOW - 60,
                "expires_at": NOW - 1, "attempts": 3, "last_error": "unreachable"}))
                .unwrap(),
            );
        }),
    ];
    let mut seen: Vec<K> = cases.iter().map(|c| c.0).collect();
    seen.sort();
    let mut all = K::ALL.to_vec();
    all.sort();
    assert_eq!(seen, all, "a case for every kind");
    for (kind, breaks) in cases {
        let mut f = clean();
        breaks(&mut f);
        assert_eq!(kinds(&f), [kind], "{kind}");
        let r = Report::of(&f);
        let x = &r.findings[0];
        assert!(!x.fix.is_empty() && x.evidence.is_object(), "{kind}");
        assert!(x.id.starts_with(kind.as_str()), "{kind}: {}", x.id);
        assert!(!x.frameworks.owasp_nhi.is_empty(), "{kind}");
        assert_eq!(r.summary.by_severity[&x.severity], 1);
    }
    // Old anomalies and break-glass outside the period do not count.
    let mut f = clean();
    f.open_anomalies.push(OpenAnomaly {
        seq: 1,
        at: NOW - 31 * DAY,
        rule: "r".into(),
        task: None,
        agent: None,
    });
    assert_eq!(kinds(&f), []);
}

#[test]
fn a_person_owning_a_production_agent_is_high_and_gates_fail_at_it() {
    let mut f = clean();
    f.agents[0].owner = OwnerName::parse("alice").unwrap();
    let r = Report::of(&f);
    assert_eq!(r.findings[0].kind, K::NoTeamOwner);
    assert_eq!(r.findings[0].severity, Severity::High);
    assert_eq!(r.at_or_above(Severity::High), 1);
    assert_eq!(r.at_or_above(Severity::Critical), 0);
}

#[test]
fn no_rendering_shows_a_secret_value_field_and_html_escapes() {
    let mut f = clean();
    f.wildcard_permits.push(WildcardPermit {
        policy: "<script>alert(1)</script>".into(),
        tool: ToolName::parse("github").unwrap(),
    });
    let r = Report::of(&f);
    let page = crate::html(&r);
    assert!(!page.contains("<script>"), "escaped");
    assert!(page.contains("id=\"severity-chart\"") && page.contains("id=\"framework-chart\""));
    let md = crate::markdown(&r);
    assert!(md.contains("policy-wildcard-on-restricted-tool"));
    assert!(md.contains("ASI02 Tool Misuse and Exploitation"));
}
