//! Cedar decision cost on the hot path (`/v1/authorize`).
use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::{Environment, Sensitivity, TaskState};
use mandate_policy::*;

fn request<'a>(grant: &'a [String], action: &'a str) -> InvokeRequest<'a> {
    InvokeRequest {
        agent: AgentFacts {
            name: "bot",
            environment: Environment::Staging,
            owner: "platform",
        },
        tool: ToolFacts {
            name: "github",
            environment: Environment::Staging,
            sensitivity: Sensitivity::Internal,
        },
        task: TaskFacts {
            id: "task_0123",
            state: TaskState::Active,
            intent: "triage issues",
            environment: Environment::Staging,
            approved: false,
            delegation_depth: 0,
        },
        action,
        resource: "repo:acme/widgets",
        grant_actions: grant,
        resource_in_scope: true,
        request_environment: None,
        data_sensitivity: None,
        anomaly_score: 0,
        now: 0,
    }
}

fn padded() -> PolicySet {
    let mut extra = String::new();
    for i in 0..50 {
        extra.push_str(&format!(
            "@id(\"pad-{i}\") forbid(principal, action == Mandate::Action::\"invoke\", resource == Mandate::Tool::\"other-{i}\") when {{ context.anomaly_score > 1000 }};\n"
        ));
    }
    PolicySet::from_sources(
        DEFAULT_SCHEMA,
        &[
            ("default.cedar".into(), DEFAULT_POLICIES.into()),
            ("pad.cedar".into(), extra),
        ],
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let grant = vec!["issues:read".to_owned()];
    let defaults = PolicySet::defaults();
    c.bench_function("decide_invoke/defaults/allow", |b| {
        b.iter(|| defaults.decide_invoke(&request(&grant, "issues:read")))
    });
    c.bench_function("decide_invoke/defaults/deny", |b| {
        b.iter(|| defaults.decide_invoke(&request(&grant, "issues:write")))
    });
    let padded = padded();
    c.bench_function("decide_invoke/defaults+50/allow", |b| {
        b.iter(|| padded.decide_invoke(&request(&grant, "issues:read")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
