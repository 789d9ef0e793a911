//! Looking at and signalling other processes through `/proc` (Linux only).
//!
//! Used by the tests that kill a step half-way: they find the `pg_dump` the
//! host started among the host's descendants, freeze it, and kill it or the
//! host at a chosen moment.

use std::time::{Duration, Instant};

/// The parent pid of `pid`, if the process exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The state letter of `pid` (`R`, `S`, `T`, `Z`, …).
pub fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(state_of(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The executable name of `pid` (`/proc/PID/comm`).
pub fn comm_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// All living descendants of `root` (children, grandchildren, …).
pub fn descendants_of(root: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut found = vec![];
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &table {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found.retain(|&p| is_alive(p));
    found
}

/// The first living descendant of `root` whose executable is named `name`.
pub fn find_descendant(root: i32, name: &str) -> Option<i32> {
    descendants_of(root)
        .into_iter()
        .find(|&p| comm_of(p).as_deref() == Some(name))
}

/// Polls until a descendant of `root` named `name` appears, `gone()` says to
/// stop looking (e.g. `root` exited), or `timeout` passes.
pub fn wait_for_descendant(
    root: i32,
    name: &str,
    timeout: Duration,
    mut gone: impl FnMut() -> bool,
) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(pid) = find_descendant(root, name) {
            return Some(pid);
        }
        if gone() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Sends `signal` to `pid`; false if it does not exist.
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Makes this test process the reaper of orphaned descendants, so that a
/// grandchild orphaned by killing its parent (e.g. the `pg_dump` of a killed
/// host) becomes our child and can be reaped with [`reap`] instead of staying
/// a zombie under a PID 1 that does not reap.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Waits (up to `timeout`) for `pid`, a child of this process, to exit and
/// reaps it. Returns false if it did not exit in time or is not our child.
pub fn reap(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return true;
        }
        if r < 0 || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child program stopped with SIGSTOP (to catch a step half-way).
/// Dropping it kills it, so a failing test leaves no stopped process behind;
/// it only ever signals a process that still runs `program`.
pub struct Frozen {
    pid: i32,
    program: &'static str,
}

impl Frozen {
    /// Stops `pid`, which runs `program`.
    pub fn freeze(pid: i32, program: &'static str) -> Frozen {
        signal(pid, libc::SIGSTOP);
        Frozen { pid, program }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGKILL (and SIGCONT, for a stopped process), if it is still ours.
    pub fn kill(&self) {
        if is_alive(self.pid) && comm_of(self.pid).as_deref() == Some(self.program) {
            signal(self.pid, libc::SIGKILL);
            signal(self.pid, libc::SIGCONT);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Processes whose command line ends with `words` (each word compared by
/// its end, so `sleep` matches `/usr/bin/sleep`). Zombies have no command
/// line and never match.
pub fn running_with_args(words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.len() >= words.len()
            && args[args.len() - words.len()..]
                .iter()
                .zip(words)
                .all(|(a, w)| a.ends_with(w))
        {
            found.push(pid);
        }
    }
    found
}
