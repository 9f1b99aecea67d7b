//! The matcher alone, on generated text: MB/s of `Engine::find` on one
//! core, without the file system (bench/scan_tree.py measures the tree).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mandate_scan::{Engine, Syntax};

/// ~4 MB of code-like lines with secret-looking names but no secrets,
/// and a planted key every 2,000 lines.
fn text() -> Vec<u8> {
    let lines = [
        "    let token = tokenizer.next_token(&mut input)?;",
        "def get_password(user):\n    return vault.read(f\"secret/{user}\")",
        "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "  integrity: sha512-pQ3nXyZ9bA7kL2mV5cW8dR1tF4gH6jK0lM3nP5qS7uV9wX2yZ4aB6cD8eF0gH2iJ4kL6mN8oP0qR2sT4uV6wX8yZ0a==",
        "commit = \"3f786850e387550fdab836ed7e6dc881de23001b\"",
        "The quick brown fox jumps over the lazy dog; nothing secret here at all.",
        "const headers = { Authorization: `Bearer ${process.env.API_TOKEN}` };",
        "postgres_host: db.internal",
    ];
    let mut out = Vec::new();
    let mut i = 0usize;
    while out.len() < 4_000_000 {
        out.extend_from_slice(lines[i % lines.len()].as_bytes());
        out.push(b'\n');
        if i.is_multiple_of(2000) {
            out.extend_from_slice(format!("STRIPE_KEY=sk_live_{:024}\n", i).as_bytes());
        }
        i += 1;
    }
    out
}

fn find(c: &mut Criterion) {
    let engine = Engine::with_default_rules().expect("catalog compiles");
    let hay = text();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(hay.len() as u64));
    g.bench_function("find_code_like_4mb", |b| {
        b.iter(|| engine.find(&hay, Syntax::Code))
    });
    g.finish();
}

criterion_group!(benches, find);
criterion_main!(benches);
