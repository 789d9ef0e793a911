//! `envsync:plugin/process`: spawning the programs a plugin declared and the
//! operator allowed. No shell; credentials injected host-side; children run
//! at low priority and die with the step.

use super::HostResult;
use super::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::process::{
    Command, ExitStatus, Host, HostChild, Stdio,
};
use crate::runtime::bindings::envsync::plugin::types::CredentialEnv;
use crate::runtime::sandbox::StepState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;
/// Host variables every child gets, so programs find their libraries,
/// locale and `~/.pgpass`-style files.
const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
];

/// Which programs this step may run, and how credentials reach them.
#[derive(Debug)]
pub struct ProcessPolicy {
    plugin: String,
    declared: BTreeSet<String>,
    /// Declared programs the operator did not allow.
    refused: BTreeSet<String>,
    /// Allowed programs with their resolved paths (None: not installed).
    allowed: BTreeMap<String, Option<PathBuf>>,
    credentials: CredentialEnv,
}

impl ProcessPolicy {
    /// Grants the intersection of what the plugin declared and what the
    /// operator allows (`None`: everything declared).
    pub fn new(
        plugin: &str,
        declared: &[String],
        operator_allows: Option<&[String]>,
        credentials: CredentialEnv,
    ) -> Self {
        let mut allowed = BTreeMap::new();
        let mut refused = BTreeSet::new();
        for program in declared {
            if operator_allows.is_some_and(|list| !list.contains(program)) {
                refused.insert(program.clone());
            } else {
                allowed.insert(program.clone(), find_on_path(program));
            }
        }
        ProcessPolicy {
            plugin: plugin.to_string(),
            declared: declared.iter().cloned().collect(),
            refused,
            allowed,
            credentials,
        }
    }

    /// A policy that allows nothing (used while describing a plugin).
    pub fn none() -> Self {
        let credentials = CredentialEnv {
            host: None,
            port: None,
            user: None,
            password: None,
            passthrough: Vec::new(),
        };
        ProcessPolicy::new("", &[], Some(&[]), credentials)
    }

    fn resolve(&self, program: &str) -> Result<PathBuf, WitError> {
        if !self.declared.contains(program) {
            return Err(WitError::Denied(format!(
                "plugin {} may not run {program:?}: it is not among the programs it declared ({}); \
                 programs must be declared in describe()",
                self.plugin,
                join(&self.declared)
            )));
        }
        if self.refused.contains(program) {
            return Err(WitError::Denied(format!(
                "program {program} is not allowed by the operator for plugin {} \
                 (allowed: {}); add it with --allow-program {program}",
                self.plugin,
                join(self.allowed.keys())
            )));
        }
        match self.allowed.get(program) {
            Some(Some(path)) => Ok(path.clone()),
            _ => Err(WitError::Other(format!(
                "program {program} is not installed or not on PATH; install it on the host \
                 running envsync-host"
            ))),
        }
    }

    /// Names a plugin must not set itself: they carry credentials or change
    /// what gets executed.
    fn reserved_env(&self, name: &str) -> bool {
        let c = &self.credentials;
        [&c.host, &c.port, &c.user, &c.password]
            .iter()
            .any(|v| v.as_deref() == Some(name))
            || c.passthrough.iter().any(|v| v == name)
            || name.starts_with("LD_")
            || BASE_ENV.contains(&name)
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.into_iter().map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Looks `program` up on the host's PATH. Names with a slash are refused:
/// plugins name programs, the operator's PATH decides which binary runs.
fn find_on_path(program: &str) -> Option<PathBuf> {
    if program.is_empty() || program.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Keeps the last bytes a child wrote to stderr.
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push_line(&mut self, line: &str) {
        self.0.extend(line.as_bytes());
        self.0.push_back(b'\n');
        while self.0.len() > STDERR_TAIL {
            self.0.pop_front();
        }
    }
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// A running child program owned by the plugin's resource table.
pub struct ChildProcess {
    program: String,
    child: tokio::process::Child,
    pid: Option<u32>,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    /// The table slot of the stdin sink once the plugin took it, so `wait`
    /// can close it.
    stdin_sink: Option<u32>,
    stderr: Arc<Mutex<Tail>>,
    stderr_reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    fn kill_group(&mut self) {
        if self.status.is_none()
            && let Some(pid) = self.pid
        {
            // The child leads its own process group: take its helpers too.
            unsafe {
                libc::killpg(pid as i32, libc::SIGKILL);
            }
        }
    }

    async fn wait(&mut self) -> Result<ExitStatus, WitError> {
        if let Some(status) = &self.status {
            return Ok(status.clone());
        }
        self.stdin.take();
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| WitError::Io(format!("waiting for {} failed: {e}", self.program)))?;
        if let Some(reader) = self.stderr_reader.take() {
            // Grandchildren may keep stderr open; don't hang on them.
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        use std::os::unix::process::ExitStatusExt;
        let status = ExitStatus {
            success: status.success(),
            code: status.code(),
            signal: status.signal(),
            stderr_tail: self.stderr.lock().expect("stderr tail").text(),
        };
        tracing::debug!(program = self.program, ?status.code, ?status.signal, "child exited");
        self.status = Some(status.clone());
        Ok(status)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Asks for a 1 MiB pipe buffer (Linux's default is 64 KiB); best effort.
fn grow_pipe(pipe: &impl std::os::fd::AsRawFd) {
    const PIPE_SIZE: libc::c_int = 1 << 20;
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

fn stdin_label(program: &str, pid: Option<u32>) -> String {
    format!("{program} stdin (pid {})", pid.unwrap_or(0))
}

/// Nice 10 (or lower still, if already) and best-effort I/O class level 6
/// for the calling thread and what it starts later, so a dump does not
/// starve the database it reads. `main` calls it before any thread starts,
/// so the host runs at the priority of its programs: a pipeline whose
/// stages run at different priorities waits on its lowest one (at nice 0
/// the host kept preempting its own pg_dump; docs/benchmarks.md). Children
/// call it between fork and exec too, for hosts embedded as a library.
/// Only system calls: safe to run in a forked child.
pub fn lower_priority() -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    const NICE: libc::c_int = 10;
    unsafe {
        if libc::getpriority(libc::PRIO_PROCESS, 0) < NICE {
            libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
        }
        // Lowered only: an idle class, or a lower best-effort level, stays.
        let wanted = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 6;
        let current = libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) as libc::c_int;
        let class = current >> IOPRIO_CLASS_SHIFT;
        if class == 0 || (class == IOPRIO_CLASS_BE && current < wanted) {
            libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, wanted);
        }
    }
    Ok(())
}

impl StepState {
    fn build_command(&self, command: &Command) -> Result<tokio::process::Command, WitError> {
        let path = self.process.resolve(&command.program)?;
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(&command.args).env_clear();
        for name in BASE_ENV.iter().copied().chain(
            self.process
                .credentials
                .passthrough
                .iter()
                .map(String::as_str),
        ) {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        for (name, value) in &command.env {
            if self.process.reserved_env(name) {
                return Err(WitError::Denied(format!(
                    "plugin {} may not set environment variable {name} for {}: it is reserved \
                     for credentials and the host",
                    self.plugin_name, command.program
                )));
            }
            cmd.env(name, value);
        }
        if let Some(role) = &command.connection {
            let conn = self.job.connections.get(role).ok_or_else(|| {
                WitError::Denied(format!(
                    "this step has no {role} connection (it has: {})",
                    join(self.job.connections.keys())
                ))
            })?;
            let c = &self.process.credentials;
            let pairs = [
                (&c.host, conn.host.clone()),
                (&c.port, conn.port.map(|p| p.to_string())),
                (&c.user, conn.user.clone()),
                (
                    &c.password,
                    conn.password.as_ref().map(|s| s.expose().to_string()),
                ),
            ];
            for (var, value) in pairs {
                if let (Some(var), Some(value)) = (var, value) {
                    cmd.env(var, value);
                }
            }
        }
        let stdio = |s: Stdio| match s {
            Stdio::Null => StdStdio::null(),
            Stdio::Piped => StdStdio::piped(),
        };
        cmd.stdin(stdio(command.stdin))
            .stdout(stdio(command.stdout))
            .stderr(StdStdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        unsafe {
            cmd.pre_exec(lower_priority);
        }
        Ok(cmd)
    }
}

impl Host for StepState {
    async fn spawn(&mut self, command: Command) -> HostResult<Resource<ChildProcess>> {
        let mut cmd = match self.build_command(&command) {
            Ok(cmd) => cmd,
            Err(e) => {
                // A refusal is worth a warning; a missing program is often a
                // plugin probing for alternatives (mariadb vs mysql).
                let message = crate::failure::wit_message(&e);
                match e {
                    WitError::Denied(_) => tracing::warn!(plugin = self.plugin_name, "{message}"),
                    _ => tracing::debug!(plugin = self.plugin_name, "{message}"),
                }
                return Ok(Err(e));
            }
        };
        let program = command.program.clone();
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(Err(WitError::Other(format!(
                    "could not start {program}: {e}"
                ))));
            }
        };
        tracing::debug!(plugin = self.plugin_name, program, args = ?command.args, "spawned");
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let tail = stderr.clone();
            let program = program.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(program, "{line}");
                    tail.lock().expect("stderr tail").push_line(&line);
                }
            })
        });
        // Bigger pipes: the child keeps writing (or reading) while the host
        // is busy with the previous megabyte.
        if let Some(pipe) = &child.stdout {
            grow_pipe(pipe);
        }
        if let Some(pipe) = &child.stdin {
            grow_pipe(pipe);
        }
        let resource = self.table.push(ChildProcess {
            program,
            pid: child.id(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            stdin_sink: None,
            stderr,
            stderr_reader,
            status: None,
        })?;
        Ok(Ok(resource))
    }
}

impl HostChild for StepState {
    async fn stdin(
        &mut self,
        this: Resource<ChildProcess>,
    ) -> wasmtime::Result<Option<Resource<ByteSink>>> {
        let child = self.table.get_mut(&this)?;
        let Some(pipe) = child.stdin.take() else {
            return Ok(None);
        };
        // The label names the pid: `wait` uses it to find this very sink again.
        let label = stdin_label(&child.program, child.pid);
        let sink = self
            .table
            .push(ByteSink::new(label, SinkKind::Pipe(Box::new(pipe))))?;
        self.table.get_mut(&this)?.stdin_sink = Some(sink.rep());
        Ok(Some(sink))
    }

    async fn stdout(
        &mut self,
        this: Resource<ChildProcess>,
    ) -> wasmtime::Result<Option<Resource<ByteSource>>> {
        let child = self.table.get_mut(&this)?;
        let Some(pipe) = child.stdout.take() else {
            return Ok(None);
        };
        let label = format!("{} stdout", child.program);
        Ok(Some(self.table.push(ByteSource::new(
            label,
            SourceKind::Pipe(Box::new(pipe)),
        ))?))
    }

    async fn wait(&mut self, this: Resource<ChildProcess>) -> HostResult<ExitStatus> {
        // Close the stdin the plugin took, if it still holds it, so the child
        // sees end of input instead of waiting forever.
        let child = self.table.get(&this)?;
        let label = stdin_label(&child.program, child.pid);
        if let Some(rep) = child.stdin_sink
            && let Ok(sink) = self.table.get_mut(&Resource::<ByteSink>::new_borrow(rep))
            && sink.label() == label
        {
            let _ = sink.close().await;
        }
        Ok(self.table.get_mut(&this)?.wait().await)
    }

    async fn kill(&mut self, this: Resource<ChildProcess>) -> wasmtime::Result<()> {
        let child = self.table.get_mut(&this)?;
        child.kill_group();
        Ok(())
    }

    async fn drop(&mut self, this: Resource<ChildProcess>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> libc::c_int {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    /// Linux keeps a nice level per thread: a thread of its own keeps the
    /// test runner's priority as it was.
    #[test]
    fn priority_is_lowered_and_never_raised() {
        std::thread::spawn(|| {
            lower_priority().unwrap();
            assert!(nice() >= 10, "nice {}", nice());
            let io = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) };
            assert_eq!(io >> 13, 2, "best-effort I/O class, got {io:#x}");
            assert!((io & 7) >= 6, "I/O level 6 or lower, got {io:#x}");
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 15) };
            lower_priority().unwrap();
            assert_eq!(nice(), 15, "an operator's lower priority stays");
        })
        .join()
        .unwrap();
    }
}
