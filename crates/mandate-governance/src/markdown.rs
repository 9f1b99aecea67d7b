//! The report as Markdown (a pull request comment, a wiki page).

use crate::frameworks::{FRAMEWORKS, title};
use crate::kind::Severity;
use crate::report::Report;
use std::fmt::Write;

/// Table cells: no pipe or newline may break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Mandate posture report\n");
    let _ = writeln!(
        out,
        "Generated {}; use counted over the last {} days. {} finding(s).\n",
        crate::report::utc(r.generated_at),
        r.period_days,
        r.findings.len()
    );
    let _ = writeln!(out, "## By severity\n\n| severity | findings |\n|---|---|");
    for s in Severity::ALL.iter().rev() {
        let _ = writeln!(
            out,
            "| {s} | {} |",
            r.summary.by_severity.get(s).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out, "\n## By framework\n");
    for (key, name) in FRAMEWORKS {
        let Some(items) = r.summary.by_framework.get(key) else {
            continue;
        };
        let _ = writeln!(out, "**{name}**\n\n| item | findings |\n|---|---|");
        for (id, n) in items {
            let t = title(key, id).unwrap_or("");
            let _ = writeln!(out, "| {} {} | {n} |", cell(id), cell(t));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Findings\n");
    if r.findings.is_empty() {
        let _ = writeln!(out, "None.");
    }
    for f in &r.findings {
        let _ = writeln!(out, "### [{}] {}\n", f.severity, cell(&f.title));
        let _ = writeln!(out, "- id: `{}`", f.id);
        let _ = writeln!(out, "- evidence: `{}`", f.evidence);
        let _ = writeln!(out, "- fix: `{}`", f.fix);
        for ((key, ids), (_, name)) in f.frameworks.by_framework().into_iter().zip(FRAMEWORKS) {
            if ids.is_empty() {
                continue;
            }
            let named: Vec<String> = ids
                .iter()
                .map(|id| format!("{id} {}", title(key, id).unwrap_or("")))
                .collect();
            let _ = writeln!(out, "- {name}: {}", named.join("; "));
        }
        out.push('\n');
    }
    out
}
