//! The per-task lock: one run of a task at a time, across processes (the
//! daemon, a manual `run --config`, a second daemon on the same machine).
//!
//! An advisory `flock` on `<state dir>/locks/<environment>.<task>.lock`. The
//! kernel releases it when the holder exits, however it exits, so a crash
//! never leaves a stale lock; the file itself stays (deleting lock files
//! races with a process about to lock them). The holder writes who it is
//! into the file so a refused run can name it.

use crate::failure::{Failure, Kind};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held task lock; dropping it releases the lock.
#[derive(Debug)]
pub struct TaskLock {
    _file: File,
    path: PathBuf,
}

impl TaskLock {
    /// Takes the lock of `task` in `environment`, or fails with exit code 7
    /// naming the process that holds it.
    pub fn acquire(state_dir: &Path, environment: &str, task: &str) -> Result<TaskLock> {
        let dir = state_dir.join("locks");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the lock folder {}", dir.display()))?;
        let path = dir.join(format!(
            "{}.{}.lock",
            file_part(environment),
            file_part(task)
        ));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the task lock {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Failure::new(
                Kind::Busy,
                format!(
                    "task {task:?} of environment {environment:?} is already running ({}); this run was not started. \
                     Wait for it to finish, or stop that process (lock file {})",
                    if holder.is_empty() { "holder unknown" } else { holder },
                    path.display()
                ),
            )
            .into());
        }
        let holder = format!(
            "held by pid {} on {} since {} ({})",
            std::process::id(),
            hostname(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            command_line()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .with_context(|| format!("writing the holder into {}", path.display()))?;
        Ok(TaskLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A name made safe as part of a file name.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut line = args.join(" ");
    if line.len() > 200 {
        line.truncate(line.floor_char_boundary(200));
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = TaskLock::acquire(dir.path(), "staging", "orders").unwrap();
        let err = TaskLock::acquire(dir.path(), "staging", "orders").unwrap_err();
        assert_eq!(crate::failure::exit_code(&err), 7);
        let msg = format!("{err:#}");
        assert!(msg.contains("already running"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another task is independent.
        let _other = TaskLock::acquire(dir.path(), "staging", "users").unwrap();
        drop(first);
        TaskLock::acquire(dir.path(), "staging", "orders").unwrap();
    }

    #[test]
    fn names_are_made_safe_for_file_names() {
        assert_eq!(file_part("a/b c"), "a_b_c");
    }
}
