//! `--rewrite`: replace an imported secret in its file by a reference to
//! an environment variable, keeping the original beside it. Only config
//! files, whose loaders expand `${VAR}`; in code a literal has to become a
//! read of the environment, which is the author's edit to make.

use crate::finding::Finding;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(
        "{path} is code, not a config file: replace the value by hand with a read of the environment variable {var}"
    )]
    Code { path: String, var: String },
    #[error(
        "{path} changed since the scan (the secret is no longer where it was found): scan again"
    )]
    Changed { path: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// What was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The untouched original.
    pub backup: PathBuf,
    /// What now stands where the value was.
    pub reference: String,
}

/// How a file of this kind refers to environment variable `var`, when it
/// is a config file that expands references (`.env`, Compose, MCP client
/// configs, shell, Dockerfiles): `${VAR}`. `None` for code.
pub fn reference_for(path: &Path, var: &str) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let config = name.starts_with(".env")
        || name.ends_with(".env")
        || name == "dockerfile"
        || name.starts_with("dockerfile.")
        || name == "containerfile"
        || matches!(
            ext.as_deref(),
            Some(
                "yaml"
                    | "yml"
                    | "json"
                    | "toml"
                    | "ini"
                    | "cfg"
                    | "conf"
                    | "properties"
                    | "sh"
                    | "bash"
                    | "zsh"
            )
        );
    config.then(|| format!("${{{var}}}"))
}

/// Replace `finding`'s value (re-read and checked against its
/// fingerprint) with a reference to `var`, after copying the file to a backup.
pub fn rewrite(finding: &Finding, var: &str) -> Result<Rewrite, RewriteError> {
    let path = &finding.path;
    let shown = path.display().to_string();
    let io = |e: std::io::Error| RewriteError::Io {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let reference = reference_for(path, var).ok_or_else(|| RewriteError::Code {
        path: shown.clone(),
        var: var.to_owned(),
    })?;
    let bytes = std::fs::read(path).map_err(io)?;
    if finding.secret_in(&bytes).is_none() {
        return Err(RewriteError::Changed {
            path: shown.clone(),
        });
    }
    let backup = free_backup_name(path);
    std::fs::copy(path, &backup).map_err(io)?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..finding.span.start]);
    out.extend_from_slice(reference.as_bytes());
    out.extend_from_slice(&bytes[finding.span.end..]);
    // Write beside it and rename, so a crash leaves the old or the new file.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path).map_err(io)?;
    tmp.1
        .write_all(&out)
        .and_then(|()| tmp.1.sync_all())
        .map_err(io)?;
    let perms = std::fs::metadata(path).map_err(io)?.permissions();
    std::fs::set_permissions(&tmp.0, perms).map_err(io)?;
    std::fs::rename(&tmp.0, path).map_err(io)?;
    Ok(Rewrite { backup, reference })
}

fn free_backup_name(path: &Path) -> PathBuf {
    let base = format!("{}.mandate-backup", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100 {
        let candidate = dir.join(format!(".{stem}.mandate-tmp{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::walk::{ScanOptions, scan};

    #[test]
    fn config_files_get_a_reference_and_code_does_not() {
        assert_eq!(
            reference_for(Path::new("app/.env"), "X").as_deref(),
            Some("${X}")
        );
        assert_eq!(
            reference_for(Path::new(".mcp.json"), "X").as_deref(),
            Some("${X}")
        );
        assert_eq!(
            reference_for(Path::new("Dockerfile"), "X").as_deref(),
            Some("${X}")
        );
        assert_eq!(reference_for(Path::new("agent.py"), "X"), None);
    }

    #[test]
    fn rewrite_replaces_the_value_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        let original = "# deps\nDATABASE_URL=postgres://app:Zq8vR2nLw5Kp@db.internal:5432/app\n";
        std::fs::write(&env, original).unwrap();
        let engine = Engine::with_default_rules().unwrap();
        let report = scan(
            &[dir.path().to_path_buf()],
            &engine,
            &ScanOptions::default(),
            &|_| {},
        )
        .unwrap();
        let f = &report.findings[0];
        let done = rewrite(f, "MANDATE_DB_TOKEN").unwrap();
        assert_eq!(std::fs::read_to_string(&done.backup).unwrap(), original);
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            "# deps\nDATABASE_URL=postgres://app:${MANDATE_DB_TOKEN}@db.internal:5432/app\n"
        );
        let again = rewrite(f, "MANDATE_DB_TOKEN").unwrap_err();
        assert!(matches!(again, RewriteError::Changed { .. }), "{again}");
    }
}
