//! The labelled corpus, prepared for a scan: copied to a temporary
//! directory with `_gitignore` renamed `.gitignore` (a real one would hide
//! its fixtures from this repository).

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// A prepared copy of `tests/corpus/files`.
pub fn prepared_corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&corpus_dir().join("files"), dir.path());
    std::fs::rename(dir.path().join("_gitignore"), dir.path().join(".gitignore")).unwrap();
    dir
}

/// The prepared corpus, scanned with the default rules and options.
pub fn scanned_corpus() -> (
    tempfile::TempDir,
    mandate_scan::Engine,
    mandate_scan::Report,
) {
    let dir = prepared_corpus();
    let engine = mandate_scan::Engine::with_default_rules().unwrap();
    let report = mandate_scan::scan(
        &[dir.path().to_path_buf()],
        &engine,
        &mandate_scan::ScanOptions::default(),
        &|_| {},
    )
    .unwrap();
    (dir, engine, report)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `(file, line, rule)` of every credential the corpus holds.
pub fn labels() -> BTreeSet<(String, u64, String)> {
    let text = std::fs::read_to_string(corpus_dir().join("labels.json")).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    v.iter()
        .map(|l| {
            (
                l["file"].as_str().unwrap().to_owned(),
                l["line"].as_u64().unwrap(),
                l["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
