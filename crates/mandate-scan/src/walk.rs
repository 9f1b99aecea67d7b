//! Walking the trees: `.gitignore`-aware, parallel over every core, skips
//! binaries and files over the size limit without reading them, and goes
//! on past unreadable entries and symlink loops with a warning.

use crate::engine::{Engine, Syntax};
use crate::finding::Finding;
use crate::report::{Report, Skipped, Summary};
use ignore::{WalkBuilder, WalkState};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Known binary formats, skipped by name (no read).
const BINARY_EXTENSIONS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "ico",
    "webp",
    "bmp",
    "tiff",
    "pdf",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "jar",
    "war",
    "class",
    "so",
    "dylib",
    "dll",
    "exe",
    "o",
    "a",
    "lib",
    "woff",
    "woff2",
    "ttf",
    "otf",
    "eot",
    "mp3",
    "mp4",
    "mov",
    "avi",
    "wav",
    "flac",
    "ogg",
    "wasm",
    "pyc",
    "pyo",
    "bin",
    "iso",
    "dmg",
    "parquet",
    "onnx",
    "safetensors",
    "pt",
    "pth",
    "npy",
    "npz",
    "h5",
    "sqlite",
    "sqlite3",
    "db",
];
/// Git's rule: a NUL in the first 8000 bytes makes a file binary.
const BINARY_SNIFF: usize = 8000;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {reason}")]
    Root { path: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files larger than this are skipped (counted, never read).
    pub max_file_size: u64,
    /// Walker threads; 0 = one per core.
    pub threads: usize,
    pub follow_symlinks: bool,
    /// Scan files `.gitignore` excludes too.
    pub no_ignore: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_file_size: 10 * 1024 * 1024,
            threads: 0,
            follow_symlinks: false,
            no_ignore: false,
        }
    }
}

/// Scan `roots` (directories or files). `progress` is told the size of
/// each file read, from the scanning threads.
pub fn scan(
    roots: &[PathBuf],
    engine: &Engine,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, ScanError> {
    for root in roots {
        // A missing root is the user's typo, not a tree to report empty.
        std::fs::metadata(root).map_err(|e| ScanError::Root {
            path: root.display().to_string(),
            reason: io_reason(&e),
        })?;
    }
    let state = Shared::default();
    for root in roots {
        walk(root, engine, opts, progress, &state);
    }
    let mut findings = state
        .findings
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    let mut warnings = state
        .warnings
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    warnings.sort();
    let skipped = state
        .skipped
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Report::new(
        findings,
        Summary {
            files_scanned: state.files.into_inner(),
            bytes_scanned: state.bytes.into_inner(),
            skipped,
            baselined: 0,
            warnings,
        },
    ))
}

#[derive(Default)]
struct Shared {
    files: AtomicU64,
    bytes: AtomicU64,
    findings: Mutex<Vec<Finding>>,
    skipped: Mutex<BTreeMap<Skipped, u64>>,
    warnings: Mutex<Vec<String>>,
}

impl Shared {
    fn skip(&self, why: Skipped) {
        if let Ok(mut s) = self.skipped.lock() {
            *s.entry(why).or_default() += 1;
        }
    }

    fn warn(&self, why: Skipped, message: String) {
        tracing::warn!("{message}");
        self.skip(why);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(message);
        }
    }
}

fn walk(
    root: &Path,
    engine: &Engine,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
    state: &Shared,
) {
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false) // .env and .github/ are where credentials live
        .git_global(false) // the same result on every machine
        .require_git(false) // a .gitignore counts in a plain directory too
        .follow_links(opts.follow_symlinks)
        .threads(opts.threads)
        .filter_entry(|e| e.file_name() != ".git");
    if opts.no_ignore {
        builder.standard_filters(false).hidden(false);
    }
    builder.build_parallel().run(|| {
        let mut buf = Vec::with_capacity(256 * 1024);
        Box::new(move |entry| {
            match entry {
                Ok(e) => visit(root, &e, engine, opts, progress, state, &mut buf),
                Err(err) => state.warn(Skipped::Unreadable, walk_error(&err)),
            }
            WalkState::Continue
        })
    });
}

fn visit(
    root: &Path,
    entry: &ignore::DirEntry,
    engine: &Engine,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
    state: &Shared,
    buf: &mut Vec<u8>,
) {
    let Some(kind) = entry.file_type() else {
        return;
    };
    if kind.is_symlink() {
        state.skip(Skipped::Symlink);
        return;
    }
    if !kind.is_file() {
        return;
    }
    let path = entry.path();
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| BINARY_EXTENSIONS.iter().any(|b| b.eq_ignore_ascii_case(e)))
    {
        state.skip(Skipped::Binary);
        return;
    }
    match entry.metadata() {
        Ok(m) if m.len() > opts.max_file_size => {
            state.skip(Skipped::TooLarge);
            return;
        }
        Ok(_) => {}
        Err(e) => {
            state.warn(Skipped::Unreadable, walk_error(&e));
            return;
        }
    }
    buf.clear();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(opts.max_file_size + 1).read_to_end(buf));
    if let Err(e) = read {
        state.warn(
            Skipped::Unreadable,
            format!("{}: {}", path.display(), io_reason(&e)),
        );
        return;
    }
    if buf[..buf.len().min(BINARY_SNIFF)].contains(&0) {
        state.skip(Skipped::Binary);
        return;
    }
    state.files.fetch_add(1, Ordering::Relaxed);
    state.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    progress(buf.len() as u64);
    let matches = engine.find(buf, Syntax::of(path));
    if matches.is_empty() {
        return;
    }
    let relative = relative_path(root, path);
    let display = display_path(path);
    let found: Vec<Finding> = matches
        .iter()
        .map(|m| {
            Finding::new(
                engine.rule(m.rule),
                m,
                buf,
                path.to_path_buf(),
                display.clone(),
                relative.clone(),
            )
        })
        .collect();
    if let Ok(mut all) = state.findings.lock() {
        all.extend(found);
    }
}

/// The path under its root with `/` separators (what fingerprints use);
/// a root that is a file is its own file name.
pub fn relative_path(root: &Path, path: &Path) -> String {
    let rel = match path.strip_prefix(root) {
        Ok(r) if !r.as_os_str().is_empty() => r,
        _ => path.file_name().map(Path::new).unwrap_or(path),
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn display_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_owned()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn walk_error(err: &ignore::Error) -> String {
    // The ignore crate's messages name the path and the cause (a loop
    // names both ends); none carries file content.
    err.to_string()
}
