//! The report as one self-contained HTML page: inline style, an inline SVG
//! chart of findings by severity and by framework, no script and nothing
//! fetched, so it opens anywhere (an artifact store, a mail attachment).

use crate::frameworks::{FRAMEWORKS, title};
use crate::kind::Severity;
use crate::report::Report;
use std::fmt::Write;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const FRAMEWORK_COLOURS: [&str; 6] = [
    "#4f46e5", "#7c3aed", "#0f766e", "#b45309", "#1d4ed8", "#be185d",
];

fn colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "#7f1d1d",
        Severity::High => "#dc2626",
        Severity::Medium => "#f59e0b",
        Severity::Low => "#3b82f6",
        Severity::Info => "#6b7280",
    }
}

/// One horizontal bar per row, scaled to the largest.
fn bars(id: &str, label: &str, rows: &[(String, usize, &str)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let (row_h, label_w, bar_w) = (22, 480, 300);
    let height = rows.len() * row_h + 10;
    let mut s = format!(
        "<svg id=\"{id}\" class=\"chart\" role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(label),
        label_w + bar_w + 50,
        label_w + bar_w + 50
    );
    for (i, (name, n, fill)) in rows.iter().enumerate() {
        let y = i * row_h + 5;
        let w = n * bar_w / max;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect class=\"bar\" x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{fill}\"><title>{}: {n}</title></rect><text x=\"{}\" y=\"{}\" font-size=\"12\">{n}</text>",
            y + 14,
            esc(name),
            row_h - 6,
            esc(name),
            label_w + w + 6,
            y + 14
        );
    }
    s.push_str("</svg>");
    s
}

pub fn html(r: &Report) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Mandate posture report</h1><p>Generated {}; use counted over the last {} days; <strong>{} finding(s)</strong>.</p>",
        crate::report::utc(r.generated_at),
        r.period_days,
        r.findings.len()
    );
    let sev: Vec<(String, usize, &str)> = Severity::ALL
        .iter()
        .rev()
        .map(|s| {
            let n = r.summary.by_severity.get(s).copied().unwrap_or(0);
            (s.to_string(), n, colour(*s))
        })
        .collect();
    let _ = write!(
        body,
        "<h2>By severity</h2>{}",
        bars("severity-chart", "findings by severity", &sev)
    );
    // Per framework item, in report order: which OWASP, NIST and CSA
    // entries the findings fall under.
    let mut fw: Vec<(String, usize, &str)> = Vec::new();
    for (i, (key, name)) in FRAMEWORKS.iter().enumerate() {
        for (id, n) in r.summary.by_framework.get(*key).into_iter().flatten() {
            let label = format!("{name} · {id} {}", title(key, id).unwrap_or(""));
            fw.push((label, *n, FRAMEWORK_COLOURS[i]));
        }
    }
    let _ = write!(
        body,
        "<h2>By framework</h2>{}",
        bars("framework-chart", "findings by framework item", &fw)
    );
    for (key, name) in FRAMEWORKS {
        let Some(items) = r.summary.by_framework.get(key) else {
            continue;
        };
        let _ = write!(
            body,
            "<details><summary>{} by item</summary><table><tr><th>item</th><th>findings</th></tr>",
            esc(name)
        );
        for (id, n) in items {
            let _ = write!(
                body,
                "<tr><td>{} {}</td><td>{n}</td></tr>",
                esc(id),
                esc(title(key, id).unwrap_or(""))
            );
        }
        body.push_str("</table></details>");
    }
    body.push_str("<h2>Findings</h2>");
    if r.findings.is_empty() {
        body.push_str("<p>None.</p>");
    }
    for f in &r.findings {
        let _ = write!(
            body,
            "<section class=\"finding\" id=\"{}\"><h3><span class=\"sev\" style=\"background:{}\">{}</span> {}</h3><p><code>{}</code></p><p>Fix: <code>{}</code></p><pre>{}</pre><ul>",
            esc(&f.id),
            colour(f.severity),
            f.severity,
            esc(&f.title),
            esc(&f.id),
            esc(&f.fix),
            esc(&serde_json::to_string_pretty(&f.evidence).unwrap_or_default())
        );
        for ((key, ids), (_, name)) in f.frameworks.by_framework().into_iter().zip(FRAMEWORKS) {
            if ids.is_empty() {
                continue;
            }
            let named: Vec<String> = ids
                .iter()
                .map(|id| format!("{id} {}", title(key, id).unwrap_or("")))
                .collect();
            let _ = write!(body, "<li>{}: {}</li>", esc(name), esc(&named.join("; ")));
        }
        body.push_str("</ul></section>");
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Mandate posture report</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#111}\
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#f3f4f6;padding:.5em;overflow:auto}\
.sev{color:#fff;padding:0 .4em;border-radius:3px;font-size:.8em;text-transform:uppercase}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}\
.finding{border-top:1px solid #ddd;padding-top:.5em}";
