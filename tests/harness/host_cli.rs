//! Running the `envsync-host` binary under test.
//!
//! [`Host::run`] runs one command to completion and returns its exit status,
//! stdout and stderr; [`Host::spawn`] starts one in the background (for the
//! tests that kill a step half-way). [`Step`] builds an
//! `envsync-host run --plugin P --op O …` command line, and [`Expect`] gives
//! the assertions every suite uses, printing the command's whole output when
//! they fail.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::paths;
use crate::process::{self, Output, Running};

/// Exit codes of `envsync-host`.
pub mod exit {
    pub const OK: i32 = 0;
    /// The step failed.
    pub const STEP_FAILED: i32 = 1;
    /// Usage error.
    pub const USAGE: i32 = 2;
    /// Plugin not found or invalid.
    pub const PLUGIN: i32 = 3;
    /// The sandbox stopped the plugin.
    pub const SANDBOX: i32 = 4;
    /// The artifact was rejected before the target changed.
    pub const ARTIFACT_REJECTED: i32 = 5;
    /// Stopped by SIGTERM/SIGINT while a step ran.
    pub const STOPPED: i32 = 6;
    /// The task is already running (its lock is held).
    pub const BUSY: i32 = 7;
}

/// How long one host command may run before the test kills it: generous,
/// as tests run three at a time on loaded 2-core CI machines (a debug host
/// passed 180 s there when its Cranelift was still unoptimised).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline for `plugins precompile` of every plugin (23–26 s in a debug
/// host on such a machine; far more when two tests do it at once there).
pub const PRECOMPILE_TIMEOUT: Duration = Duration::from_secs(900);

/// The binary under test and the plugin folder it is pointed at.
#[derive(Debug, Clone)]
pub struct Host {
    bin: PathBuf,
    plugin_dir: PathBuf,
    timeout: Duration,
}

impl Host {
    /// The built host with the built first-party plugins (see [`paths`]).
    pub fn new() -> Result<Host> {
        Ok(Host {
            bin: paths::host_bin()?,
            plugin_dir: paths::plugin_dir()?,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Panics with the "run ./scripts/build.sh first" message if the host or
    /// the plugins are not built.
    #[track_caller]
    pub fn built() -> Host {
        match Host::new() {
            Ok(host) => host,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The same host pointed at another plugin folder.
    pub fn with_plugin_dir(&self, dir: &Path) -> Host {
        Host {
            plugin_dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// The same host with another deadline per command (big data sets).
    pub fn with_timeout(&self, timeout: Duration) -> Host {
        Host {
            timeout,
            ..self.clone()
        }
    }

    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The command line `envsync-host --plugin-dir DIR ARGS…` with an
    /// environment free of the caller's `PG*` and `ENVSYNC_*` variables
    /// (except `ENVSYNC_CACHE_DIR`, which only makes starts faster;
    /// `ENVSYNC_STATE_DIR` is a throwaway folder).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("PG") || (k.starts_with("ENVSYNC_") && k != "ENVSYNC_CACHE_DIR") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("NO_COLOR", "1");
        // Run history goes to a throwaway folder, not the user's state
        // folder; tests that read it set their own (`state_dir`, `.env`).
        cmd.env(
            "ENVSYNC_STATE_DIR",
            std::env::temp_dir().join(format!("envsync-tests-state-{}", std::process::id())),
        );
        cmd.arg("--plugin-dir").arg(&self.plugin_dir);
        cmd.args(args);
        cmd
    }

    /// Runs `envsync-host ARGS…` to completion.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_command(self.command(args))
    }

    /// Runs a command built with [`Host::command`] (e.g. with extra env).
    pub fn run_command(&self, cmd: Command) -> Output {
        match process::run(cmd, None, self.timeout) {
            Ok(out) => out,
            Err(e) => panic!("could not run envsync-host: {e:#}"),
        }
    }

    /// Starts `envsync-host ARGS…` in the background.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Running> {
        Running::spawn(self.command(args), None)
    }
}

/// An `envsync-host run --plugin P --op O …` command line.
#[derive(Debug, Clone)]
pub struct Step {
    args: Vec<String>,
}

impl Step {
    pub fn new(plugin: &str, op: &str) -> Step {
        Step {
            args: vec![
                "run".into(),
                "--plugin".into(),
                plugin.into(),
                "--op".into(),
                op.into(),
            ],
        }
    }

    /// Adds `--flag value`.
    pub fn opt(mut self, flag: &str, value: impl ToString) -> Step {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// Adds a bare argument.
    pub fn arg(mut self, arg: impl ToString) -> Step {
        self.args.push(arg.to_string());
        self
    }

    /// Adds `--param key=value`.
    pub fn param(self, key: &str, value: impl ToString) -> Step {
        let kv = format!("{key}={}", value.to_string());
        self.opt("--param", kv)
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Runs the step to completion.
    pub fn run(&self, host: &Host) -> Output {
        host.run(&self.args)
    }

    /// Starts the step in the background.
    pub fn spawn(&self, host: &Host) -> Result<Running> {
        host.spawn(&self.args)
    }
}

/// Removes ANSI colour sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Assertions on a command's [`Output`] that print everything on failure.
pub trait Expect {
    /// Asserts exit code 0.
    fn expect_ok(&self, what: &str) -> &Self;
    /// Asserts an exit code among `codes` and that stderr contains every
    /// phrase of `phrases` (case-insensitive).
    fn expect_fail(&self, codes: &[i32], phrases: &[&str], what: &str) -> &Self;
    /// stdout parsed as JSON.
    fn json(&self) -> Value;
}

impl Expect for Output {
    #[track_caller]
    fn expect_ok(&self, what: &str) -> &Self {
        assert!(
            self.code() == Some(exit::OK),
            "{what}: expected success\n{self}"
        );
        self
    }

    #[track_caller]
    fn expect_fail(&self, codes: &[i32], phrases: &[&str], what: &str) -> &Self {
        assert!(
            self.code().is_some_and(|c| codes.contains(&c)),
            "{what}: expected exit code {codes:?}\n{self}"
        );
        let stderr = strip_ansi(&self.stderr).to_lowercase();
        for phrase in phrases {
            assert!(
                stderr.contains(&phrase.to_lowercase()),
                "{what}: stderr does not mention {phrase:?}\n{self}"
            );
        }
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not JSON ({e})\n{self}"),
        }
    }
}

/// The outermost JSON objects of `value` (at any depth) that have the field
/// `field`; objects nested inside a found one are not searched.
pub fn objects_with<'a>(value: &'a Value, field: &str) -> Vec<&'a Value> {
    let mut found = vec![];
    fn go<'a>(v: &'a Value, field: &str, found: &mut Vec<&'a Value>) {
        match v {
            Value::Object(map) => {
                if map.contains_key(field) {
                    found.push(v);
                } else {
                    map.values().for_each(|x| go(x, field, found));
                }
            }
            Value::Array(items) => items.iter().for_each(|x| go(x, field, found)),
            _ => {}
        }
    }
    go(value, field, &mut found);
    found
}
