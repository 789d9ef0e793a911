//! A throwaway MongoDB-compatible server: SecantusDB (PyPI `secantusdb`, a
//! MongoDB wire-protocol server on WiredTiger; `scripts/setup.sh` installs
//! it), started as a single-node replica set on a free port of 127.0.0.1
//! with its data in a temporary folder, killed and reaped on drop. Plus
//! `mongosh` (npm, also from setup.sh) to load and read data.

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ports::free_port;

/// A running SecantusDB; killed and reaped on drop.
pub struct MongoServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl MongoServer {
    /// Starts a server on a free port (another one if the chosen port was
    /// taken meanwhile) and waits until mongosh gets an answer.
    pub fn start() -> Result<MongoServer> {
        let dir = tempfile::Builder::new()
            .prefix("envsync-mongo-")
            .tempdir()?;
        let mut server = MongoServer {
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
            let child = Command::new("python3")
                .args(["-m", "secantus", "--host", "127.0.0.1", "--port"])
                .arg(server.port.to_string())
                .arg("--storage-path")
                .arg(server.dir.path().join("data"))
                .args(["--log-level", "WARNING", "--cache-size", "256M"])
                .current_dir(server.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context(
                    "could not start SecantusDB (python3 -m secantus): run scripts/setup.sh",
                )?;
            server.child = Some(child);
            match server.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    let log = server.log();
                    last_error = format!("{e:#}\n--- server log ---\n{log}");
                    if !log.contains("in use") {
                        bail!("SecantusDB did not start: {last_error}");
                    }
                }
            }
        }
        bail!("SecantusDB did not start on any of 8 random ports: {last_error}")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("secantus.log")
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("SecantusDB exited with {status}");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .eval("admin", "print(db.runCommand({ping: 1}).ok)")
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("no answer on port {} within {timeout:?}", self.port);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills and reaps the server (also done on drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The connection string of `database`.
    pub fn uri(&self, database: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{database}?directConnection=true",
            self.port
        )
    }

    /// Runs `script` in mongosh against `database`; what it printed.
    pub fn eval(&self, database: &str, script: &str) -> Result<String> {
        let out = Command::new("mongosh")
            .args(["--quiet", "--norc"])
            .arg(self.uri(database))
            .arg("--eval")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .context("could not run mongosh: run scripts/setup.sh")?;
        if !out.status.success() {
            bail!(
                "mongosh failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `expression` in mongosh against `database` and returns its value
    /// as canonical Extended JSON, parsed.
    pub fn json(&self, database: &str, expression: &str) -> Result<Value> {
        let out = self.eval(
            database,
            &format!("print(EJSON.stringify(({expression}), {{relaxed: false}}))"),
        )?;
        let line = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(line).with_context(|| format!("mongosh printed {out:?}"))
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.kill();
    }
}
