//! Running child programs with a deadline, capturing their output.
//!
//! Every child is waited for, also when a test panics (the [`Running`] guard
//! kills and reaps it on drop).

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What a finished (or timed-out) child left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the child was killed because it ran past its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code; `None` when killed by a signal or timed out.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            None => "killed: ran past the test's deadline".to_string(),
            Some(s) => s.to_string(),
        };
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "status: {status}")?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        s.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push('\'');
            s.push_str(&arg.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&arg);
        }
    }
    s
}

/// A running child whose stdout and stderr are being collected.
pub struct Running {
    command: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    stdin: Option<JoinHandle<()>>,
    reaped: Option<ExitStatus>,
}

fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

impl Running {
    /// Starts `cmd` with stdout and stderr captured; `stdin` (if any) is written
    /// and then closed, else stdin is `/dev/null`.
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Result<Running> {
        let command = describe(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start `{command}`"))?;
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        let stdin = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // The child may exit without reading everything: ignore EPIPE.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        Ok(Running {
            command,
            child,
            stdout,
            stderr,
            stdin,
            reaped: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Whether the child has exited (it is reaped if so).
    pub fn has_exited(&mut self) -> Result<bool> {
        if self.reaped.is_some() {
            return Ok(true);
        }
        match self.child.try_wait()? {
            Some(status) => {
                self.reaped = Some(status);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Polls `reached` every 10 ms until it holds while the child still
    /// runs: how a test interrupts a run at a chosen point of its progress.
    /// Fails if the child exits first or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut reached: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !reached() {
            if self.has_exited()? {
                bail!("`{}` ended before {what}", self.command);
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {timeout:?} in vain until {what}; `{}` still runs",
                    self.command
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Sends `signal` to the child (if it has not been reaped yet).
    pub fn signal(&self, signal: i32) {
        if self.reaped.is_none() {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Waits up to `timeout` for the child to exit; past it the child is killed
    /// and the output has no status. Either way the child is reaped.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut status = None;
        loop {
            match self.has_exited() {
                Ok(true) => {
                    status = self.reaped;
                    break;
                }
                Ok(false) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    self.reaped = self.child.wait().ok();
                    break;
                }
            }
        }
        if let Some(t) = self.stdin.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
        // A grandchild that inherited a pipe may keep it open after the child
        // is gone: give the readers a moment, then stop waiting for them.
        let readers_deadline = Instant::now() + Duration::from_secs(5);
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            let Some(h) = h else { return String::new() };
            while !h.is_finished() && Instant::now() < readers_deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !h.is_finished() {
                return "(not collected: a grandchild still holds the pipe open)".to_string();
            }
            h.join()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Output {
            command: self.command.clone(),
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (or until `timeout`, when it is killed).
pub fn run(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Output> {
    Ok(Running::spawn(cmd, stdin)?.wait_timeout(timeout))
}
