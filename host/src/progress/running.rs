//! The steps running now, for `envsync-host status` and the status page,
//! which run in other processes than the steps: one small JSON file per
//! running step in `<state dir>/running/`, rewritten at every progress tick
//! and removed when the step ends.
//!
//! Files rather than a socket: `status` already reads the state folder, it
//! works with no daemon, and a file written by a process that has since
//! died (SIGKILL, a lost machine) is recognised by its pid and ignored, then
//! removed by the next step that starts in that folder.

use super::Snapshot;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const DIR_NAME: &str = "running";

/// One running step as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningStep {
    pub pid: u32,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub plugin: String,
    pub instance: String,
    pub database: String,
    pub operation: String,
    pub started: DateTime<Utc>,
    /// When this file was last written.
    pub updated: DateTime<Utc>,
    /// None until the step streams bytes or its plugin reports progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Snapshot>,
}

/// The file of one running step; dropping it removes the file.
pub struct RunningFile {
    path: PathBuf,
}

/// Distinguishes the steps one process runs at once (the daemon).
static NEXT: AtomicU64 = AtomicU64::new(0);

impl RunningFile {
    /// Creates the file of a step starting now in `state_dir`, and removes
    /// the files of processes that are gone.
    pub fn create(state_dir: &Path, step: &RunningStep) -> Result<RunningFile> {
        let dir = state_dir.join(DIR_NAME);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        remove_dead(&dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = RunningFile {
            path: dir.join(format!("{}-{n}.json", std::process::id())),
        };
        file.write(step)?;
        Ok(file)
    }

    /// Replaces the file's content (write then rename: a reader never sees
    /// half a file).
    pub fn write(&self, step: &RunningStep) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(step)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for RunningFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The steps running now in `state_dir` (files of dead processes left out),
/// oldest first.
pub fn read_all(state_dir: &Path) -> Vec<RunningStep> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(DIR_NAME)) else {
        return Vec::new();
    };
    let mut out: Vec<RunningStep> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<RunningStep>(&bytes).ok())
        .filter(|s| alive(s.pid))
        .collect();
    out.sort_by_key(|s| s.started);
    out
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn remove_dead(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(pid: u32) -> RunningStep {
        RunningStep {
            pid,
            environment: "staging".into(),
            task: Some("shop".into()),
            plugin: "postgres".into(),
            instance: "db1".into(),
            database: "shop".into(),
            operation: "restore".into(),
            started: Utc::now(),
            updated: Utc::now(),
            progress: None,
        }
    }

    #[test]
    fn progress_running_files_come_and_go_with_the_step() {
        let dir = tempfile::tempdir().unwrap();
        // A file left by a killed process (no such pid) is ignored, then removed.
        let dead = u32::MAX - 1;
        std::fs::create_dir_all(dir.path().join(DIR_NAME)).unwrap();
        let stale = dir.path().join(DIR_NAME).join(format!("{dead}-0.json"));
        std::fs::write(&stale, serde_json::to_vec(&step(dead)).unwrap()).unwrap();
        assert!(read_all(dir.path()).is_empty());
        let file = RunningFile::create(dir.path(), &step(std::process::id())).unwrap();
        assert!(!stale.exists());
        let running = read_all(dir.path());
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].database, "shop");
        drop(file);
        assert!(read_all(dir.path()).is_empty());
    }
}
