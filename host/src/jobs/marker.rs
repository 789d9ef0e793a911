//! The "busy" marker: a file that exists while any task runs, so unattended
//! reboots (a patching cron job, a `needrestart` hook, a reboot script) can
//! wait for it to disappear instead of cutting a restore in half.
//!
//! Several processes may run tasks at once (the daemon and a manual run),
//! so the marker lists its holders, one line each (`pid task since`); the
//! last holder to leave removes it. Changes happen under an `flock` on a
//! side file, and lines of processes that died are dropped on every change.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One holder's place in the marker; dropping it leaves.
#[derive(Debug)]
pub struct BusyMarker {
    path: PathBuf,
    id: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl BusyMarker {
    /// Adds this run of `task` to the marker at `path`, creating it.
    pub fn enter(path: &Path, task: &str) -> Result<BusyMarker> {
        let id = format!(
            "{}:{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let line = format!(
            "{id} task={task} since={}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        update(path, |lines| lines.push(line))
            .with_context(|| format!("creating the busy marker {}", path.display()))?;
        Ok(BusyMarker {
            path: path.to_path_buf(),
            id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BusyMarker {
    fn drop(&mut self) {
        let prefix = format!("{} ", self.id);
        if let Err(e) = update(&self.path, |lines| {
            lines.retain(|l| !l.starts_with(&prefix))
        }) {
            tracing::warn!("busy marker {} not updated: {e:#}", self.path.display());
        }
    }
}

/// Rewrites the marker's lines under the side lock; no lines → no file.
fn update(path: &Path, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _guard = Flock::exclusive(&lock)?;
    let mut lines: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    lines.retain(|l| holder_alive(l));
    change(&mut lines);
    if lines.is_empty() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        return Ok(());
    }
    // Replace atomically: a reader never sees a half-written marker.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n")?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether the process that wrote `line` still runs.
fn holder_alive(line: &str) -> bool {
    let Some(pid) = line
        .split(':')
        .next()
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// An exclusive `flock`, released on drop.
struct Flock<'f>(&'f File);

impl<'f> Flock<'f> {
    fn exclusive(file: &'f File) -> Result<Flock<'f>> {
        // SAFETY: flock on a descriptor owned by `file`, which outlives us.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking the busy marker");
        }
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_exists_while_any_holder_is_inside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/envsync-busy");
        let a = BusyMarker::enter(&path, "orders").unwrap();
        let b = BusyMarker::enter(&path, "users").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("task=orders") && text.contains("task=users"),
            "{text}"
        );
        drop(a);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("task=orders") && text.contains("task=users"),
            "{text}"
        );
        drop(b);
        assert!(!path.exists());
    }

    #[test]
    fn lines_of_dead_processes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy");
        // pid 0x7ffffff0 does not exist.
        std::fs::write(&path, "2147483632:0 task=old since=x\n").unwrap();
        let m = BusyMarker::enter(&path, "new").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("task=old"), "{text}");
        drop(m);
        assert!(!path.exists());
    }
}
