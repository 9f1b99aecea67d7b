//! The store's part of a cascade: revoking a task with N delegated
//! children (one write: the subtree's state, one `task.revoked` event per
//! child, the root's feed entry and event), and completing a task with no
//! children while 50,000 others are live (what most completions are, on a
//! busy broker). SQLite in a temp dir, and PostgreSQL when the testkit can
//! start a throwaway cluster. The tree is rebuilt (not timed) before every
//! revoke.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::*;
use mandate_store::{PostgresStore, SqliteStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILDREN: [usize; 2] = [1_000, 10_000];
const DEADLINE: i64 = 4_000_000_000;

fn ev(kind: EventKind) -> NewEvent {
    NewEvent::new(kind, "bench")
}

fn id() -> TaskId {
    TaskId::from_random(rand_bytes())
}

/// Unique ids without a dependency: a counter spread over 16 bytes.
fn rand_bytes() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut b = [0; 16];
    b[..8].copy_from_slice(&h.to_le_bytes());
    b[8..].copy_from_slice(&n.to_le_bytes());
    b
}

fn agent(name: &str) -> Agent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        owner: OwnerName::parse("bench").unwrap(),
        environment: Environment::Staging,
        allowed_tools: vec![],
        description: String::new(),
        model: None,
        model_version: None,
    }
    .into_agent(&TrustDomain::parse("bench.local").unwrap(), 0)
    .unwrap()
}

/// A task shaped like the load test's: one tool, one action, a pattern.
fn task(agent: &Agent, parent: Option<&Task>) -> Task {
    let delegation = parent.map(|p| Delegation {
        parent: p.id.clone(),
        root: p.id.clone(),
        chain: vec![Link {
            agent: p.agent.clone(),
            task: p.id.clone(),
        }],
        root_intent: p.intent.clone(),
    });
    Task {
        id: id(),
        agent: agent.name.clone(),
        intent: "cascade benchmark".into(),
        scope: serde_json::from_value(serde_json::json!(
            [{"tool": "items", "actions": ["items:read"], "resources": ["item:*"]}]
        ))
        .unwrap(),
        environment: Environment::Staging,
        state: TaskState::Active,
        requested_by: None,
        reasons: vec!["allow-task-start".into()],
        created_at: 1,
        deadline: DEADLINE,
        ended_at: None,
        delegation,
        model: None,
        approval: None,
        breakglass: None,
    }
}

async fn seeded(store: &Arc<dyn Store>) {
    let owner = Owner {
        name: OwnerName::parse("bench").unwrap(),
        kind: mandate_core::OwnerKind::Team,
        description: String::new(),
        created_at: 0,
    };
    store
        .create_owner(owner, ev(EventKind::OwnerCreated))
        .await
        .unwrap();
    for name in ["lead", "helper"] {
        store
            .create_agent(agent(name), ev(EventKind::AgentCreated))
            .await
            .unwrap();
    }
}

/// A root task of `lead` with `n` children of `helper`, stored as the
/// broker stores delegations (concurrently, so they share commits).
async fn tree(store: &Arc<dyn Store>, n: usize) -> TaskId {
    let root = task(&agent("lead"), None);
    store
        .create_task(root.clone(), ev(EventKind::TaskCreated))
        .await
        .unwrap();
    let helper = agent("helper");
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let s = store.clone();
        let child = task(&helper, Some(&root));
        pending.push(tokio::spawn(async move {
            s.delegate_task(child, 2, ev(EventKind::TaskDelegated), None)
                .await
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    root.id
}

fn revoke(c: &mut Criterion, backend: &str, store: Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
    rt.block_on(seeded(&store));
    let mut g = c.benchmark_group(format!("cascade_revoke/{backend}"));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for n in CHILDREN {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let root = rt.block_on(tree(&store, n));
                    let at = Instant::now();
                    let moved = rt
                        .block_on(store.transition_task(
                            &root,
                            TaskState::Revoked,
                            3,
                            ev(EventKind::TaskRevoked),
                        ))
                        .unwrap();
                    took += at.elapsed();
                    assert_eq!(moved.subtree.len(), n);
                }
                took
            })
        });
    }
    g.finish();
}

/// Other live tasks while a leaf completes.
const LIVE: usize = 50_000;

fn complete_leaf(
    c: &mut Criterion,
    backend: &str,
    store: Arc<dyn Store>,
    rt: &tokio::runtime::Runtime,
) {
    let lead = agent("lead");
    rt.block_on(async {
        let mut pending = Vec::with_capacity(LIVE);
        for _ in 0..LIVE {
            let (s, t) = (store.clone(), task(&lead, None));
            pending.push(tokio::spawn(async move {
                s.create_task(t, ev(EventKind::TaskCreated)).await
            }));
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
    });
    let mut g = c.benchmark_group(format!("complete_leaf/{backend}"));
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::from_parameter(LIVE), |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let t = task(&lead, None);
                rt.block_on(store.create_task(t.clone(), ev(EventKind::TaskCreated)))
                    .unwrap();
                let at = Instant::now();
                rt.block_on(store.transition_task(
                    &t.id,
                    TaskState::Completed,
                    3,
                    ev(EventKind::TaskCompleted),
                ))
                .unwrap();
                took += at.elapsed();
            }
            took
        })
    });
    g.finish();
}

fn cascade(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("mandate.db")).unwrap());
    revoke(c, "sqlite", sqlite.clone(), &rt);
    complete_leaf(c, "sqlite", sqlite, &rt);
    if let Some(url) = mandate_testkit::postgres::database("bench_cascade") {
        let pg: Arc<dyn Store> = Arc::new(
            rt.block_on(PostgresStore::open(url.into(), Default::default()))
                .unwrap(),
        );
        revoke(c, "postgres", pg.clone(), &rt);
        complete_leaf(c, "postgres", pg, &rt);
    }
}

criterion_group!(benches, cascade);
criterion_main!(benches);
