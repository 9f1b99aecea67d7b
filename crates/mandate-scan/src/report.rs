//! What one scan produced: findings, what was read, what was skipped and
//! why. Serialised as-is for `--format json` (which is also a baseline).

use crate::finding::Finding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a file was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// Larger than the size limit (judged from its metadata: never read).
    TooLarge,
    /// A NUL byte in its first 8 KiB, or a known binary extension.
    Binary,
    /// A symbolic link (followed only with `follow_symlinks`).
    Symlink,
    /// Could not be listed or read (permission, vanished, symlink loop).
    Unreadable,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::TooLarge => "too large",
            Skipped::Binary => "binary",
            Skipped::Symlink => "symlink",
            Skipped::Unreadable => "unreadable",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub skipped: BTreeMap<Skipped, u64>,
    /// Findings left out because the baseline lists them.
    pub baselined: u64,
    /// Paths that could not be read, with the reason (never file content).
    pub warnings: Vec<String>,
}

/// The JSON report: `mandate scan --format json`, and a baseline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`Report::TOOL`]: how a baseline file is recognised.
    pub tool: String,
    pub version: String,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    pub const TOOL: &'static str = "mandate-scan";

    pub fn new(findings: Vec<Finding>, summary: Summary) -> Report {
        Report {
            tool: Report::TOOL.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            findings,
            summary,
        }
    }
}
