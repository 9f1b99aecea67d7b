//! Precision and recall on the labelled corpus (tests/corpus: an agent
//! workspace of generated credentials and look-alikes). Fails below
//! 0.95 / 0.95; a finding counts only with the right file, line and rule.

mod common;

use mandate_scan::{Engine, ScanOptions, render, scan};
use std::collections::BTreeSet;

#[test]
fn corpus_precision_and_recall_are_at_least_095() {
    let (dir, _, report) = common::scanned_corpus();
    let root = dir.path().to_string_lossy().into_owned() + "/";
    let found: BTreeSet<(String, u64, String)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.file.strip_prefix(&root).unwrap_or(&f.file).to_owned(),
                f.line,
                f.rule.clone(),
            )
        })
        .collect();
    let expected = common::labels();
    let tp = found.intersection(&expected).count() as f64;
    let precision = tp / found.len().max(1) as f64;
    let recall = tp / expected.len() as f64;
    println!(
        "corpus: {} labelled, {} found, precision {precision:.3}, recall {recall:.3}",
        expected.len(),
        found.len()
    );
    for fp in found.difference(&expected) {
        println!("  false positive: {fp:?}");
    }
    for missed in expected.difference(&found) {
        println!("  missed: {missed:?}");
    }
    assert!(
        precision >= 0.95 && recall >= 0.95,
        "precision {precision:.3}, recall {recall:.3}"
    );
}

#[test]
fn every_rule_has_a_positive_in_the_corpus() {
    let labelled: BTreeSet<String> = common::labels()
        .into_iter()
        .map(|(_, _, rule)| rule)
        .collect();
    let engine = Engine::with_default_rules().unwrap();
    let missing: Vec<&str> = engine
        .rules()
        .map(|r| r.id)
        .filter(|id| !labelled.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a labelled positive: {missing:?}"
    );
}

#[test]
fn no_report_format_carries_a_secret_value() {
    let (_dir, engine, report) = common::scanned_corpus();
    assert!(!report.findings.is_empty());
    let outputs = [
        render::text(&report),
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&render::sarif(&report, engine.rules())).unwrap(),
        format!("{report:?}"),
    ];
    for f in &report.findings {
        let bytes = std::fs::read(&f.path).unwrap();
        let secret = String::from_utf8_lossy(&bytes[f.span.clone()]).into_owned();
        // The preview's head is at most a quarter of the value; a value
        // never appears whole, nor its second half.
        let tail = &secret[secret.len() / 2..];
        for out in &outputs {
            assert!(
                !out.contains(&secret) && !out.contains(tail),
                "{} leaks {}",
                f.rule,
                f.file
            );
        }
    }
}

#[test]
fn ignored_and_binary_files_are_not_reported_and_are_counted() {
    let (dir, engine, report) = common::scanned_corpus();
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.file.contains("secrets.local.env") && !f.file.contains("build/"))
    );
    assert_eq!(
        report.summary.skipped.get(&mandate_scan::Skipped::Binary),
        Some(&1)
    );
    let all = ScanOptions {
        no_ignore: true,
        ..ScanOptions::default()
    };
    let report = scan(&[dir.path().to_path_buf()], &engine, &all, &|_| {}).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.file.ends_with("secrets.local.env")),
        "--no-ignore scans them"
    );
}
