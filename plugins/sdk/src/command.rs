//! Building, spawning and checking allow-listed child programs, and moving
//! bytes between them and host streams with errors that name the real cause.
//!
//! A plugin can only run programs it declared in `describe().programs` and
//! the operator allowed; there is no shell, arguments are passed as they are.
//! The helpers here encode the rules every engine plugin needs when a child
//! sits at one end of a stream:
//!
//! - when a stream to or from a child fails, the child's own failure (it
//!   stopped at an error and closed its input) is usually the cause and the
//!   broken pipe only the consequence, so the child's exit status and stderr
//!   are reported first ([`Running::feed`], [`Running::drain_into`]);
//! - a child that must not act on partial input (a script runner that would
//!   commit at end of input) is killed *while its stdin is still open*
//!   ([`OnFeedError::Kill`], [`Running::abort`]);
//! - a producer whose consumer failed is stopped, and blamed when it had
//!   already failed by itself ([`Running::abort_upstream`]).
//!
//! ```no_run
//! use envsync_plugin_sdk::{ByteSink, ByteSource, Command, Error, Fed, OnFeedError};
//!
//! /// Backup: the dump goes host-side from the child's stdout to the artifact.
//! fn backup(artifact: &ByteSink) -> Result<(), Error> {
//!     let dump = Command::new("mydb-dump")
//!         .arg("--all")
//!         .connection("source")
//!         .stdout_piped()
//!         .spawn()?;
//!     let bytes = dump.drain_into(artifact)?;
//!     envsync_plugin_sdk::info(format!("dumped {bytes} bytes"));
//!     Ok(())
//! }
//!
//! /// Restore: the artifact goes into the loader's stdin; it may see the
//! /// end of its input only once the artifact is verified.
//! fn load(artifact: &ByteSource) -> Result<(), Error> {
//!     let mut loader = Command::new("mydb-load")
//!         .connection("target")
//!         .stdin_piped()
//!         .spawn()?;
//!     let (stdin, _bytes) = loader.feed(artifact, OnFeedError::Kill)?.all()?;
//!     if let Err(e) = artifact.verify() {
//!         return Err(loader.abort(e));
//!     }
//!     stdin.close()?;
//!     drop(stdin);
//!     loader.finish()
//! }
//! # let _ = (backup, load);
//! ```

use crate::io::{copy_through, read_all, write_all};
use crate::process::{self, Command as WitCommand};
use crate::{ByteSink, ByteSource, Child, Error, ExitStatus, Stdio, debug, splice};

/// Picks the lines of a failed child's stderr tail worth showing in an error
/// (see [`Command::stderr_filter`]). An empty result keeps the whole tail.
pub type StderrFilter = fn(&str) -> String;

/// A child program to run, built step by step.
#[derive(Clone, Debug)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    connection: Option<String>,
    stdin: Stdio,
    stdout: Stdio,
    stderr_filter: Option<StderrFilter>,
}

impl Command {
    /// A command for `program`, a name the plugin declared in `describe()`.
    /// Stdin and stdout are null until [`stdin_piped`](Self::stdin_piped) /
    /// [`stdout_piped`](Self::stdout_piped).
    pub fn new(program: &str) -> Self {
        Command {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            connection: None,
            stdin: Stdio::Null,
            stdout: Stdio::Null,
            stderr_filter: None,
        }
    }

    /// Adds one argument, passed as it is (there is no shell).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A non-secret environment variable for the child. Names that carry
    /// credentials or belong to the host (`PATH`, `HOME`, `LD_*`, the
    /// plugin's credential variables) are refused by the host at spawn.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Lets the host inject the credentials of connection `role` (`source`
    /// or `target`) into the child's environment, under the variable names
    /// the plugin declared in `describe().credentials`.
    pub fn connection(mut self, role: &str) -> Self {
        self.connection = Some(role.to_string());
        self
    }

    /// Connects the child's stdin to a stream the plugin takes with
    /// [`Running::take_stdin`].
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = Stdio::Piped;
        self
    }

    /// Connects the child's stdout to a stream the plugin takes with
    /// [`Running::take_stdout`].
    pub fn stdout_piped(mut self) -> Self {
        self.stdout = Stdio::Piped;
        self
    }

    /// Keeps only the lines `filter` picks from the stderr tail when this
    /// child fails (e.g. a SQL client's `ERROR …` lines, without the
    /// statement it echoes before them). The host logs all of stderr at
    /// debug level anyway.
    pub fn stderr_filter(mut self, filter: StderrFilter) -> Self {
        self.stderr_filter = Some(filter);
        self
    }

    /// The program name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Starts the program. Fails with `denied` when the plugin did not
    /// declare it or the operator did not allow it, with `other` when it is
    /// not installed.
    pub fn spawn(self) -> Result<Running, Error> {
        let child = process::spawn(&WitCommand {
            program: self.program.clone(),
            args: self.args,
            env: self.env,
            connection: self.connection,
            stdin: self.stdin,
            stdout: self.stdout,
        })?;
        Ok(Running {
            program: self.program,
            child,
            stderr_filter: self.stderr_filter,
        })
    }

    /// Runs the program to completion and fails unless it exits with 0.
    pub fn run(self) -> Result<(), Error> {
        self.spawn()?.finish()
    }

    /// Runs the program with `input` (if any) on stdin and returns what it
    /// printed on stdout (at most `limit` bytes), failing unless it exits
    /// with 0. The child's own failure wins over a broken pipe or an
    /// oversized output, since it is the cause.
    ///
    /// All of `input` is written before stdout is read, so `input` must be
    /// small (it must fit the pipe, 1 MiB) or the program must read all its
    /// input before writing much; otherwise both sides wait on each other.
    pub fn output(self, input: Option<&[u8]>, limit: usize) -> Result<Vec<u8>, Error> {
        let cmd = if input.is_some() {
            self.stdin_piped()
        } else {
            self
        };
        let mut running = cmd.stdout_piped().spawn()?;
        let wrote = match input {
            Some(input) => running.write_and_close(input),
            None => Ok(()),
        };
        let stdout = running.take_stdout()?;
        let out = read_all(&stdout, limit);
        drop(stdout);
        let status = running.wait()?;
        if !status.success {
            return Err(running.exit_error(&status));
        }
        wrote?;
        out
    }

    /// Runs the program with `input` on stdin and its stdout discarded,
    /// failing unless it exits with 0. The child's own failure wins over a
    /// broken pipe. Nothing can block, whatever the size of `input`.
    pub fn run_with_input(self, input: &[u8]) -> Result<(), Error> {
        let mut running = self.stdin_piped().spawn()?;
        let wrote = running.write_and_close(input);
        let status = running.wait()?;
        if !status.success {
            return Err(running.exit_error(&status));
        }
        wrote
    }
}

/// What to do with a child whose input stream failed part-way
/// (see [`Running::feed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFeedError {
    /// Kill it before it can see end of input: a script runner would run
    /// (and commit) a cut-off script, a loader would load a cut-off dump.
    Kill,
    /// Close its input and let it exit by itself, so its own exit status
    /// and message survive (for programs that refuse truncated input).
    CloseInput,
}

/// How feeding a child ended (see [`Running::feed`]).
pub enum Fed {
    /// All of the source went in: the stream and the byte count. Stdin is
    /// still open, so the caller decides (e.g. after `verify`, or after
    /// writing a trailer) when the child sees end of input.
    All(ByteSink, u64),
    /// The child exited successfully before reading everything (e.g. a
    /// restore program that needed only part of an archive). The error is
    /// why the rest could not be written.
    ChildDone(Error),
}

impl Fed {
    /// The stream and byte count when all of the source went in; the error
    /// when the child stopped reading early, for callers that need it to
    /// read everything.
    pub fn all(self) -> Result<(ByteSink, u64), Error> {
        match self {
            Fed::All(stdin, bytes) => Ok((stdin, bytes)),
            Fed::ChildDone(e) => Err(e),
        }
    }
}

/// A running child program, with its name kept for messages. Dropping it
/// kills the child if it still runs.
pub struct Running {
    program: String,
    child: Child,
    stderr_filter: Option<StderrFilter>,
}

impl Running {
    /// The program name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The child's stdin (spawned with `stdin_piped`; once).
    pub fn take_stdin(&mut self) -> Result<ByteSink, Error> {
        self.child.stdin().ok_or_else(|| {
            Error::Other(format!(
                "{}: stdin is not piped or already taken",
                self.program
            ))
        })
    }

    /// The child's stdout (spawned with `stdout_piped`; once).
    pub fn take_stdout(&mut self) -> Result<ByteSource, Error> {
        self.child.stdout().ok_or_else(|| {
            Error::Other(format!(
                "{}: stdout is not piped or already taken",
                self.program
            ))
        })
    }

    /// Closes stdin if still open, waits for the child and returns its
    /// status, whatever it is.
    pub fn wait(&self) -> Result<ExitStatus, Error> {
        self.child.wait()
    }

    /// Waits for the child and fails unless it exited with 0; the error
    /// holds the exit status and the tail of its stderr.
    pub fn finish(&self) -> Result<(), Error> {
        let status = self.wait()?;
        if status.success {
            Ok(())
        } else {
            Err(self.exit_error(&status))
        }
    }

    /// Kills the child (SIGKILL, with its process group) if it still runs.
    pub fn kill(&self) {
        self.child.kill();
    }

    /// Kills the child, reaps it and returns `e`: for giving up on a child
    /// whose stdin is still open, so it never sees end of input (a script
    /// runner then commits nothing).
    pub fn abort(&self, e: Error) -> Error {
        self.kill();
        let _ = self.wait();
        e
    }

    /// Stops this child, which produced a stream that failed downstream
    /// with `downstream`, and returns the error to report: this child's own
    /// failure first (with `downstream` appended) when it had already exited
    /// with an error code by itself, since it is then the cause; else
    /// `downstream`.
    pub fn abort_upstream(&self, downstream: Error) -> Error {
        self.kill();
        match self.wait() {
            Ok(status) if status.code.is_some_and(|c| c != 0) => {
                self.exit_error(&status).also(&downstream)
            }
            _ => downstream,
        }
    }

    /// A `program-failed` error describing the unsuccessful `status` of this
    /// child: how it ended and the tail of its stderr (through the
    /// command's [`stderr_filter`](Command::stderr_filter), if any).
    pub fn exit_error(&self, status: &ExitStatus) -> Error {
        let kept = self
            .stderr_filter
            .map(|filter| filter(&status.stderr_tail))
            .filter(|kept| !kept.is_empty());
        match kept {
            Some(stderr_tail) => exit_error(
                &self.program,
                &ExitStatus {
                    stderr_tail,
                    ..status.clone()
                },
            ),
            None => exit_error(&self.program, status),
        }
    }

    /// The error for a stream that failed while this child was at its other
    /// end, given its exit `status`. A child that exited with an error code
    /// by itself usually caused the failure, so its stderr comes first (the
    /// stream error is logged at debug level) — unless the stream was found
    /// damaged, which then explains the child's failure; a child the plugin
    /// killed itself (`we_killed`, ended by a signal) has nothing to add.
    pub fn stream_failure(
        &self,
        status: &ExitStatus,
        stream_error: Error,
        we_killed: bool,
    ) -> Error {
        if status.success || (we_killed && status.code.is_none()) {
            return stream_error;
        }
        // Damaged input explains whatever the child then did with it.
        if matches!(stream_error, Error::Integrity(_)) {
            debug(format!(
                "{} failed on damaged input: {}",
                self.program,
                self.exit_error(status).message()
            ));
            return stream_error;
        }
        debug(format!(
            "{} failed; the stream then failed too: {}",
            self.program,
            stream_error.message()
        ));
        self.exit_error(status)
    }

    /// Copies `source` into the child's stdin with [`splice`] (host-side,
    /// the bytes never pass through the plugin). On success stdin is handed
    /// back still open ([`Fed::All`]). When the copy fails, the child is
    /// killed first if `on_error` says so, its stdin is let go, and it is
    /// waited for: if it exited with 0 by itself the result is
    /// [`Fed::ChildDone`], else the error names the real cause (see
    /// [`stream_failure`](Self::stream_failure)).
    pub fn feed(&mut self, source: &ByteSource, on_error: OnFeedError) -> Result<Fed, Error> {
        self.feed_with(on_error, |stdin| splice(source, stdin))
    }

    /// Like [`feed`](Self::feed), but the bytes pass through the plugin in
    /// large chunks ([`copy_through`]) so `inspect` runs between them (to
    /// count rows, or to ask the server how far the load is: the plugin
    /// gets control back after every chunk, which `splice` never gives
    /// it). An error from `inspect` stops the copy as a stream error would.
    pub fn feed_through(
        &mut self,
        source: &ByteSource,
        on_error: OnFeedError,
        inspect: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<Fed, Error> {
        self.feed_with(on_error, |stdin| copy_through(source, stdin, inspect))
    }

    fn feed_with(
        &mut self,
        on_error: OnFeedError,
        copy: impl FnOnce(&ByteSink) -> Result<u64, Error>,
    ) -> Result<Fed, Error> {
        let stdin = self.take_stdin()?;
        let splice_error = match copy(&stdin) {
            Ok(n) => return Ok(Fed::All(stdin, n)),
            Err(e) => e,
        };
        // Kill (when asked) while stdin is still open, then let go of stdin.
        let killed = on_error == OnFeedError::Kill;
        if killed {
            self.kill();
        }
        drop(stdin);
        let status = self.wait()?;
        if status.success {
            return Ok(Fed::ChildDone(splice_error));
        }
        Err(self.stream_failure(&status, splice_error, killed))
    }

    /// Copies the child's stdout into `sink` with [`splice`] and waits for
    /// the child; Ok only when both the copy and the child succeeded.
    /// Returns the bytes copied. Does not close `sink`.
    pub fn drain_into(mut self, sink: &ByteSink) -> Result<u64, Error> {
        let stdout = self.take_stdout()?;
        let copied = splice(&stdout, sink);
        drop(stdout);
        self.end_drain(copied)
    }

    /// Like [`drain_into`](Self::drain_into), but the bytes pass through
    /// the plugin in large chunks ([`copy_through`]) so `inspect` sees each
    /// one before it is written (to check how a dump ends, count rows, …).
    /// An error from `inspect` stops the copy and the child.
    pub fn drain_through(
        mut self,
        sink: &ByteSink,
        inspect: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let stdout = self.take_stdout()?;
        let copied = copy_through(&stdout, sink, inspect);
        drop(stdout);
        self.end_drain(copied)
    }

    fn end_drain(self, copied: Result<u64, Error>) -> Result<u64, Error> {
        match copied {
            Ok(n) => self.finish().map(|()| n),
            Err(e) => {
                // The child is likely blocked writing to a pipe nobody reads.
                self.kill();
                let status = self.wait()?;
                Err(self.stream_failure(&status, e, true))
            }
        }
    }

    /// Writes `input` to stdin and closes it; the error is kept for after
    /// the child's status (which wins).
    fn write_and_close(&mut self, input: &[u8]) -> Result<(), Error> {
        let stdin = self.take_stdin()?;
        let wrote = write_all(&stdin, input).and_then(|()| stdin.close());
        drop(stdin);
        wrote
    }
}

/// `Ok` when `status` is success, else a `program-failed` error describing
/// it (see [`exit_error`]).
pub fn check_status(program: &str, status: &ExitStatus) -> Result<(), Error> {
    if status.success {
        return Ok(());
    }
    Err(exit_error(program, status))
}

/// A `program-failed` error describing an unsuccessful exit of `program`:
/// how it ended (exit code or signal) and the tail of its stderr.
pub fn exit_error(program: &str, status: &ExitStatus) -> Error {
    if status.success {
        // Not a failure of the program itself: nothing more to say.
        return Error::ProgramFailed(format!("{program} failed"));
    }
    let how = match (status.code, status.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "failed".to_string(),
    };
    let tail = status.stderr_tail.trim();
    Error::ProgramFailed(if tail.is_empty() {
        format!("{program} {how}")
    } else {
        format!("{program} {how}: {tail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(success: bool, code: Option<i32>, signal: Option<i32>, tail: &str) -> ExitStatus {
        ExitStatus {
            success,
            code,
            signal,
            stderr_tail: tail.into(),
        }
    }

    #[test]
    fn exit_errors_say_how_the_program_ended() {
        let e = exit_error("pg_dump", &status(false, Some(1), None, " no such db \n"));
        assert!(
            matches!(&e, Error::ProgramFailed(m) if m == "pg_dump exited with code 1: no such db")
        );
        let e = exit_error("psql", &status(false, None, Some(9), ""));
        assert_eq!(e.message(), "psql was killed by signal 9");
        assert!(check_status("x", &status(true, Some(0), None, "")).is_ok());
    }
}
