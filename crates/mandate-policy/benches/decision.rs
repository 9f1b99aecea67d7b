//! Cedar decision cost on the hot path (`/v1/authorize`) and at task start.
//!
//! Padded sets add 50 harmless forbids over other tools, to show what
//! slicing buys:
//! - `defaults+50-invoke`: `resource == Mandate::Tool::"other-N"` in the
//!   head, so the per-tool index skips them for `github`: same as `defaults`.
//! - `defaults+50-invoke-unindexed`: the tool named only in the `when`
//!   condition, so every request evaluates all 50 (the cost of not slicing).
//! - `defaults+50-start`: scoped to `start_task`, so the invoke slice never
//!   holds them: same as `defaults`.
use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::{Environment, Sensitivity, TaskState};
use mandate_policy::*;
use std::hint::black_box;

fn agent() -> AgentFacts<'static> {
    AgentFacts {
        name: "bot",
        environment: Environment::Staging,
        owner: "platform",
    }
}

fn tool(sensitivity: Sensitivity) -> ToolFacts<'static> {
    ToolFacts {
        name: "github",
        environment: Environment::Staging,
        sensitivity,
    }
}

fn task() -> TaskFacts<'static> {
    TaskFacts {
        id: "task_0123",
        state: TaskState::Active,
        intent: "triage issues",
        environment: Environment::Staging,
        approved: false,
        delegation_depth: 0,
        delegation_chain: &[],
        root_intent: "triage",
        breakglass: false,
    }
}

fn invoke<'a>(grant: &'a [String], action: &'a str) -> InvokeRequest<'a> {
    InvokeRequest {
        agent: agent(),
        tool: tool(Sensitivity::Internal),
        task: task(),
        action,
        resource: "repo:acme/widgets",
        grant_actions: grant,
        resource_in_scope: true,
        request_environment: None,
        data_sensitivity: None,
        anomaly_score: 0,
        now: 1_700_000_000,
        amount: None,
    }
}

/// The defaults plus 50 forbids over other tools, scoped to `action`, with
/// the tool named in the policy head (indexed at load) or only in the
/// condition (evaluated on every request).
fn padded(action: &str, tool_in_head: bool) -> PolicySet {
    let extra: String = (0..50)
        .map(|i| {
            let tool = format!("Mandate::Tool::\"other-{i}\"");
            let (head, cond) = if tool_in_head {
                (format!("resource == {tool}"), String::new())
            } else {
                ("resource".to_owned(), format!("resource == {tool} && "))
            };
            format!(
                "@id(\"pad-{i}\") @reason(\"padding\")\n\
                 forbid(principal, action == Mandate::Action::\"{action}\", {head})\n\
                 when {{ {cond}context.anomaly_score > 1000 }};\n"
            )
        })
        .collect();
    PolicySet::from_sources(
        DEFAULT_SCHEMA,
        &[
            ("default.cedar".into(), DEFAULT_POLICIES.into()),
            ("pad.cedar".into(), extra),
        ],
    )
    .expect("padded set validates")
}

fn bench_invoke(c: &mut Criterion) {
    let grant = vec!["issues:read".to_owned()];
    let sets = [
        ("defaults", PolicySet::defaults()),
        ("defaults+50-invoke", padded("invoke", true)),
        ("defaults+50-invoke-unindexed", padded("invoke", false)),
        ("defaults+50-start", padded("start_task", true)),
    ];
    for (name, set) in &sets {
        let allow = invoke(&grant, "issues:read");
        assert!(set.decide_invoke(&allow).allowed);
        c.bench_function(&format!("decide_invoke/{name}/allow"), |b| {
            b.iter(|| set.decide_invoke(black_box(&allow)))
        });
        let deny = invoke(&grant, "issues:write");
        assert!(!set.decide_invoke(&deny).allowed);
        c.bench_function(&format!("decide_invoke/{name}/deny"), |b| {
            b.iter(|| set.decide_invoke(black_box(&deny)))
        });
    }
}

fn bench_task_start(c: &mut Criterion) {
    let set = PolicySet::defaults();
    let actions = vec!["issues:read".to_owned()];
    for sensitivity in [Sensitivity::Internal, Sensitivity::Restricted] {
        let req = TaskStartRequest {
            agent: agent(),
            tool: tool(sensitivity),
            task: task(),
            requested_actions: &actions,
            anomaly_score: 0,
            now: 1_700_000_000,
        };
        c.bench_function(&format!("decide_task_start/defaults/{sensitivity}"), |b| {
            b.iter(|| set.decide_task_start(black_box(&req)))
        });
    }
}

criterion_group!(benches, bench_invoke, bench_task_start);
criterion_main!(benches);
