//! A throwaway Prometheus Pushgateway on 127.0.0.1, a reader of the text
//! exposition it serves, and where `promtool` is.
//!
//! [`Pushgateway::start`] runs `prometheus-pushgateway` (Debian package
//! `prometheus-pushgateway`, installed by `scripts/setup.sh`) as a direct
//! child of the test process on a random port, without persistence (Debian's
//! build otherwise loads and saves `/var/lib/prometheus/pushgateway.data`), and
//! kills and reaps it on drop: in CI, PID 1 does not reap orphans. It is
//! ready when `GET /-/ready` answers 200.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::http_server::{HttpServer, Launch};

/// A program from an environment variable, `PATH`, or a fixed fallback.
pub(crate) fn find_program(var: &str, name: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .chain(std::iter::once(PathBuf::from(fallback)))
        .find(|p| p.is_file())
}

/// `prometheus-pushgateway`: `ENVSYNC_PUSHGATEWAY_BIN`, `PATH`, or
/// `/usr/bin/prometheus-pushgateway`.
pub fn pushgateway_program() -> Option<PathBuf> {
    find_program(
        "ENVSYNC_PUSHGATEWAY_BIN",
        "prometheus-pushgateway",
        "/usr/bin/prometheus-pushgateway",
    )
}

/// `promtool`: `ENVSYNC_PROMTOOL_BIN`, `PATH`, or `/usr/bin/promtool`.
pub fn promtool_program() -> Option<PathBuf> {
    find_program("ENVSYNC_PROMTOOL_BIN", "promtool", "/usr/bin/promtool")
}

/// A running throwaway Pushgateway; killed and reaped on drop.
pub struct Pushgateway {
    server: HttpServer,
}

impl Pushgateway {
    /// Starts a Pushgateway on a random free port (retrying with another
    /// port if the chosen one was taken in the meantime).
    pub fn start() -> Result<Pushgateway> {
        let Some(program) = pushgateway_program() else {
            bail!(
                "prometheus-pushgateway not found (PATH, /usr/bin, or ENVSYNC_PUSHGATEWAY_BIN): \
                 run scripts/setup.sh (`apt-get install prometheus-pushgateway`)"
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("envsync-pushgateway-")
            .tempdir()?;
        let launch = Launch {
            name: "the Pushgateway",
            program: &program,
            ready_path: "/-/ready",
            timeout: Duration::from_secs(20),
        };
        let server = HttpServer::start(&launch, dir, |port, _| {
            vec![
                format!("--web.listen-address=127.0.0.1:{port}"),
                // Debian's build defaults to /var/lib/prometheus/pushgateway.data:
                // every gateway would load what earlier ones saved.
                "--persistence.file=".into(),
                "--log.level=warn".into(),
            ]
        })?;
        Ok(Pushgateway { server })
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

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        crate::http::get(self.port(), path)
    }

    /// The text exposition of `GET /metrics`.
    pub fn metrics_text(&self) -> Result<String> {
        match self.get("/metrics")? {
            (200, body) => Ok(body),
            (status, body) => bail!("GET /metrics answered {status}: {body}"),
        }
    }

    /// The samples of `GET /metrics` whose metric name starts with `prefix`.
    pub fn samples(&self, prefix: &str) -> Result<Vec<Sample>> {
        let text = self.metrics_text()?;
        Ok(parse_exposition(&text)?
            .into_iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect())
    }
}

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// A sample from a name, labels and a value (for expected values).
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

/// Parses the samples of a text exposition (comments skipped; label values
/// unescaped; an optional timestamp after the value ignored).
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| anyhow!("line {}: {what}: {line}", no + 1);
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let end = loop {
                // Skip separators.
                while let Some((_, c)) = chars.peek() {
                    if *c == ',' || c.is_whitespace() {
                        chars.next();
                    } else {
                        break;
                    }
                }
                let Some((i, c)) = chars.next() else {
                    return Err(bad("unterminated labels"));
                };
                if c == '}' {
                    break i + 1;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(bad("unterminated label value")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            };
            rest = &after[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_labels_and_values() {
        let text = "# HELP x y\nx{a=\"1\",b=\"q\\\"\\\\\\n/ z\"} 1.5e+09\nup 1 1700000000\n";
        let s = parse_exposition(text).unwrap();
        assert_eq!(
            s,
            vec![
                Sample::new("x", &[("a", "1"), ("b", "q\"\\\n/ z")], 1.5e9),
                Sample::new("up", &[], 1.0),
            ]
        );
    }
}
