//! A throwaway Prometheus server on 127.0.0.1 that scrapes one target and
//! evaluates alert rules, and a reader of its alerts API.
//!
//! [`Prometheus::start`] runs Debian's `prometheus` (package `prometheus`,
//! installed by `scripts/setup.sh` for `promtool`) as a direct child of the
//! test process on a random port, with its storage in a temporary folder and
//! short scrape and evaluation intervals, so that alerts fire within seconds;
//! it kills and reaps it on drop. It is ready when `GET /-/ready` answers
//! 200.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ports::free_port;
use crate::pushgateway::find_program;

/// `prometheus`: `ENVSYNC_PROMETHEUS_BIN`, `PATH`, or `/usr/bin/prometheus`.
pub fn prometheus_program() -> Option<PathBuf> {
    find_program(
        "ENVSYNC_PROMETHEUS_BIN",
        "prometheus",
        "/usr/bin/prometheus",
    )
}

/// How often the server scrapes its target and evaluates its rules.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A running throwaway Prometheus; killed and reaped on drop.
pub struct Prometheus {
    port: u16,
    child: Option<Child>,
    // Declared last: removed after the server is gone.
    dir: tempfile::TempDir,
}

/// One alert of `GET /api/v1/alerts`.
#[derive(Clone, Debug)]
pub struct Alert {
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
}

impl Alert {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).and_then(Value::as_str)
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `http://127.0.0.1:target_port/metrics`
    /// with `honor_labels` (as docs/metrics.md tells operators to scrape a
    /// Pushgateway) and evaluating the rule file `rules`.
    pub fn start(target_port: u16, rules: &Path) -> Result<Prometheus> {
        let Some(program) = prometheus_program() else {
            bail!(
                "prometheus not found (PATH, /usr/bin, or ENVSYNC_PROMETHEUS_BIN): \
                 run scripts/setup.sh (`apt-get install prometheus`)"
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("envsync-prometheus-")
            .tempdir()?;
        let secs = INTERVAL.as_secs();
        let config = format!(
            "global:\n  scrape_interval: {secs}s\n  evaluation_interval: {secs}s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    \
             static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n",
            rules = serde_json::to_string(&rules.display().to_string())?,
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let mut server = Prometheus {
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
            let child = Command::new(&program)
                .arg(format!(
                    "--config.file={}",
                    server.dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    server.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{}", server.port))
                .arg("--log.level=warn")
                .current_dir(server.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("could not start {}", program.display()))?;
            server.child = Some(child);
            match server.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    let log = server.log();
                    last_error = format!("{e:#}\n--- server log ---\n{log}");
                    if !log.contains("address already in use") {
                        bail!("Prometheus did not start: {last_error}");
                    }
                }
            }
        }
        bail!("Prometheus did not start on any of 8 random ports: {last_error}")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("Prometheus exited during start-up ({status})");
            }
            match crate::http::get(self.port, "/-/ready") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("/-/ready answered {status}: {body}"),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("Prometheus was not ready after {timeout:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
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

    /// The alerts Prometheus holds now (`GET /api/v1/alerts`), pending and
    /// firing.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let (status, body) = crate::http::get(self.port, "/api/v1/alerts")?;
        if status != 200 {
            bail!("GET /api/v1/alerts answered {status}: {body}");
        }
        let json: Value = serde_json::from_str(&body).context("/api/v1/alerts is not JSON")?;
        let alerts = json["data"]["alerts"]
            .as_array()
            .with_context(|| format!("no data.alerts in {body}"))?;
        Ok(alerts
            .iter()
            .map(|a| {
                let labels = a["labels"].as_object().cloned().unwrap_or_default();
                Alert {
                    name: labels
                        .get("alertname")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    state: a["state"].as_str().unwrap_or_default().to_string(),
                    labels,
                }
            })
            .collect())
    }

    /// Waits until a firing alert satisfies `wanted`, polling every
    /// interval; fails after `timeout` naming the alerts there were.
    pub fn wait_for_firing(
        &self,
        timeout: Duration,
        wanted: impl Fn(&Alert) -> bool,
    ) -> Result<Alert> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.alerts()?;
            if let Some(a) = alerts.iter().find(|a| a.state == "firing" && wanted(a)) {
                return Ok(a.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no such alert fired within {timeout:?}; alerts now: {alerts:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}
