use super::*;
use crate::RandomId;
use proptest::prelude::*;

const NOW: UnixTime = 1_000_000;

fn name<T: TryFrom<String, Error = Invalid>>(s: &str) -> T {
    T::try_from(s.to_owned()).unwrap()
}

fn request(action: &str, resource: &str, amount: Option<i64>) -> Held {
    Held::Request {
        tool: name("payments"),
        action: action.into(),
        resource: resource.into(),
        amount,
    }
}

fn pending(held: Held) -> Approval {
    Approval {
        id: ApprovalId::from_random([7; 16]),
        task: TaskId::from_random([1; 16]),
        agent: name("bot"),
        owner: name("payments-team"),
        environment: Environment::Production,
        chain: vec![name("planner")],
        held,
        intent: "pay invoice 42".into(),
        policy_ids: vec!["payment-over-limit".into()],
        reasons: vec!["payment-over-limit: big payments need a person".into()],
        state: ApprovalState::Pending,
        requested_at: NOW,
        valid_until: NOW + 900,
        decided: None,
        used_at: None,
    }
}

fn admin() -> Approver {
    Approver {
        actor: "admin:alice".into(),
        agent: None,
    }
}

const ONCE: Verdict = Verdict::Approve {
    extent: Extent::Once,
    for_secs: None,
};

#[test]
fn approving_once_allows_one_use_then_lapses() {
    let mut a = pending(request("pay", "invoice:42", Some(5000)));
    assert_eq!(a.standing(NOW), Standing::Waits);
    a.decide(ONCE, &admin(), None, NOW + 5, 3600, NOW + 10_000)
        .unwrap();
    assert_eq!(a.standing(NOW + 6), Standing::Allows);
    a.use_at(NOW + 6);
    assert_eq!(a.state, ApprovalState::Used);
    assert_eq!(a.standing(NOW + 7), Standing::Lapsed);
}

#[test]
fn a_timebox_stands_until_its_end_and_never_past_the_task() {
    let mut a = pending(request("pay", "invoice:42", None));
    let timebox = |s| Verdict::Approve {
        extent: Extent::Timebox,
        for_secs: Some(s),
    };
    a.decide(timebox(600), &admin(), None, NOW, 3600, NOW + 300)
        .unwrap();
    assert_eq!(a.valid_until, NOW + 300, "capped by the task's deadline");
    a.use_at(NOW + 10);
    assert_eq!(
        a.standing(NOW + 299),
        Standing::Allows,
        "time-box not used up"
    );
    assert_eq!(a.standing(NOW + 300), Standing::Lapsed);
    assert_eq!(a.state_at(NOW + 300), ApprovalState::Expired);
}

#[test]
fn timebox_bounds_are_enforced_and_name_the_field() {
    for (extent, secs) in [
        (Extent::Timebox, Some(0)),
        (Extent::Timebox, Some(3601)),
        (Extent::Timebox, None),
        (Extent::Once, Some(60)),
    ] {
        let mut a = pending(request("pay", "x", None));
        let before = a.clone();
        let err = a
            .decide(
                Verdict::Approve {
                    extent,
                    for_secs: secs,
                },
                &admin(),
                None,
                NOW,
                3600,
                NOW + 9999,
            )
            .unwrap_err();
        assert!(err.to_string().starts_with("for_secs: "), "{err}");
        assert_eq!(a, before, "a refused verdict changes nothing");
    }
    let mut task = pending(Held::Task {
        scope: serde_json::from_value(
            serde_json::json!([{"tool": "payments", "actions": ["pay"]}]),
        )
        .unwrap(),
    });
    let err = task
        .decide(
            Verdict::Approve {
                extent: Extent::Timebox,
                for_secs: Some(60),
            },
            &admin(),
            None,
            NOW,
            3600,
            NOW + 9999,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("for_secs: "), "{err}");
}

#[test]
fn a_decision_is_final_and_an_expired_request_cannot_be_decided() {
    let mut a = pending(request("pay", "x", None));
    a.decide(
        Verdict::Deny,
        &admin(),
        Some("no".into()),
        NOW,
        3600,
        NOW + 9999,
    )
    .unwrap();
    assert_eq!(a.standing(NOW + 1), Standing::Refuses);
    assert_eq!(
        a.standing(NOW + 100_000),
        Standing::Refuses,
        "denial never lapses"
    );
    for v in [ONCE, Verdict::Deny] {
        let err = a
            .decide(v, &admin(), None, NOW + 1, 3600, NOW + 9999)
            .unwrap_err();
        assert!(matches!(
            err,
            ApprovalError::Decided {
                state: ApprovalState::Denied,
                ..
            }
        ));
    }
    let mut late = pending(request("pay", "x", None));
    let err = late
        .decide(ONCE, &admin(), None, NOW + 900, 3600, NOW + 9999)
        .unwrap_err();
    assert!(matches!(err, ApprovalError::Expired { .. }), "{err}");
    assert_eq!(late.state, ApprovalState::Pending);
}

#[test]
fn the_asker_its_chain_and_its_owner_cannot_approve() {
    let a = pending(request("pay", "x", None));
    let team: OwnerName = name("payments-team");
    let other: OwnerName = name("finance");
    let (bot, planner, boss): (AgentName, AgentName, AgentName) =
        (name("bot"), name("planner"), name("boss"));
    for (agent, owner) in [(&bot, &other), (&planner, &other), (&boss, &team)] {
        let mut a = a.clone();
        let err = a
            .decide(
                ONCE,
                &Approver {
                    actor: "admin:t".into(),
                    agent: Some((agent.clone(), owner.clone())),
                },
                None,
                NOW,
                3600,
                NOW + 9999,
            )
            .unwrap_err();
        assert!(matches!(err, ApprovalError::Conflict(_)), "{agent}: {err}");
        assert_eq!(a.state, ApprovalState::Pending);
    }
    let mut ok = a.clone();
    ok.decide(
        ONCE,
        &Approver {
            actor: "admin:t".into(),
            agent: Some((boss.clone(), other.clone())),
        },
        None,
        NOW,
        3600,
        NOW + 9999,
    )
    .unwrap();
    assert_eq!(ok.decided.unwrap().by, "admin:t");
}

#[test]
fn a_note_is_bounded() {
    let mut a = pending(request("pay", "x", None));
    let err = a
        .decide(
            ONCE,
            &admin(),
            Some("x".repeat(1025)),
            NOW,
            3600,
            NOW + 9999,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("note: "));
}

proptest! {
    /// An approval covers exactly what was held on its own task: any
    /// change of tool, action, resource, amount or task is not covered.
    #[test]
    fn covers_only_exactly_what_was_held(
        action in "[a-c]{1,2}", resource in "[a-c:*]{1,3}", amount in proptest::option::of(0i64..3),
        other_action in "[a-c]{1,2}", other_resource in "[a-c:*]{1,3}",
        other_amount in proptest::option::of(0i64..3), same_task in any::<bool>(),
    ) {
        let a = pending(request(&action, &resource, amount));
        let task = if same_task { a.task.clone() } else { TaskId::from_random([2; 16]) };
        let asked = request(&other_action, &other_resource, other_amount);
        let same = same_task && action == other_action && resource == other_resource
            && amount == other_amount;
        prop_assert_eq!(a.covers(&task, &asked), same);
        prop_assert_eq!(a.held.key() == asked.key(), a.held == asked);
    }
}
