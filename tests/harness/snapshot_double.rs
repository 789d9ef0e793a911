//! An HTTP double of the snapshot API of Elasticsearch/OpenSearch: no
//! server with the snapshot API can run here (osmem-server has none), so
//! this small in-process HTTP/1.1 server on 127.0.0.1 implements just what
//! the elasticsearch plugin's snapshot mode calls, with a scriptable model
//! behind it, and records every request for assertions.
//!
//! Endpoints: `GET /` (cluster name), `GET|PUT /_snapshot/R`,
//! `POST /_snapshot/R/_verify`, `PUT|GET|DELETE /_snapshot/R/N`,
//! `GET /_snapshot/R/_all`, `POST /_snapshot/R/N/_restore`,
//! `GET|PUT /_cluster/settings`, `GET /_cat/indices`, `DELETE /INDEX`,
//! `GET /_recovery`, `GET /_alias` (also `GET /LIST/_alias`) and
//! `POST /_aliases`. Anything else answers 404.
//!
//! As the real clusters do: a snapshot keeps its indices' aliases and a
//! restore brings them back unless `include_aliases` is false; a restore
//! renames indices with `rename_pattern`/`rename_replacement` (regex replace)
//! and refuses a name that is already an open index or that two indices
//! would share; `POST /_aliases` checks every action first and applies all
//! or nothing (`add`, `remove`, `remove_index`; an alias may not take the
//! name of an index that stays); deleting an index drops its aliases.
//!
//! Scripting ([`Model`], changed through [`SnapshotDouble::with`]):
//! - a created snapshot goes through `next_states` (one state per
//!   `GET /_snapshot/R/N`, the last one stays), e.g. IN_PROGRESS → SUCCESS;
//! - the first `create_504s` creates answer 504 (having created the
//!   snapshot anyway when `created_anyway`);
//! - a restore's indices stay in recovery stage INDEX for
//!   `recovery_polls` answers of `GET /_recovery`, then DONE;
//! - [`SnapshotDouble::fail_next`] queues an answer for the next request
//!   whose method matches and whose path starts with a prefix.
//!
//! Threads, not processes: nothing to reap. Dropping the double stops the
//! listener and joins its thread.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value, json};

/// One request the double answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub body: String,
    /// The status answered.
    pub status: u16,
}

impl Recorded {
    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One snapshot in a repository.
#[derive(Debug, Clone)]
pub struct Snap {
    pub repository: String,
    pub name: String,
    pub state: String,
    /// States the next `GET /_snapshot/R/N` answers take, one each.
    pub script: VecDeque<String>,
    pub indices: Vec<String>,
    /// Index → its aliases when the snapshot was made.
    pub aliases: BTreeMap<String, Map<String, Value>>,
    pub start_ms: u64,
    /// `failures` and `reason` reported with the snapshot.
    pub failures: Value,
    pub reason: Option<String>,
}

impl Snap {
    /// A finished snapshot made earlier (by envsync or someone else).
    pub fn existing(repository: &str, name: &str, state: &str, start_ms: u64) -> Snap {
        Snap {
            repository: repository.into(),
            name: name.into(),
            state: state.into(),
            script: VecDeque::new(),
            indices: vec!["products".into()],
            aliases: BTreeMap::new(),
            start_ms,
            failures: json!([]),
            reason: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "snapshot": self.name,
            "uuid": format!("uuid-{}", self.name),
            "repository": self.repository,
            "indices": self.indices,
            "state": self.state,
            "start_time_in_millis": self.start_ms,
            "start_time": format!("t{}", self.start_ms),
            "failures": self.failures,
            "shards": {"total": 1, "failed": 0, "successful": 1},
        });
        if self.state != "IN_PROGRESS" {
            v["end_time"] = json!(format!("t{}", self.start_ms + 1000));
        }
        if let Some(reason) = &self.reason {
            v["reason"] = json!(reason);
        }
        v
    }
}

/// What the double serves; see the module documentation.
#[derive(Debug)]
pub struct Model {
    pub cluster_name: String,
    /// Repository name → `{"type":…,"settings":{…}}`.
    pub repositories: BTreeMap<String, Value>,
    pub snapshots: Vec<Snap>,
    /// States a newly created snapshot goes through.
    pub next_states: Vec<String>,
    /// `failures` and `reason` of newly created snapshots.
    pub next_failures: Value,
    pub next_reason: Option<String>,
    pub create_504s: u32,
    pub created_anyway: bool,
    /// The cluster's indices (system ones included).
    pub indices: Vec<String>,
    /// Index → its aliases (alias → properties); an index not listed has none.
    pub aliases: BTreeMap<String, Map<String, Value>>,
    /// Persistent cluster settings, flat.
    pub persistent: Map<String, Value>,
    pub recovery_polls: u32,
    /// Index → recovery answers left before it is DONE.
    pub recovering: BTreeMap<String, u32>,
    pub clock_ms: u64,
    /// (method, path prefix, matching requests to let through first, status, body).
    overrides: Vec<(String, String, u32, u16, Value)>,
    requests: Vec<Recorded>,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            cluster_name: "prod-eu".into(),
            repositories: BTreeMap::new(),
            snapshots: vec![],
            next_states: vec!["IN_PROGRESS".into(), "SUCCESS".into()],
            next_failures: json!([]),
            next_reason: None,
            create_504s: 0,
            created_anyway: false,
            indices: vec![],
            aliases: BTreeMap::new(),
            persistent: Map::new(),
            recovery_polls: 2,
            recovering: BTreeMap::new(),
            clock_ms: 1_000_000,
            overrides: vec![],
            requests: vec![],
        }
    }
}

/// Whether `name` matches the glob `pattern` (`*` only).
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && glob(rest, &name[head.len() + i..])
                })
        }
    }
}

fn list(v: &Value) -> Vec<String> {
    v.as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Model {
    fn find(&mut self, repo: &str, name: &str) -> Option<&mut Snap> {
        self.snapshots
            .iter_mut()
            .find(|s| s.repository == repo && s.name == name)
    }

    fn create(&mut self, repo: &str, name: &str, body: &Value) {
        let patterns = list(&body["indices"]);
        let indices: Vec<String> = self
            .indices
            .iter()
            .filter(|i| !i.starts_with('.') && patterns.iter().any(|p| glob(p, i)))
            .cloned()
            .collect();
        let aliases = indices
            .iter()
            .filter_map(|i| Some((i.clone(), self.aliases.get(i)?.clone())))
            .collect();
        self.clock_ms += 1000;
        let script: VecDeque<String> = self.next_states.iter().cloned().collect();
        let state = script.front().cloned().unwrap_or_else(|| "SUCCESS".into());
        self.snapshots.push(Snap {
            repository: repo.into(),
            name: name.into(),
            state,
            script,
            indices,
            aliases,
            start_ms: self.clock_ms,
            failures: self.next_failures.clone(),
            reason: self.next_reason.clone(),
        });
    }

    /// `POST /_aliases`: every action is checked against the state the
    /// earlier actions leave, then all are applied, or none.
    fn update_aliases(&mut self, actions: &Value) -> (u16, Value) {
        let fail = |status: u16, kind: &str, reason: String| {
            (
                status,
                json!({"error": {"type": kind, "reason": reason}, "status": status}),
            )
        };
        let Some(actions) = actions.as_array() else {
            return fail(
                400,
                "action_request_validation_exception",
                "no actions".into(),
            );
        };
        let mut indices = self.indices.clone();
        let mut aliases = self.aliases.clone();
        for action in actions {
            let Some((kind, args)) = action.as_object().and_then(|o| o.iter().next()) else {
                return fail(400, "parsing_exception", format!("bad action {action}"));
            };
            let index = args["index"].as_str().unwrap_or_default().to_string();
            if !indices.contains(&index) {
                return fail(
                    404,
                    "index_not_found_exception",
                    format!("no such index [{index}]"),
                );
            }
            match kind.as_str() {
                "add" => {
                    let alias = args["alias"].as_str().unwrap_or_default().to_string();
                    let mut props = args.as_object().cloned().unwrap_or_default();
                    props.remove("index");
                    props.remove("alias");
                    aliases
                        .entry(index)
                        .or_default()
                        .insert(alias, Value::Object(props));
                }
                "remove" => {
                    let alias = args["alias"].as_str().unwrap_or_default();
                    if aliases
                        .get_mut(&index)
                        .and_then(|a| a.remove(alias))
                        .is_none()
                    {
                        return fail(
                            404,
                            "aliases_not_found_exception",
                            format!("aliases [{alias}] missing"),
                        );
                    }
                }
                "remove_index" => {
                    indices.retain(|i| *i != index);
                    aliases.remove(&index);
                }
                other => {
                    return fail(
                        400,
                        "parsing_exception",
                        format!("unknown action [{other}]"),
                    );
                }
            }
        }
        for held in aliases.values() {
            if let Some(alias) = held.keys().find(|a| indices.contains(a)) {
                return fail(
                    400,
                    "invalid_alias_name_exception",
                    format!(
                        "Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
                    ),
                );
            }
        }
        self.recovering.retain(|i, _| indices.contains(i));
        self.indices = indices;
        self.aliases = aliases;
        (200, json!({"acknowledged": true}))
    }

    /// The indices an alias points at, sorted.
    pub fn holders(&self, alias: &str) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, a)| a.contains_key(alias))
            .map(|(i, _)| i.clone())
            .collect()
    }

    fn answer(&mut self, method: &str, target: &str, body: &Value) -> (u16, Value) {
        let path = target.split('?').next().unwrap_or(target);
        if let Some(i) = self
            .overrides
            .iter()
            .position(|(m, prefix, _, _, _)| m == method && path.starts_with(prefix.as_str()))
        {
            if self.overrides[i].2 == 0 {
                let (_, _, _, status, answer) = self.overrides.remove(i);
                return (status, answer);
            }
            self.overrides[i].2 -= 1;
        }
        let missing = |what: &str| (404, json!({"error": {"type": what}, "status": 404}));
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", [""]) => (
                200,
                json!({"cluster_name": self.cluster_name, "version": {"number": "8.15.0"}}),
            ),
            ("GET", ["_snapshot", repo]) => match self.repositories.get(*repo) {
                Some(r) => (200, json!({ *repo: r })),
                None => missing("repository_missing_exception"),
            },
            ("PUT", ["_snapshot", repo]) => {
                self.repositories.insert(repo.to_string(), body.clone());
                (200, json!({"acknowledged": true}))
            }
            ("POST", ["_snapshot", repo, "_verify"]) => {
                if self.repositories.contains_key(*repo) {
                    (200, json!({"nodes": {"n1": {"name": "node-1"}}}))
                } else {
                    missing("repository_missing_exception")
                }
            }
            (_, ["_snapshot", repo, ..]) if !self.repositories.contains_key(*repo) => {
                missing("repository_missing_exception")
            }
            ("GET", ["_snapshot", repo, "_all"]) => {
                let all: Vec<Value> = self
                    .snapshots
                    .iter()
                    .filter(|s| s.repository == *repo)
                    .map(Snap::to_json)
                    .collect();
                (
                    200,
                    json!({"snapshots": all, "total": all.len(), "remaining": 0}),
                )
            }
            ("PUT", ["_snapshot", repo, name]) => {
                if self.find(repo, name).is_some() {
                    return (
                        400,
                        json!({"error": {"type": "invalid_snapshot_name_exception",
                                "reason": format!("[{repo}:{name}] snapshot with the same name already exists")}}),
                    );
                }
                if self.create_504s > 0 {
                    self.create_504s -= 1;
                    if self.created_anyway {
                        self.create(repo, name, body);
                    }
                    return (504, Value::String("Gateway Time-out".into()));
                }
                self.create(repo, name, body);
                (200, json!({"accepted": true}))
            }
            ("GET", ["_snapshot", repo, name]) => match self.find(repo, name) {
                Some(s) => {
                    if let Some(next) = s.script.pop_front() {
                        s.state = next;
                    }
                    (
                        200,
                        json!({"snapshots": [s.to_json()], "total": 1, "remaining": 0}),
                    )
                }
                None => missing("snapshot_missing_exception"),
            },
            ("DELETE", ["_snapshot", repo, name]) => {
                let before = self.snapshots.len();
                self.snapshots
                    .retain(|s| !(s.repository == *repo && s.name == *name));
                if self.snapshots.len() < before {
                    (200, json!({"acknowledged": true}))
                } else {
                    missing("snapshot_missing_exception")
                }
            }
            ("POST", ["_snapshot", repo, name, "_restore"]) => {
                let Some(snap) = self.find(repo, name).cloned() else {
                    return missing("snapshot_missing_exception");
                };
                let restore_error = |reason: String| {
                    (
                        500,
                        json!({"error": {"type": "snapshot_restore_exception", "reason": reason}}),
                    )
                };
                let rename = match (
                    body["rename_pattern"].as_str(),
                    body["rename_replacement"].as_str(),
                ) {
                    (Some(p), Some(r)) => match regex::Regex::new(p) {
                        Ok(re) => Some((re, r.to_string())),
                        Err(e) => return restore_error(format!("bad rename_pattern: {e}")),
                    },
                    _ => None,
                };
                let wanted = list(&body["indices"]);
                let mut renamed: Vec<(String, String)> = Vec::new();
                for index in &wanted {
                    if !snap.indices.contains(index) {
                        return missing("index_not_found_exception");
                    }
                    let new = match &rename {
                        Some((re, r)) => re.replace_all(index, r.as_str()).into_owned(),
                        None => index.clone(),
                    };
                    if self.indices.contains(&new) {
                        return restore_error(format!(
                            "cannot restore index [{new}] because an open index with same name already exists in the cluster"
                        ));
                    }
                    if let Some((other, _)) = renamed.iter().find(|(_, n)| *n == new) {
                        return restore_error(format!(
                            "indices [{other}] and [{index}] are renamed into the same index [{new}]"
                        ));
                    }
                    renamed.push((index.clone(), new));
                }
                let with_aliases = body["include_aliases"].as_bool().unwrap_or(true);
                for (index, new) in renamed {
                    self.indices.push(new.clone());
                    self.recovering.insert(new.clone(), self.recovery_polls);
                    if with_aliases && let Some(a) = snap.aliases.get(&index) {
                        self.aliases.insert(new, a.clone());
                    }
                }
                (200, json!({"accepted": true}))
            }
            ("GET", ["_alias"]) | ("GET", [_, "_alias"]) => {
                let only = (parts.len() == 2).then(|| list(&json!(parts[0])));
                let mut out = Map::new();
                for index in &self.indices {
                    if only.as_ref().is_some_and(|o| !o.contains(index)) {
                        continue;
                    }
                    let aliases = self.aliases.get(index).cloned().unwrap_or_default();
                    out.insert(index.clone(), json!({ "aliases": aliases }));
                }
                (200, Value::Object(out))
            }
            ("POST", ["_aliases"]) => self.update_aliases(&body["actions"]),
            ("GET", ["_cluster", "settings"]) => {
                (200, json!({"persistent": self.persistent, "transient": {}}))
            }
            ("PUT", ["_cluster", "settings"]) => {
                if let Some(p) = body["persistent"].as_object() {
                    for (k, v) in p {
                        if v.is_null() {
                            self.persistent.remove(k);
                        } else {
                            self.persistent.insert(k.clone(), v.clone());
                        }
                    }
                }
                (
                    200,
                    json!({"acknowledged": true, "persistent": body["persistent"], "transient": {}}),
                )
            }
            ("GET", ["_cat", "indices"]) => {
                let all: Vec<Value> = self.indices.iter().map(|i| json!({"index": i})).collect();
                (200, Value::Array(all))
            }
            ("GET", ["_recovery"]) => {
                let mut out = Map::new();
                for index in &self.indices {
                    let left = self.recovering.get(index).copied().unwrap_or(0);
                    let stage = if left > 0 { "INDEX" } else { "DONE" };
                    out.insert(
                        index.clone(),
                        json!({"shards": [{"id": 0, "type": "SNAPSHOT", "stage": stage, "primary": true}]}),
                    );
                }
                for left in self.recovering.values_mut() {
                    *left = left.saturating_sub(1);
                }
                (200, Value::Object(out))
            }
            ("DELETE", [index]) if !index.starts_with('_') => {
                let before = self.indices.len();
                self.indices.retain(|i| i != index);
                self.aliases.remove(*index);
                if self.indices.len() < before {
                    (200, json!({"acknowledged": true}))
                } else {
                    missing("index_not_found_exception")
                }
            }
            _ => missing("no_such_endpoint_in_the_double"),
        }
    }
}

/// A running double; see the module documentation.
pub struct SnapshotDouble {
    pub port: u16,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotDouble {
    /// Starts a double with `model` on a free port of 127.0.0.1.
    pub fn start(model: Model) -> Result<SnapshotDouble> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let model = Arc::new(Mutex::new(model));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (model, stop) = (model.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let model = model.clone();
                            std::thread::spawn(move || serve(stream, &model));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(SnapshotDouble {
            port,
            model,
            stop,
            thread: Some(thread),
        })
    }

    /// Reads or changes the model.
    pub fn with<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        f(&mut self.model.lock().unwrap())
    }

    /// The next `method` request whose path starts with `prefix` gets
    /// `status` and `body` instead of the model's answer.
    pub fn fail_next(&self, method: &str, prefix: &str, status: u16, body: Value) {
        self.fail_later(method, prefix, 0, status, body);
    }

    /// Like [`SnapshotDouble::fail_next`], after `skip` such requests got
    /// the model's answer.
    pub fn fail_later(&self, method: &str, prefix: &str, skip: u32, status: u16, body: Value) {
        self.with(|m| {
            m.overrides
                .push((method.into(), prefix.into(), skip, status, body))
        });
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|m| m.requests.clone())
    }

    /// The requests with `method` whose path starts with `prefix`.
    pub fn requests_to(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path().starts_with(prefix))
            .collect()
    }

    /// Names of the snapshots in `repo`, in creation order, with states.
    pub fn snapshots(&self, repo: &str) -> Vec<(String, String)> {
        self.with(|m| {
            m.snapshots
                .iter()
                .filter(|s| s.repository == repo)
                .map(|s| (s.name.clone(), s.state.clone()))
                .collect()
        })
    }
}

impl Drop for SnapshotDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `stream`, answers it and closes the connection.
fn serve(stream: TcpStream, model: &Mutex<Model>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or("/").to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (status, answer) = {
        let mut m = model.lock().unwrap();
        let (status, answer) = m.answer(&method, &target, &parsed);
        m.requests.push(Recorded {
            method: method.clone(),
            target: target.clone(),
            body,
            status,
        });
        (status, answer)
    };
    let text = match &answer {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        text.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}
