//! One way to run a throwaway server program that speaks HTTP (Prometheus,
//! the Pushgateway, osmem-server): a direct child of the test process on a
//! random 127.0.0.1 port, its output in a log in its own temporary folder,
//! ready when a path answers 200, and killed and reaped on drop (in CI,
//! PID 1 does not reap orphans). A port taken between choosing and binding
//! it is retried with another.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ports::free_port;

/// How to start one kind of server.
pub struct Launch<'a> {
    /// What messages call it ("the Pushgateway").
    pub name: &'a str,
    pub program: &'a Path,
    /// The path that answers 200 once it serves.
    pub ready_path: &'a str,
    pub timeout: Duration,
}

/// A running server; killed and reaped on drop.
pub struct HttpServer {
    name: String,
    port: u16,
    child: Option<Child>,
    // Declared last: removed after the server is gone.
    dir: tempfile::TempDir,
}

impl HttpServer {
    /// Starts `launch.program` with the arguments `args(port, dir)` gives
    /// for a free port, in `dir` (kept with the server), until one port
    /// works (8 tries).
    pub fn start(
        launch: &Launch,
        dir: tempfile::TempDir,
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Result<HttpServer> {
        let mut server = HttpServer {
            name: launch.name.to_string(),
            port: 0,
            child: None,
            dir,
        };
        let mut last_error = String::new();
        for _attempt in 0..8 {
            server.port = free_port()?;
            let log = File::options()
                .create(true)
                .append(true)
                .open(server.log_path())?;
            let child = Command::new(launch.program)
                .args(args(server.port, server.dir.path()))
                .current_dir(server.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("could not start {}", launch.program.display()))?;
            server.child = Some(child);
            match server.wait_ready(launch.ready_path, launch.timeout) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    let log = server.log();
                    last_error = format!("{e:#}\n--- server log ---\n{log}");
                    if !log.contains("address already in use") {
                        bail!("{} did not start: {last_error}", launch.name);
                    }
                }
            }
        }
        bail!(
            "{} did not start on any of 8 random ports: {last_error}",
            launch.name
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_ready(&mut self, path: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("{} exited during start-up ({status})", self.name);
            }
            match crate::http::get(self.port, path) {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("{path} answered {status}: {body}"),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("{} was not ready after {timeout:?}: {last}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}
