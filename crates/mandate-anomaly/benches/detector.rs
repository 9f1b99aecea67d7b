//! Detector throughput: events per second through `Detector::observe`,
//! on a mix shaped like a busy broker's chain (mostly allowed proxy
//! calls, some decisions and refusals, a few task starts) over many tasks.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mandate_anomaly::{Config, Detector};
use mandate_audit::{Event, EventKind};
use std::hint::black_box;

fn events(n: usize, tasks: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let task = format!("tsk_{:016}", i % tasks);
            let (kind, decision, reasons, detail) = match i % 20 {
                0 => (
                    EventKind::TaskCreated,
                    "allow",
                    vec![],
                    r#"{"scope":[{"tool":"echo","actions":["items:read"]}],"intent":"x","deadline":1}"#.to_owned(),
                ),
                1..=3 => (
                    EventKind::Decision,
                    "allow",
                    vec![],
                    r#"{"audience":"https://echo.test","action":"items:read","resource":"item:1","client":"10.0.0.1"}"#.to_owned(),
                ),
                4 => (
                    EventKind::Decision,
                    "deny",
                    vec!["policy_denied: no policy permits this".to_owned()],
                    r#"{"audience":"https://echo.test","action":"items:write","resource":"item:1"}"#.to_owned(),
                ),
                _ => (
                    EventKind::ToolInvoked,
                    "allow",
                    vec![],
                    r#"{"at_ms":1,"action":"items:read","method":"GET","path":"/echo/items/1","status":200,"latency_ms":1,"bytes":10,"client":"10.0.0.1"}"#.to_owned(),
                ),
            };
            Event {
                seq: i as u64,
                time_ms: (i as i64) / 10,
                kind,
                actor: "proxy:p".into(),
                agent: Some("ci".into()),
                task: Some(task),
                tool: Some("echo".into()),
                jti: Some(format!("jti{}", i % tasks)),
                decision: Some(decision.into()),
                reasons,
                request_id: Some(format!("req{i}")),
                detail,
                prev_hash: String::new(),
                hash: String::new(),
            }
        })
        .collect()
}

fn observe(c: &mut Criterion) {
    let evs = events(100_000, 10_000);
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(10);
    g.bench_function("observe_100k_events_10k_tasks", |b| {
        b.iter(|| {
            let mut d = Detector::new(Config::default());
            let mut found = 0usize;
            for e in &evs {
                found += d.observe(black_box(e), e.time_ms).len();
            }
            black_box(found)
        })
    });
    g.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
