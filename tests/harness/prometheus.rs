//! A throwaway Prometheus server on 127.0.0.1 that scrapes one target and
//! evaluates alert rules, and a reader of its alerts API.
//!
//! [`Prometheus::start`] runs Debian's `prometheus` (package `prometheus`,
//! installed by `scripts/setup.sh` for `promtool`) as a direct child of the
//! test process on a random port, with its storage in a temporary folder and
//! short scrape and evaluation intervals, so that alerts fire within seconds;
//! it kills and reaps it on drop. It is ready when `GET /-/ready` answers
//! 200.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::http_server::{HttpServer, Launch};
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
    server: HttpServer,
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
        let launch = Launch {
            name: "Prometheus",
            program: &program,
            ready_path: "/-/ready",
            timeout: Duration::from_secs(60),
        };
        let server = HttpServer::start(&launch, dir, |port, dir| {
            vec![
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ]
        })?;
        Ok(Prometheus { server })
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The alerts Prometheus holds now (`GET /api/v1/alerts`), pending and
    /// firing.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let (status, body) = crate::http::get(self.port(), "/api/v1/alerts")?;
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
