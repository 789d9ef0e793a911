//! A throwaway OpenSearch-compatible server: osmem-server (PyPI
//! `osmem-server`, an in-memory server shipped as a binary inside the
//! wheel; `scripts/setup.sh` installs it), started on a free port of
//! 127.0.0.1, killed and reaped on drop. Plus small JSON helpers on it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::http;
use crate::http_server::{HttpServer, Launch};

/// Where the osmem-server binary is: `ENVSYNC_OSMEM_BIN`, else inside the
/// installed `osmem_server` Python package.
pub fn osmem_program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENVSYNC_OSMEM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import osmem_server, os; print(os.path.dirname(osmem_server.__file__))",
        ])
        .output()
        .context("running python3 to find osmem_server")?;
    if !out.status.success() {
        bail!(
            "the osmem_server Python package is not installed: run scripts/setup.sh \
             (`pip install osmem-server`) or set ENVSYNC_OSMEM_BIN\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = dir.join("bin").join("osmem-server");
    if !bin.is_file() {
        bail!("{} is missing: reinstall osmem-server", bin.display());
    }
    Ok(bin)
}

/// A running osmem-server; killed and reaped on drop.
pub struct SearchServer {
    pub port: u16,
    server: HttpServer,
}

impl SearchServer {
    /// Starts a server on a free port (retrying another port if the chosen
    /// one was taken in the meantime) and waits until it answers.
    pub fn start() -> Result<SearchServer> {
        let program = osmem_program()?;
        let dir = tempfile::Builder::new()
            .prefix("envsync-osmem-")
            .tempdir()?;
        let launch = Launch {
            name: "osmem-server",
            program: &program,
            ready_path: "/",
            timeout: Duration::from_secs(20),
        };
        let server = HttpServer::start(&launch, dir, |port, _| {
            vec![
                "-addr".into(),
                format!("127.0.0.1:{port}"),
                "-no-stdin-watch".into(),
            ]
        })?;
        Ok(SearchServer {
            port: server.port(),
            server,
        })
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Kills and reaps the server (also done on drop).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// `--db-host`/`--db-port` style address for the host CLI.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `METHOD path` with an optional JSON (or NDJSON for `_bulk`) body;
    /// status and the answer parsed as JSON.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        let (status, text) = http::request(self.port, method, path, body.map(str::as_bytes))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{method} {path}: the answer is not JSON: {text}"))?
        };
        Ok((status, value))
    }

    /// A request that must answer 2xx; its JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Value> {
        let (status, value) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.call("PUT", path, Some(&body.to_string()))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call("POST", path, Some(&body.to_string()))
    }

    /// Loads `docs` (id, source) into `index` with `_bulk` in batches and
    /// refreshes; fails on any refused item.
    pub fn bulk_load(&self, index: &str, docs: &[(String, Value)]) -> Result<()> {
        for chunk in docs.chunks(2000) {
            let mut body = String::new();
            for (id, source) in chunk {
                body.push_str(
                    &serde_json::json!({"index": {"_index": index, "_id": id}}).to_string(),
                );
                body.push('\n');
                body.push_str(&source.to_string());
                body.push('\n');
            }
            let answer = self.call("POST", "/_bulk", Some(&body))?;
            if answer["errors"] != Value::Bool(false) {
                bail!("bulk load into {index} had failed items: {answer}");
            }
        }
        self.call("POST", &format!("/{index}/_refresh"), None)?;
        Ok(())
    }

    /// Every document of `index` (or alias) as id → source, read with scroll.
    pub fn all_docs(&self, index: &str) -> Result<std::collections::BTreeMap<String, Value>> {
        let mut out = std::collections::BTreeMap::new();
        let mut answer = self.post(
            &format!("/{index}/_search?scroll=1m"),
            &serde_json::json!({"size": 5000, "sort": ["_doc"]}),
        )?;
        loop {
            let hits = answer["hits"]["hits"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if hits.is_empty() {
                return Ok(out);
            }
            for hit in hits {
                let id = hit["_id"].as_str().unwrap_or_default().to_string();
                out.insert(id, hit["_source"].clone());
            }
            let id = answer["_scroll_id"].clone();
            answer = self.post(
                "/_search/scroll",
                &serde_json::json!({"scroll": "1m", "scroll_id": id}),
            )?;
        }
    }

    /// The document count of `index` (or alias).
    pub fn count(&self, index: &str) -> Result<u64> {
        let v = self.get(&format!("/{index}/_count"))?;
        v["count"]
            .as_u64()
            .with_context(|| format!("no count in {v}"))
    }
}
