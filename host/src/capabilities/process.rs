//! `envsync:plugin/process`: spawning the programs a plugin declared and the
//! operator allowed. No shell; each child gets an environment built from
//! nothing, credentials only for its own connection, arguments checked
//! against the host's policy for the program (`program_policy`), and OS
//! confinement (`confine`); children run at low priority and die with the
//! step and with the host.

use super::HostResult;
use super::confine::{Confinement, Grant};
use super::program_policy::{self, Granted, Prelude, ProgramPolicy};
use super::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::connection::{Connection, Secret};
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::process::{
    Command, ExitStatus, Host, HostChild, Stdio,
};
use crate::runtime::bindings::envsync::plugin::types::CredentialEnv;
use crate::runtime::sandbox::StepState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;
/// Host variables every child gets: where programs are, and the locale.
/// Nothing else of the host's environment reaches a child; `HOME` and
/// `TMPDIR` are the step's empty scratch folder.
const BASE_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ"];
/// Variables the host sets itself.
const HOST_ENV: &[&str] = &["HOME", "TMPDIR"];
/// The operator's list of host variables a plugin's declared `passthrough`
/// may hand to children (comma-separated, e.g. `PGSSLMODE,PGSSLROOTCERT`).
/// Unset: none — a plugin never chooses which host variables it sees.
pub const PASS_ENV: &str = "ENVSYNC_CHILD_ENV";
/// How many bytes of one stderr line reach the debug log.
const STDERR_LOG_LINE: usize = 1024;

/// Which programs this step may run, and how credentials reach them.
#[derive(Debug)]
pub struct ProcessPolicy {
    plugin: String,
    declared: BTreeSet<String>,
    /// Declared programs the operator did not allow.
    refused: BTreeSet<String>,
    /// Allowed programs with their resolved paths (None: not installed).
    allowed: BTreeMap<String, Option<PathBuf>>,
    /// Programs the operator named (`--allow-program`): the only ones that
    /// may run without a host policy.
    named_by_operator: BTreeSet<String>,
    credentials: CredentialEnv,
    /// The step's scratch folder (children's HOME and TMPDIR), made at the
    /// first spawn and removed with the step.
    scratch: OnceLock<tempfile::TempDir>,
    /// Children started and not yet waited for or dropped.
    live: Arc<AtomicUsize>,
    /// A sanitised backup's structure call: only schema-only invocations
    /// (`ProgramPolicy::for_structure`).
    structure_only: bool,
    /// `backups export`: only offline converters (`ProgramPolicy::for_offline`).
    offline_only: bool,
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
            named_by_operator: operator_allows
                .unwrap_or_default()
                .iter()
                .cloned()
                .collect(),
            credentials,
            scratch: OnceLock::new(),
            live: Arc::new(AtomicUsize::new(0)),
            structure_only: false,
            offline_only: false,
        }
    }

    /// The same grant for a sanitised backup's structure call: programs run
    /// only in their schema-only form, so the call reads no rows.
    pub fn structure_only(mut self) -> Self {
        self.structure_only = true;
        self
    }

    /// The same grant for `backups export`: programs run only as offline
    /// converters (stdin to stdout, no database option), and no host
    /// credential variable is passed through.
    pub fn offline_only(mut self) -> Self {
        self.offline_only = true;
        self.credentials.passthrough.clear();
        self
    }

    /// The step's scratch folder, made on first use (mode 0700).
    fn scratch(&self) -> Result<&Path, WitError> {
        if let Some(dir) = self.scratch.get() {
            return Ok(dir.path());
        }
        let dir = tempfile::Builder::new()
            .prefix("envsync-step-")
            .tempdir()
            .map_err(|e| WitError::Io(format!("cannot create the step's scratch folder: {e}")))?;
        Ok(self.scratch.get_or_init(|| dir).path())
    }

    /// `conn` with what the operator left out taken from the host's own
    /// environment, under the names the plugin's credentials declare, when
    /// they are a database client's standard variables (`PGPASSWORD`,
    /// `MYSQL_PWD`; `programs.toml`): an operator's usual variables keep
    /// working and still travel only with this connection, and a plugin
    /// cannot name `AWS_SECRET_ACCESS_KEY` as its "password".
    fn with_host_credentials(&self, conn: &Connection) -> Connection {
        let standard = &program_policy::policies().system.credential_variables;
        let from_env = |var: &Option<String>| {
            var.as_deref()
                .filter(|v| standard.iter().any(|s| s == v))
                .and_then(|v| std::env::var(v).ok())
                .filter(|v| !v.is_empty())
        };
        let c = &self.credentials;
        let mut conn = conn.clone();
        conn.host = conn.host.or_else(|| from_env(&c.host));
        conn.port = conn
            .port
            .or_else(|| from_env(&c.port).and_then(|p| p.parse().ok()));
        conn.user = conn.user.or_else(|| from_env(&c.user));
        conn.password = conn
            .password
            .or_else(|| from_env(&c.password).map(Secret::new));
        conn
    }

    /// The host's policy for `program`, or why it may not run without one.
    fn program_policy(&self, program: &str) -> Result<Option<ProgramPolicy>, WitError> {
        match program_policy::policies().get(program) {
            Some(policy) if self.structure_only => {
                policy.for_structure().map(Some).map_err(|why| {
                    WitError::Denied(format!(
                        "plugin {} may not run {program} in a sanitised backup's structure call: {why}",
                        self.plugin
                    ))
                })
            }
            Some(policy) if self.offline_only => policy.for_offline().map(Some).map_err(|why| {
                WitError::Denied(format!(
                    "plugin {} may not run {program} in an export, which reaches no database: {why}",
                    self.plugin
                ))
            }),
            Some(policy) => Ok(Some(policy)),
            None if self.offline_only => Err(WitError::Denied(format!(
                "plugin {} may not run {program} in an export: envsync-host has no offline \
                 policy for it, so it could connect somewhere",
                self.plugin
            ))),
            None if self.structure_only => Err(WitError::Denied(format!(
                "plugin {} may not run {program} in a sanitised backup's structure call: \
                 envsync-host has no schema-only policy for it, so it could read rows",
                self.plugin
            ))),
            None if self.named_by_operator.contains(program) => Ok(None),
            None => Err(WitError::Denied(format!(
                "plugin {} may not run {program}: envsync-host has no confinement policy for it, \
                 so it runs only when the operator names it (--allow-program {program}, or \
                 allow_programs in the task); see docs/security.md",
                self.plugin
            ))),
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
            || HOST_ENV.contains(&name)
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
    fn push(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        self.0.extend(keep);
        let excess = self.0.len().saturating_sub(STDERR_TAIL);
        self.0.drain(..excess);
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
    /// The step's count of running children, released once.
    live: Option<Arc<AtomicUsize>>,
}

impl ChildProcess {
    fn release(&mut self) {
        if let Some(live) = self.live.take() {
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }

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
        self.release();
        Ok(status)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_group();
        self.release();
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

/// A command checked and ready to start, with what to do right after.
struct Prepared {
    command: tokio::process::Command,
    prelude: Option<Prelude>,
}

impl StepState {
    fn build_command(&self, command: &Command) -> Result<Prepared, WitError> {
        let process = &self.process;
        let path = process.resolve(&command.program)?;
        let policy = process.program_policy(&command.program)?;
        let connection = match &command.connection {
            Some(role) => Some(self.job.connections.get(role).ok_or_else(|| {
                WitError::Denied(format!(
                    "this step has no {role} connection (it has: {})",
                    join(self.job.connections.keys())
                ))
            })?),
            None => None,
        };
        let connection = connection.map(|c| self.process.with_host_credentials(c));
        let connection = connection.as_ref();
        let granted = Granted {
            host: connection.and_then(|c| c.host.as_deref()),
            port: connection.and_then(|c| c.port),
            user: connection.and_then(|c| c.user.as_deref()),
        };
        let args = match &policy {
            Some(policy) => policy.arguments(&command.args, &granted).map_err(|why| {
                WitError::Denied(format!(
                    "plugin {} may not run {} this way: {why} (envsync-host's policy for {}; \
                     see docs/security.md)",
                    self.plugin_name, command.program, command.program
                ))
            })?,
            None => command.args.clone(),
        };
        let scratch = process.scratch()?;
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(&args).env_clear();
        for name in BASE_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.env("HOME", scratch).env("TMPDIR", scratch);
        for name in passed_through(&process.credentials.passthrough) {
            if let Some(value) = std::env::var_os(&name) {
                cmd.env(name, value);
            }
        }
        for (name, value) in &command.env {
            let allowed = match &policy {
                Some(policy) => policy.env_allowed(name),
                None => true,
            };
            if process.reserved_env(name) || !allowed {
                return Err(WitError::Denied(format!(
                    "plugin {} may not set environment variable {name} for {}: it is reserved \
                     for credentials and the host, or not among the variables the host lets \
                     plugins set for {}",
                    self.plugin_name, command.program, command.program
                )));
            }
            cmd.env(name, value);
        }
        if let Some(conn) = connection {
            let c = &process.credentials;
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
        let ports: BTreeSet<u16> = connection
            .and_then(|c| c.port.or(policy.as_ref().and_then(|p| p.default_port)))
            .into_iter()
            .collect();
        let database_folders = match policy.as_ref().and_then(|p| p.database_folder.as_deref()) {
            Some(param) => self.database_folders(connection, param),
            None => Vec::new(),
        };
        let system = &program_policy::policies().system;
        let mut confinement = Confinement::build(&Grant {
            program: &path,
            policy: policy.as_ref(),
            system,
            scratch,
            database_folders: &database_folders,
            ports: &ports,
        })
        .map_err(|e| WitError::Other(format!("cannot confine {}: {e}", command.program)))?;
        let stdio = |s: Stdio| match s {
            Stdio::Null => StdStdio::null(),
            Stdio::Piped => StdStdio::piped(),
        };
        cmd.stdin(stdio(command.stdin))
            .stdout(stdio(command.stdout))
            .stderr(StdStdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let host_pid = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                die_with_host(host_pid)?;
                lower_priority()?;
                confinement.apply()
            });
        }
        let prelude = policy
            .and_then(|p| p.prelude)
            .filter(|_| matches!(command.stdin, Stdio::Piped));
        Ok(Prepared {
            command: cmd,
            prelude,
        })
    }

    /// The folders of the database files of `connection`, or of each of the
    /// step's connections when the command names none (a copy moves files
    /// of both): a relative path resolves under job parameter `param`, else
    /// under the host's working directory.
    fn database_folders(&self, connection: Option<&Connection>, param: &str) -> Vec<PathBuf> {
        let base = self
            .job
            .param(param)
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok());
        let Some(base) = base else {
            return Vec::new();
        };
        let connections: Vec<&Connection> = match connection {
            Some(c) => vec![c],
            None => self.job.connections.values().collect(),
        };
        connections
            .into_iter()
            .filter_map(|c| base.join(&c.database).parent().map(Path::to_path_buf))
            .collect()
    }
}

/// Host variables the plugin declared as passthrough and the operator lets
/// through (`ENVSYNC_CHILD_ENV`).
fn passed_through(declared: &[String]) -> Vec<String> {
    let Some(list) = std::env::var_os(PASS_ENV) else {
        return Vec::new();
    };
    let list = list.to_string_lossy().to_string();
    list.split(',')
        .map(str::trim)
        .filter(|name| declared.iter().any(|d| d == name))
        .map(str::to_string)
        .collect()
}

/// Between fork and exec: the child gets SIGKILL when the host dies, and
/// exits if the host already has.
fn die_with_host(host_pid: libc::pid_t) -> std::io::Result<()> {
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != host_pid {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// A random key for psql's `\restrict`: the plugin never sees it, so it
/// cannot `\unrestrict`.
fn restrict_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("envsync{}", hex::encode(bytes)))
}

/// Reads a child's stderr in bounded pieces: the last `STDERR_TAIL` bytes
/// are kept, and at most `STDERR_LOG_LINE` bytes of each line are logged,
/// however long a line the child writes.
async fn read_stderr(
    mut pipe: tokio::process::ChildStderr,
    tail: Arc<Mutex<Tail>>,
    program: String,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut dropped = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.lock().expect("stderr tail").push(&buf[..n]);
        for &b in &buf[..n] {
            if b == b'\n' {
                let cut = if dropped { " …" } else { "" };
                tracing::debug!(program, "{}{cut}", String::from_utf8_lossy(&line));
                line.clear();
                dropped = false;
            } else if line.len() < STDERR_LOG_LINE {
                line.push(b);
            } else {
                dropped = true;
            }
        }
    }
    if !line.is_empty() {
        tracing::debug!(program, "{}", String::from_utf8_lossy(&line));
    }
}

impl Host for StepState {
    async fn spawn(&mut self, command: Command) -> HostResult<Resource<ChildProcess>> {
        let max = program_policy::policies().system.max_children;
        if self.process.live.load(Ordering::SeqCst) >= max {
            let message = format!(
                "plugin {} may not start {}: it already runs {max} programs, the most one \
                 step may run at once; wait for one first",
                self.plugin_name, command.program
            );
            tracing::warn!(plugin = self.plugin_name, "{message}");
            return Ok(Err(WitError::Denied(message)));
        }
        let Prepared {
            command: mut cmd,
            prelude,
        } = match self.build_command(&command) {
            Ok(prepared) => prepared,
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
        let stderr_reader = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(read_stderr(pipe, stderr.clone(), program.clone())));
        // Bigger pipes: the child keeps writing (or reading) while the host
        // is busy with the previous megabyte.
        if let Some(pipe) = &child.stdout {
            grow_pipe(pipe);
        }
        if let Some(pipe) = &mut child.stdin {
            grow_pipe(pipe);
            if prelude == Some(Prelude::PsqlRestrict) {
                let written = match restrict_key() {
                    Ok(key) => {
                        pipe.write_all(format!("\\restrict {key}\n").as_bytes())
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    return Ok(Err(WitError::Io(format!(
                        "could not put {program} in restricted mode: {e}"
                    ))));
                }
            }
        }
        self.process.live.fetch_add(1, Ordering::SeqCst);
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
            live: Some(self.process.live.clone()),
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
