//! Approval requests: a held task and its request written together; the
//! same thing asked again finds its request; a `once` approval spent by
//! exactly one use; a verdict final, and for a held task applied to the
//! task in the same write.

use crate::common::{Place, ev};
use crate::fixtures::{agent, refused, task, task_id, with_agents};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;
use mandate_store::{Resolved, Store, StoreError};
use std::sync::Arc;

on_each_backend!(
    a_held_task_and_its_request_are_written_together,
    the_same_thing_asked_again_finds_its_request,
    a_once_approval_is_spent_by_one_use,
    a_denial_is_final,
    approving_or_denying_a_held_task_moves_the_task,
    a_task_held_for_review_resumes_on_approval_and_ends_on_denial,
    anomalies_are_listed_newest_first_by_task,
);

fn request(resource: &str) -> Held {
    Held::Request {
        tool: ToolName::parse("t").unwrap(),
        action: "a".into(),
        resource: resource.into(),
        amount: None,
    }
}

fn pending(seed: u8, t: &Task, held: Held) -> Approval {
    Approval {
        id: ApprovalId::from_random([seed; 16]),
        task: t.id.clone(),
        agent: t.agent.clone(),
        owner: OwnerName::parse("platform").unwrap(),
        environment: t.environment,
        chain: vec![],
        held,
        intent: t.intent.clone(),
        policy_ids: vec!["p".into()],
        reasons: vec!["p: because".into()],
        state: ApprovalState::Pending,
        requested_at: 10,
        valid_until: 500,
        decided: None,
        used_at: None,
    }
}

fn admin() -> Approver {
    Approver {
        actor: "admin:a".into(),
        agent: None,
    }
}

const ONCE: Verdict = Verdict::Approve {
    extent: Extent::Once,
    for_secs: None,
};

async fn active(place: &Place) -> (Arc<dyn Store>, Task) {
    let s = with_agents(place, &["a"]).await;
    let t = task(1, &agent("a"), TaskState::Active, 1, 1000);
    s.create_task(t.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    (s, t)
}

async fn resolve(s: &Arc<dyn Store>, candidate: Approval, now: i64) -> Resolved {
    s.resolve_approval(candidate, ev(EventKind::ApprovalRequested), now)
        .await
        .unwrap()
}

async fn a_held_task_and_its_request_are_written_together(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let mut t = task(1, &agent("a"), TaskState::PendingApproval, 1, 1000);
    let a = pending(
        1,
        &t,
        Held::Task {
            scope: t.scope.clone(),
        },
    );
    // A task that does not name its request, or a request for another
    // scope, is refused whole.
    let e = refused(
        &s,
        s.create_held_task(
            t.clone(),
            ev(EventKind::TaskCreated),
            a.clone(),
            ev(EventKind::ApprovalRequested),
        ),
    )
    .await;
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    t.approval = Some(a.id.clone());
    let other = pending(1, &t, request("r"));
    refused(
        &s,
        s.create_held_task(
            t.clone(),
            ev(EventKind::TaskCreated),
            other,
            ev(EventKind::ApprovalRequested),
        ),
    )
    .await;
    s.create_held_task(
        t.clone(),
        ev(EventKind::TaskCreated),
        a.clone(),
        ev(EventKind::ApprovalRequested),
    )
    .await
    .unwrap();
    assert_eq!(s.get_task(&t.id).await.unwrap().unwrap(), t);
    assert_eq!(s.get_approval(&a.id).await.unwrap().unwrap(), a);
}

async fn the_same_thing_asked_again_finds_its_request(place: Place) {
    let (s, t) = active(&place).await;
    let first = pending(1, &t, request("r1"));
    let Resolved::Waiting { approval, opened } = resolve(&s, first.clone(), 10).await else {
        panic!("opens")
    };
    assert!(opened);
    assert_eq!(approval, first);
    // Asked again (with a new candidate id): the same request, not opened.
    let Resolved::Waiting { approval, opened } =
        resolve(&s, pending(2, &t, request("r1")), 11).await
    else {
        panic!("waits")
    };
    assert!(!opened);
    assert_eq!(approval.id, first.id);
    // Another resource is another request.
    let Resolved::Waiting { approval, opened } =
        resolve(&s, pending(3, &t, request("r2")), 12).await
    else {
        panic!("opens")
    };
    assert!(opened && approval.id != first.id);
    // Past its validity, a new one is opened.
    let Resolved::Waiting { approval, opened } =
        resolve(&s, pending(4, &t, request("r1")), 600).await
    else {
        panic!("opens")
    };
    assert!(opened && approval.id == ApprovalId::from_random([4; 16]));
    let events = s.events_since(0, 1000).await.unwrap();
    let requested = events
        .iter()
        .filter(|e| e.kind == EventKind::ApprovalRequested)
        .count();
    assert_eq!(requested, 3, "one event per opened request");
}

async fn a_once_approval_is_spent_by_one_use(place: Place) {
    let (s, t) = active(&place).await;
    // Seed 9 sorts after the later requests' ids, and every fixture request
    // is opened in the same second: the answer must not follow id order.
    let a = pending(9, &t, request("r"));
    resolve(&s, a.clone(), 10).await;
    let done = s
        .decide_approval(
            &a.id,
            ONCE,
            admin(),
            None,
            20,
            3600,
            ev(EventKind::ApprovalGranted),
        )
        .await
        .unwrap();
    assert_eq!(done.approval.state, ApprovalState::Granted);
    assert!(done.moved.is_none());
    let Resolved::Allowed(used) = resolve(&s, pending(2, &t, request("r")), 21).await else {
        panic!("allowed")
    };
    assert_eq!(
        (used.id.clone(), used.state),
        (a.id.clone(), ApprovalState::Used)
    );
    let Resolved::Waiting {
        approval: next,
        opened: true,
    } = resolve(&s, pending(3, &t, request("r")), 22).await
    else {
        panic!("spent: a new request")
    };
    let Resolved::Waiting {
        approval: again,
        opened: false,
    } = resolve(&s, pending(4, &t, request("r")), 23).await
    else {
        panic!("the new request speaks, not the spent one")
    };
    assert_eq!(again.id, next.id);
    s.decide_approval(
        &next.id,
        Verdict::Deny,
        admin(),
        None,
        24,
        3600,
        ev(EventKind::ApprovalDenied),
    )
    .await
    .unwrap();
    let Resolved::Denied(d) = resolve(&s, pending(5, &t, request("r")), 25).await else {
        panic!("the denial speaks, not the spent approval")
    };
    assert_eq!(d.id, next.id);
    let kinds: Vec<EventKind> = s
        .events_since(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::ApprovalUsed));
    assert!(kinds.contains(&EventKind::ApprovalGranted));
}

async fn a_denial_is_final(place: Place) {
    let (s, t) = active(&place).await;
    let a = pending(1, &t, request("r"));
    resolve(&s, a.clone(), 10).await;
    s.decide_approval(
        &a.id,
        Verdict::Deny,
        admin(),
        Some("no".into()),
        20,
        3600,
        ev(EventKind::ApprovalDenied),
    )
    .await
    .unwrap();
    for now in [21, 10_000] {
        let Resolved::Denied(d) = resolve(&s, pending(2, &t, request("r")), now).await else {
            panic!("denied stays denied")
        };
        assert_eq!(d.id, a.id);
    }
    let e = refused(
        &s,
        s.decide_approval(
            &a.id,
            ONCE,
            admin(),
            None,
            22,
            3600,
            ev(EventKind::ApprovalGranted),
        ),
    )
    .await;
    assert!(
        matches!(e, StoreError::Approval(ApprovalError::Decided { .. })),
        "{e}"
    );
    // The asker's own agent cannot decide, and nothing is written.
    let b = pending(3, &t, request("other"));
    resolve(&s, b.clone(), 10).await;
    let own = Approver {
        actor: "admin:t".into(),
        agent: Some((t.agent.clone(), OwnerName::parse("elsewhere").unwrap())),
    };
    let e = refused(
        &s,
        s.decide_approval(
            &b.id,
            ONCE,
            own,
            None,
            22,
            3600,
            ev(EventKind::ApprovalGranted),
        ),
    )
    .await;
    assert!(
        matches!(e, StoreError::Approval(ApprovalError::Conflict(_))),
        "{e}"
    );
    let e = refused(
        &s,
        s.decide_approval(
            &ApprovalId::from_random([9; 16]),
            ONCE,
            admin(),
            None,
            22,
            3600,
            ev(EventKind::ApprovalGranted),
        ),
    )
    .await;
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
}

async fn approving_or_denying_a_held_task_moves_the_task(place: Place) {
    let s = with_agents(&place, &["a"]).await;
    let mut ids = Vec::new();
    for seed in [1u8, 2] {
        let mut t = task(seed, &agent("a"), TaskState::PendingApproval, 1, 1000);
        let a = pending(
            seed,
            &t,
            Held::Task {
                scope: t.scope.clone(),
            },
        );
        t.approval = Some(a.id.clone());
        s.create_held_task(
            t.clone(),
            ev(EventKind::TaskCreated),
            a.clone(),
            ev(EventKind::ApprovalRequested),
        )
        .await
        .unwrap();
        ids.push((t, a));
    }
    let (started, a1) = &ids[0];
    let done = s
        .decide_approval(
            &a1.id,
            ONCE,
            admin(),
            None,
            20,
            3600,
            ev(EventKind::ApprovalGranted),
        )
        .await
        .unwrap();
    assert_eq!(done.task.state, TaskState::Active);
    let stored = s.get_task(&started.id).await.unwrap().unwrap();
    assert_eq!(stored.state, TaskState::Active);
    assert_eq!(stored.approval.as_ref(), Some(&a1.id));

    let (refusing, a2) = &ids[1];
    let done = s
        .decide_approval(
            &a2.id,
            Verdict::Deny,
            admin(),
            None,
            20,
            3600,
            ev(EventKind::ApprovalDenied),
        )
        .await
        .unwrap();
    let moved = done.moved.expect("the task was revoked");
    assert_eq!(moved.task.state, TaskState::Revoked);
    assert_eq!(
        moved.revocations.len(),
        1,
        "on the feed like any revoked task"
    );
    assert_eq!(
        s.get_task(&refusing.id).await.unwrap().unwrap().state,
        TaskState::Revoked
    );
    // A task's start takes no time-box.
    let mut t3 = task(3, &agent("a"), TaskState::PendingApproval, 1, 1000);
    let a3 = pending(
        3,
        &t3,
        Held::Task {
            scope: t3.scope.clone(),
        },
    );
    t3.approval = Some(a3.id.clone());
    s.create_held_task(
        t3,
        ev(EventKind::TaskCreated),
        a3.clone(),
        ev(EventKind::ApprovalRequested),
    )
    .await
    .unwrap();
    let timebox = Verdict::Approve {
        extent: Extent::Timebox,
        for_secs: Some(60),
    };
    let e = refused(
        &s,
        s.decide_approval(
            &a3.id,
            timebox,
            admin(),
            None,
            20,
            3600,
            ev(EventKind::ApprovalGranted),
        ),
    )
    .await;
    assert!(e.to_string().starts_with("for_secs"), "{e}");
}

async fn a_task_held_for_review_resumes_on_approval_and_ends_on_denial(place: Place) {
    let (s, t1) = active(&place).await;
    let t2 = task(2, &agent("a"), TaskState::Active, 1, 1000);
    s.create_task(t2.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let review = |seed, t: &Task| {
        pending(
            seed,
            t,
            Held::Resume {
                rule: AnomalyRule::DenialBurst,
            },
        )
    };
    let hold = |a: Approval| {
        s.suspend_for_review(
            a,
            ev(EventKind::TaskSuspended),
            ev(EventKind::ApprovalRequested),
            10,
        )
    };
    // Only a request to resume holds a task for review; nothing is left.
    refused(&s, hold(pending(9, &t1, request("r")))).await;
    let moved = hold(review(1, &t1)).await.unwrap();
    assert_eq!(moved.task.state, TaskState::Suspended);
    assert_eq!(
        s.get_approval(&review(1, &t1).id).await.unwrap().unwrap(),
        review(1, &t1)
    );
    // A suspended task cannot be held again: refused whole.
    refused(&s, hold(review(3, &t1))).await;
    hold(review(2, &t2)).await.unwrap();

    let decide = |id: ApprovalId, verdict, kind| {
        let s = s.clone();
        async move {
            s.decide_approval(&id, verdict, admin(), None, 20, 3600, ev(kind))
                .await
        }
    };
    // A time-box makes no sense for resuming: approved once.
    let timebox = Verdict::Approve {
        extent: Extent::Timebox,
        for_secs: Some(60),
    };
    refused(
        &s,
        decide(review(1, &t1).id, timebox, EventKind::ApprovalGranted),
    )
    .await;
    let done = decide(review(1, &t1).id, ONCE, EventKind::ApprovalGranted)
        .await
        .unwrap();
    assert_eq!(done.task.state, TaskState::Active);
    assert_eq!(done.moved.expect("resumed").task.state, TaskState::Active);
    assert_eq!(
        s.get_task(&t1.id).await.unwrap().unwrap().state,
        TaskState::Active
    );
    let done = decide(review(2, &t2).id, Verdict::Deny, EventKind::ApprovalDenied)
        .await
        .unwrap();
    let moved = done.moved.expect("revoked");
    assert_eq!(moved.task.state, TaskState::Revoked);
    assert_eq!(
        moved.revocations.len(),
        1,
        "on the feed like any revoked task"
    );
    let kinds: Vec<EventKind> = s
        .events_since(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::TaskResumed), "{kinds:?}");
    // A task revoked meanwhile has nothing left to resume.
    let (s3, t3) = (s.clone(), task(3, &agent("a"), TaskState::Active, 1, 1000));
    s3.create_task(t3.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    hold(review(4, &t3)).await.unwrap();
    s.transition_task(&t3.id, TaskState::Revoked, 30, ev(EventKind::TaskRevoked))
        .await
        .unwrap();
    refused(
        &s,
        decide(review(4, &t3).id, ONCE, EventKind::ApprovalGranted),
    )
    .await;
}

async fn anomalies_are_listed_newest_first_by_task(place: Place) {
    let (s, t1) = active(&place).await;
    let finding = |task: &TaskId| ev(EventKind::AnomalyDetected).task(task);
    let other = task_id(7);
    s.append_events(vec![
        finding(&t1.id),
        ev(EventKind::Decision).task(&t1.id),
        finding(&other),
        finding(&t1.id),
    ])
    .await
    .unwrap();
    let all = s.anomalies(None, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.kind == EventKind::AnomalyDetected));
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let mine = s.anomalies(Some(t1.id.clone()), None, 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter()
            .all(|e| e.task.as_deref() == Some(t1.id.as_str()))
    );
    let older = s
        .anomalies(Some(t1.id.clone()), Some(mine[0].seq), 10)
        .await
        .unwrap();
    assert_eq!(older, mine[1..].to_vec());
    assert_eq!(s.anomalies(None, None, 1).await.unwrap().len(), 1);
}
