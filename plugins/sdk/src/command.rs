//! Building, spawning and checking allow-listed child programs.

use crate::process::{self, Command as WitCommand};
use crate::{ByteSink, ByteSource, Child, Error, ExitStatus, Stdio};

/// A child program to run, built step by step.
#[derive(Clone, Debug)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    connection: Option<String>,
    stdin: Stdio,
    stdout: Stdio,
}

impl Command {
    /// A command for `program`, a name the plugin declared in `describe()`.
    pub fn new(program: &str) -> Self {
        Command {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            connection: None,
            stdin: Stdio::Null,
            stdout: Stdio::Null,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A non-secret environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Let the host inject the credentials of connection `role`.
    pub fn connection(mut self, role: &str) -> Self {
        self.connection = Some(role.to_string());
        self
    }

    pub fn stdin_piped(mut self) -> Self {
        self.stdin = Stdio::Piped;
        self
    }

    pub fn stdout_piped(mut self) -> Self {
        self.stdout = Stdio::Piped;
        self
    }

    /// The program name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Starts the program.
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
        })
    }

    /// Runs the program to completion and fails unless it exits with 0.
    pub fn run(self) -> Result<(), Error> {
        self.spawn()?.finish()
    }

    /// Runs the program with `input` on stdin and returns what it printed on
    /// stdout (at most `limit` bytes), failing unless it exits with 0.
    pub fn output(self, input: Option<&[u8]>, limit: usize) -> Result<Vec<u8>, Error> {
        let cmd = if input.is_some() {
            self.stdin_piped()
        } else {
            self
        };
        let mut running = cmd.stdout_piped().spawn()?;
        if let Some(input) = input {
            let stdin = running.take_stdin()?;
            crate::write_all(&stdin, input)?;
            stdin.close()?;
        }
        let stdout = running.take_stdout()?;
        let out = crate::read_all(&stdout, limit)?;
        running.finish()?;
        Ok(out)
    }
}

/// A running child program with its name kept for messages.
pub struct Running {
    program: String,
    child: Child,
}

impl Running {
    /// The child's stdin (spawned with `stdin_piped`).
    pub fn take_stdin(&mut self) -> Result<ByteSink, Error> {
        self.child.stdin().ok_or_else(|| {
            Error::Other(format!(
                "{}: stdin is not piped or already taken",
                self.program
            ))
        })
    }

    /// The child's stdout (spawned with `stdout_piped`).
    pub fn take_stdout(&mut self) -> Result<ByteSource, Error> {
        self.child.stdout().ok_or_else(|| {
            Error::Other(format!(
                "{}: stdout is not piped or already taken",
                self.program
            ))
        })
    }

    /// Waits for the child and returns its status, whatever it is.
    pub fn wait(&self) -> Result<ExitStatus, Error> {
        self.child.wait()
    }

    /// Waits for the child and fails unless it exited with 0; the error
    /// holds the exit status and the tail of its stderr.
    pub fn finish(&self) -> Result<(), Error> {
        let status = self.wait()?;
        check_status(&self.program, &status)
    }

    /// Kills the child.
    pub fn kill(&self) {
        self.child.kill();
    }
}

/// `Ok` when `status` is success, else a `program-failed` error describing it.
pub fn check_status(program: &str, status: &ExitStatus) -> Result<(), Error> {
    if status.success {
        return Ok(());
    }
    let how = match (status.code, status.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "failed".to_string(),
    };
    let tail = status.stderr_tail.trim();
    Err(Error::ProgramFailed(if tail.is_empty() {
        format!("{program} {how}")
    } else {
        format!("{program} {how}: {tail}")
    }))
}
