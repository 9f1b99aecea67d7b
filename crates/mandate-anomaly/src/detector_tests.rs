use super::*;
use mandate_audit::EventKind;
use proptest::prelude::*;

fn ev(seq: u64, at_ms: i64, kind: EventKind, task: &str) -> Event {
    Event {
        seq,
        time_ms: at_ms,
        kind,
        actor: "proxy:p".into(),
        agent: Some("ci".into()),
        task: Some(task.into()),
        tool: Some("echo".into()),
        jti: Some("j1".into()),
        decision: None,
        reasons: Vec::new(),
        request_id: Some(format!("r{seq}")),
        detail: "{}".into(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn call(seq: u64, at_ms: i64, task: &str) -> Event {
    Event {
        decision: Some("allow".into()),
        ..ev(seq, at_ms, EventKind::ToolInvoked, task)
    }
}

fn denied(seq: u64, at_ms: i64, task: &str, reason: &str) -> Event {
    Event {
        decision: Some("deny".into()),
        reasons: vec![reason.into()],
        ..ev(seq, at_ms, EventKind::Decision, task)
    }
}

fn misuse(seq: u64, check: &str) -> Event {
    Event {
        decision: Some("deny".into()),
        detail: json!({"check": check}).to_string(),
        ..ev(seq, 1_000, EventKind::TokenMisuse, "t1")
    }
}

fn rules(found: &[Finding]) -> Vec<AnomalyRule> {
    found.iter().map(|f| f.rule).collect()
}

fn small() -> Config {
    let mut c = Config::default();
    c.rules.denial_burst.count = 3;
    c.rules.denial_burst.window_secs = 10;
    c.rules.rate_spike.window_secs = 1;
    c.rules.rate_spike.baseline_windows = 5;
    c.rules.rate_spike.min_history = 2;
    c.rules.rate_spike.factor = 5.0;
    c.rules.rate_spike.min_calls = 10;
    c
}

#[test]
fn use_after_the_task_ended_is_post_revocation_use() {
    let mut d = Detector::new(small());
    for check in ["ended_task", "revoked_chain"] {
        let mut d2 = Detector::new(small());
        assert_eq!(
            rules(&d2.observe(&misuse(1, check), 0)),
            [AnomalyRule::PostRevocationUse]
        );
    }
    let revoked = denied(1, 1_000, "t1", "revoked: the token has been revoked");
    let f = d.observe(&revoked, 0);
    assert_eq!(rules(&f), [AnomalyRule::PostRevocationUse]);
    assert_eq!(f[0].evidence["check"], "revoked_token");
    assert_eq!(f[0].evidence["seq"], 1);
}

#[test]
fn a_relayed_token_is_relay() {
    for check in [
        "dpop_as_bearer",
        "dpop_other_key",
        "dpop_replayed",
        "wrong_audience",
    ] {
        let mut d = Detector::new(small());
        assert_eq!(
            rules(&d.observe(&misuse(1, check), 0)),
            [AnomalyRule::Relay]
        );
    }
}

#[test]
fn one_token_from_a_second_address_is_relay() {
    let mut d = Detector::new(small());
    let from = |seq, client: &str| Event {
        detail: json!({"client": client}).to_string(),
        ..call(seq, 1_000 + seq as i64, "t1")
    };
    assert!(d.observe(&from(1, "10.0.0.1"), 0).is_empty());
    assert!(d.observe(&from(2, "10.0.0.1"), 0).is_empty());
    let f = d.observe(&from(3, "10.9.9.9"), 0);
    assert_eq!(rules(&f), [AnomalyRule::Relay]);
    assert_eq!(f[0].evidence["first_client"], "10.0.0.1");
    let mut off = small();
    off.rules.relay.address_change = false;
    let mut d = Detector::new(off);
    d.observe(&from(1, "10.0.0.1"), 0);
    assert!(d.observe(&from(2, "10.9.9.9"), 0).is_empty());
}

#[test]
fn denials_past_the_count_within_the_window_are_a_burst() {
    let mut d = Detector::new(small());
    let r = "policy_denied: no policy permits this";
    assert!(d.observe(&denied(1, 0, "t1", r), 0).is_empty());
    assert!(d.observe(&denied(2, 1_000, "t1", r), 0).is_empty());
    // Another task's refusals do not count towards t1's.
    assert!(d.observe(&denied(3, 1_500, "t2", r), 0).is_empty());
    assert_eq!(
        rules(&d.observe(&denied(4, 2_000, "t1", r), 0)),
        [AnomalyRule::DenialBurst]
    );
}

#[test]
fn denials_spread_wider_than_the_window_are_not_a_burst() {
    let mut d = Detector::new(small());
    let r = "policy_denied: no";
    for (i, at) in [0, 6_000, 12_000, 18_000].into_iter().enumerate() {
        assert!(d.observe(&denied(i as u64, at, "t1", r), 0).is_empty());
    }
}

#[test]
fn approval_pending_is_not_a_denial() {
    let mut d = Detector::new(small());
    for i in 0..10 {
        let e = denied(i, i as i64, "t1", "approval_pending: waiting for a person");
        assert!(d.observe(&e, 0).is_empty());
    }
}

#[test]
fn a_rule_fires_once_per_task_within_the_cooldown() {
    let mut d = Detector::new(small());
    assert_eq!(d.observe(&misuse(1, "dpop_other_key"), 0).len(), 1);
    assert!(d.observe(&misuse(2, "dpop_other_key"), 0).is_empty());
    let later = Event {
        time_ms: 1_000 + 61_000,
        ..misuse(3, "dpop_other_key")
    };
    assert_eq!(d.observe(&later, 0).len(), 1);
}

#[test]
fn a_call_rate_far_above_the_tasks_own_is_a_spike() {
    let mut d = Detector::new(small());
    let mut seq = 0;
    // Two calls a second for three seconds: the task's own rate.
    for s in 0..3 {
        for k in 0..2 {
            seq += 1;
            assert!(
                d.observe(&call(seq, s * 1_000 + k * 100, "t1"), 0)
                    .is_empty()
            );
        }
    }
    // Then 10 in one second: over 5 × 2 is not enough…
    let mut found = Vec::new();
    for k in 0..11 {
        seq += 1;
        found.extend(d.observe(&call(seq, 3_000 + k * 10, "t1"), 0));
    }
    assert_eq!(rules(&found), [AnomalyRule::RateSpike]);
    assert_eq!(found[0].evidence["calls"], 11);
}

#[test]
fn a_new_task_has_no_rate_to_spike_above() {
    let mut d = Detector::new(small());
    for k in 0..100 {
        assert!(d.observe(&call(k, k as i64, "t1"), 0).is_empty());
    }
}

#[test]
fn refusals_outside_scope_environment_or_sensitivity_are_out_of_scope() {
    for reason in [
        "out_of_scope: the token's scope does not cover items:write",
        "wrong_environment: production is not staging",
        "deny-out-of-scope: the action or resource is outside the task's scope",
        "no-permit: no policy permits this request",
        "deny-cross-environment: agent, task, request and tool must share one environment",
        "deny-data-above-tool-sensitivity: the data is more sensitive than the tool is cleared for",
    ] {
        let mut d = Detector::new(small());
        assert_eq!(
            rules(&d.observe(&denied(1, 0, "t1", reason), 0)),
            [AnomalyRule::OutOfScope],
            "{reason}"
        );
    }
}

#[test]
fn a_delegated_token_at_a_tool_its_chain_never_asked_for_is_unrequested() {
    let mut d = Detector::new(small());
    let root = Event {
        decision: Some("allow".into()),
        detail: json!({"task": {"scope": [{"tool": "echo", "actions": ["items:read"]}]}})
            .to_string(),
        ..ev(1, 0, EventKind::TaskCreated, "root")
    };
    let child = Event {
        decision: Some("allow".into()),
        detail: json!({"parent": "root", "scope": [{"tool": "echo"}]}).to_string(),
        ..ev(2, 0, EventKind::TaskDelegated, "child")
    };
    assert!(d.observe(&root, 0).is_empty());
    assert!(d.observe(&child, 0).is_empty());
    let at = |seq, tool: &str| Event {
        tool: Some(tool.into()),
        detail: json!({"chain": ["ci"]}).to_string(),
        ..denied(
            seq,
            10,
            "child",
            "wrong_audience: the token is for another tool",
        )
    };
    let f = d.observe(&at(3, "echo-basic"), 0);
    assert_eq!(rules(&f), [AnomalyRule::UnrequestedTool]);
    assert_eq!(f[0].tool.as_deref(), Some("echo-basic"));
    // At a tool the chain asked for, the refusal is something else.
    assert!(d.observe(&at(4, "echo"), 0).is_empty());
}

#[test]
fn state_is_bounded_by_max_tasks_and_idle_time() {
    let mut cfg = small();
    cfg.max_tasks = 50;
    cfg.idle_secs = 10;
    let mut d = Detector::new(cfg);
    for i in 0..500 {
        d.observe(&call(i, i as i64, &format!("t{i}")), i as i64);
        assert!(d.tracked() <= 50);
    }
    d.observe(&call(501, 100_000, "late"), 100_000);
    assert_eq!(d.tracked(), 1);
}

#[test]
fn events_without_a_task_or_of_other_kinds_find_nothing() {
    let mut d = Detector::new(small());
    let mut e = misuse(1, "dpop_other_key");
    e.task = None;
    assert!(d.observe(&e, 0).is_empty());
    assert!(
        d.observe(&ev(2, 0, EventKind::GrantMinted, "t1"), 0)
            .is_empty()
    );
    assert_eq!(d.tracked(), 0);
}

proptest! {
    // Whatever arrives, the map never passes its cap, and a finding
    // always names the event that tripped it.
    #[test]
    fn findings_name_their_event_and_state_stays_bounded(
        evs in proptest::collection::vec((0u8..6, 0u8..20, 0i64..5_000, 0u8..4), 1..300)
    ) {
        let mut cfg = small();
        cfg.max_tasks = 8;
        let mut d = Detector::new(cfg);
        let mut at = 0;
        for (seq, (kind, task, dt, client)) in evs.into_iter().enumerate() {
            at += dt;
            let task = format!("t{task}");
            let mut e = match kind {
                0 => call(seq as u64, at, &task),
                1 => denied(seq as u64, at, &task, "policy_denied: no"),
                2 => denied(seq as u64, at, &task, "out_of_scope: no"),
                3 => Event { time_ms: at, task: Some(task.clone()), ..misuse(seq as u64, "dpop_replayed") },
                4 => denied(seq as u64, at, &task, "revoked: the token has been revoked"),
                _ => ev(seq as u64, at, EventKind::TaskCompleted, &task),
            };
            e.detail = match kind { 3 => e.detail, _ => json!({"client": format!("10.0.0.{client}")}).to_string() };
            for f in d.observe(&e, at) {
                prop_assert_eq!(f.evidence["seq"].as_u64(), Some(seq as u64));
                prop_assert_eq!(&f.task, &task);
            }
            prop_assert!(d.tracked() <= 8);
        }
    }
}
