//! Snapshot mode, the parts that need no cluster: snapshot names, snapshot
//! states, retention, index patterns and the small manifest artifact.
//!
//! The manifest artifact (the data lives in the snapshot repository):
//!
//! ```text
//! {"envsync":"search-snapshot","version":1}
//! {"snapshot":{"repository":"backups","name":"prod-20261121t101500z","cluster":"prod",…}}
//! ```

use serde_json::{Map, Value, json};

/// The format of the manifest artifact, for messages.
pub const FORMAT: &str = "search-snapshot";
/// The first line of every snapshot manifest artifact.
pub const MAGIC: &str = "{\"envsync\":\"search-snapshot\",\"version\":1}";

/// Whether `head` starts like a snapshot manifest artifact (`check`).
pub fn is_manifest(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n').next() == Some(MAGIC.as_bytes())
}

/// The state of a snapshot as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    InProgress,
    Success,
    Partial,
    Failed,
    Incompatible,
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> State {
        match s.to_ascii_uppercase().as_str() {
            "IN_PROGRESS" | "STARTED" | "INIT" => State::InProgress,
            "SUCCESS" => State::Success,
            "PARTIAL" => State::Partial,
            "FAILED" => State::Failed,
            "INCOMPATIBLE" => State::Incompatible,
            other => State::Other(other.to_string()),
        }
    }

    /// Whether the snapshot will not change any more.
    pub fn finished(&self) -> bool {
        !matches!(self, State::InProgress)
    }

    pub fn name(&self) -> &str {
        match self {
            State::InProgress => "IN_PROGRESS",
            State::Success => "SUCCESS",
            State::Partial => "PARTIAL",
            State::Failed => "FAILED",
            State::Incompatible => "INCOMPATIBLE",
            State::Other(s) => s,
        }
    }
}

/// One snapshot of `GET /_snapshot/REPO/NAME` or `…/_all`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub state: State,
    pub indices: Vec<String>,
    /// Start time in ms since the epoch (0 when not reported).
    pub start_ms: u64,
    pub start: String,
    pub end: String,
    /// `reason` and the first failures, for messages.
    pub problems: String,
}

impl Snapshot {
    fn from_json(v: &Value) -> Option<Snapshot> {
        let name = v["snapshot"].as_str()?.to_string();
        let state = State::parse(v["state"].as_str().unwrap_or("IN_PROGRESS"));
        let indices = v["indices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut problems = vec![];
        if let Some(reason) = v["reason"].as_str().filter(|r| !r.is_empty()) {
            problems.push(format!("reason: {reason}"));
        }
        if let Some(failures) = v["failures"].as_array() {
            for f in failures.iter().take(5) {
                let index = f["index"].as_str().unwrap_or("?");
                let shard = f["shard_id"].as_u64().map(|s| s.to_string());
                let reason = f["reason"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| f.to_string());
                problems.push(format!(
                    "{index}[{}]: {reason}",
                    shard.as_deref().unwrap_or("?")
                ));
            }
            if failures.len() > 5 {
                problems.push(format!("and {} more failure(s)", failures.len() - 5));
            }
        }
        Some(Snapshot {
            name,
            state,
            indices,
            start_ms: v["start_time_in_millis"].as_u64().unwrap_or(0),
            start: v["start_time"].as_str().unwrap_or_default().to_string(),
            end: v["end_time"].as_str().unwrap_or_default().to_string(),
            problems: problems.join("; "),
        })
    }
}

/// The snapshots of an answer of `GET /_snapshot/REPO/…`: either
/// `{"snapshots":[…]}` or (older clusters) `{"responses":[{"snapshots":[…]}]}`.
pub fn parse_snapshots(answer: &Value) -> Vec<Snapshot> {
    let mut lists = vec![&answer["snapshots"]];
    if let Some(responses) = answer["responses"].as_array() {
        lists.extend(responses.iter().map(|r| &r["snapshots"]));
    }
    lists
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Snapshot::from_json)
        .collect()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The UTC time `secs` after the epoch as `%Y%m%dt%H%M%Sz` (lower case:
/// snapshot names must be).
pub fn stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}t{:02}{:02}{:02}z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The cluster name made fit for a snapshot name prefix: lower case, and
/// anything but letters, digits, `-`, `_` and `.` replaced by `-`.
pub fn name_prefix(cluster: &str) -> String {
    let mut p: String = cluster
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while p.starts_with(['_', '-', '.']) {
        p.remove(0);
    }
    if p.is_empty() {
        p = "cluster".into();
    }
    p
}

/// `<cluster>-<UTC %Y%m%dt%H%M%Sz>`.
pub fn snapshot_name(cluster: &str, secs: u64) -> String {
    format!("{}-{}", name_prefix(cluster), stamp(secs))
}

/// Whether `name` is a snapshot envsync made for `cluster`.
pub fn made_by_envsync(name: &str, cluster: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{}-", name_prefix(cluster))) else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() == 16
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b't',
            15 => *c == b'z',
            _ => c.is_ascii_digit(),
        })
}

/// Retention: the snapshots to delete so that the newest `keep` successful
/// snapshots envsync made for `cluster` remain. Only successful snapshots
/// envsync made for this cluster are ever deleted (never others' snapshots,
/// never failed, partial or running ones), and never `just_made`.
pub fn to_delete(
    snapshots: &[Snapshot],
    cluster: &str,
    keep: usize,
    just_made: &str,
) -> Vec<String> {
    let mut ours: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| s.state == State::Success && made_by_envsync(&s.name, cluster))
        .collect();
    // Newest first; the name's time stamp breaks ties and stands in for a
    // missing start time.
    ours.sort_by(|a, b| (b.start_ms, &b.name).cmp(&(a.start_ms, &a.name)));
    // The one just made always counts as kept.
    let mut kept = usize::from(ours.iter().any(|s| s.name == just_made));
    let mut out = vec![];
    for s in ours {
        if s.name == just_made {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            out.push(s.name.clone());
        }
    }
    out
}

/// The newest successful snapshot, for `snapshot=latest`.
pub fn newest_success(snapshots: &[Snapshot]) -> Option<&Snapshot> {
    snapshots
        .iter()
        .filter(|s| s.state == State::Success)
        .max_by(|a, b| (a.start_ms, &a.name).cmp(&(b.start_ms, &b.name)))
}

/// The `rename_pattern` of a snapshot restore: the whole index name, with
/// the `-envsync-<digits>` suffix of an earlier restore left out of group 1
/// (the same rule as `aliases::base_name`).
pub const RENAME_PATTERN: &str = "^(.+?)(-envsync-[0-9]+)?$";

/// The `rename_replacement` that restores each index as
/// `aliases::new_name(base, stamp)`.
pub fn rename_replacement(stamp: u64) -> String {
    format!("$1{}{stamp}", crate::aliases::INFIX)
}

/// Whether `name` matches the glob `pattern` (`*` only).
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The names among `names` that `patterns` select (a pattern starting with
/// `-` excludes), never system indices (names starting with `.`).
pub fn select(patterns: &[String], names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !n.starts_with('.'))
        .filter(|n| {
            let mut selected = false;
            for p in patterns {
                if let Some(p) = p.strip_prefix('-') {
                    if glob(p, n) {
                        selected = false;
                    }
                } else if glob(p, n) {
                    selected = true;
                }
            }
            selected
        })
        .cloned()
        .collect()
}

/// What the manifest artifact records.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub repository: String,
    pub name: String,
    pub cluster: String,
    /// The patterns the backup asked for (what a restore selects by default).
    pub patterns: Vec<String>,
    /// The indices the snapshot holds.
    pub indices: Vec<String>,
    pub state: String,
    pub start: String,
    pub end: String,
    /// Index → its aliases and their properties on the source when the
    /// snapshot was made; what a restore puts on the restored indices.
    /// None in manifests written before it was recorded.
    pub aliases: Option<Map<String, Value>>,
}

impl Manifest {
    /// The artifact's bytes.
    pub fn to_artifact(&self) -> String {
        let mut line = json!({"snapshot": {
            "repository": self.repository,
            "name": self.name,
            "cluster": self.cluster,
            "patterns": self.patterns,
            "indices": self.indices,
            "state": self.state,
            "start_time": self.start,
            "end_time": self.end,
        }});
        if let Some(aliases) = &self.aliases {
            line["snapshot"]["aliases"] = Value::Object(aliases.clone());
        }
        format!("{MAGIC}\n{line}\n")
    }

    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the artifact is not UTF-8")?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!(
                "not an envsync {FORMAT} artifact (it does not start with {MAGIC})"
            ));
        }
        let v: Value = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| format!("the snapshot manifest's second line is not JSON: {e}"))?;
        let s = &v["snapshot"];
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        let list = |k: &str| -> Vec<String> {
            s[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let m = Manifest {
            repository: text("repository"),
            name: text("name"),
            cluster: text("cluster"),
            patterns: list("patterns"),
            indices: list("indices"),
            state: text("state"),
            start: text("start_time"),
            end: text("end_time"),
            aliases: s.get("aliases").and_then(Value::as_object).cloned(),
        };
        if m.name.is_empty() || m.repository.is_empty() {
            return Err("the snapshot manifest names no repository or snapshot".into());
        }
        Ok(m)
    }
}

/// Whether the repository `existing` (the `REPO` entry of
/// `GET /_snapshot/REPO`) is an S3 repository with `settings` (values
/// compared as text: clusters report settings as strings).
pub fn same_repository(existing: &Value, settings: &Value) -> bool {
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    existing["type"].as_str() == Some("s3")
        && settings.as_object().is_some_and(|want| {
            want.iter().all(|(k, v)| {
                existing["settings"]
                    .get(k)
                    .is_some_and(|have| as_text(have) == as_text(v))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, state: &str, start_ms: u64) -> Snapshot {
        Snapshot {
            name: name.into(),
            state: State::parse(state),
            indices: vec![],
            start_ms,
            start: String::new(),
            end: String::new(),
            problems: String::new(),
        }
    }

    #[test]
    fn snapshot_names_are_lower_case_utc_stamps() {
        assert_eq!(stamp(0), "19700101t000000z");
        // 2026-11-21T10:15:30Z
        assert_eq!(stamp(1_795_256_130), "20261121t101530z");
        // 2024-02-29T23:59:59Z (leap day)
        assert_eq!(stamp(1_709_251_199), "20240229t235959z");
        assert_eq!(
            snapshot_name("Prod Cluster/EU", 1_795_256_130),
            "prod-cluster-eu-20261121t101530z"
        );
        assert_eq!(snapshot_name("_x", 0), "x-19700101t000000z");
        assert_eq!(snapshot_name("", 0), "cluster-19700101t000000z");
        let name = snapshot_name("Prod", 1_795_256_130);
        assert!(made_by_envsync(&name, "prod"));
        assert!(made_by_envsync(&name, "PROD"));
        assert!(!made_by_envsync(&name, "prod2"));
        assert!(!made_by_envsync("prod-nightly", "prod"));
        assert!(!made_by_envsync("prod-20261121t101530", "prod"));
    }

    #[test]
    fn states_and_failures_are_parsed() {
        let answer = json!({"snapshots": [
            {"snapshot": "a", "state": "IN_PROGRESS", "indices": ["x", "y"]},
            {"snapshot": "b", "state": "PARTIAL", "reason": "shards failed",
             "failures": [{"index": "x", "shard_id": 0, "reason": "disk full"}],
             "start_time_in_millis": 5, "start_time": "s", "end_time": "e"},
            {"snapshot": "c", "state": "FAILED"},
            {"snapshot": "d", "state": "INCOMPATIBLE"},
            {"snapshot": "e", "state": "success"},
            {"no-name": true},
        ]});
        let s = parse_snapshots(&answer);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].state, State::InProgress);
        assert!(!s[0].state.finished());
        assert_eq!(s[0].indices, ["x", "y"]);
        assert_eq!(s[1].state, State::Partial);
        assert!(s[1].state.finished());
        assert_eq!(s[1].problems, "reason: shards failed; x[0]: disk full");
        assert_eq!(s[1].start_ms, 5);
        assert_eq!(s[2].state, State::Failed);
        assert_eq!(s[3].state, State::Incompatible);
        assert_eq!(s[4].state, State::Success);
        assert_eq!(State::parse("WEIRD"), State::Other("WEIRD".into()));
        let old = json!({"responses": [{"snapshots": [{"snapshot": "z", "state": "SUCCESS"}]}]});
        assert_eq!(parse_snapshots(&old)[0].name, "z");
    }

    #[test]
    fn retention_keeps_the_newest_successful_envsync_snapshots() {
        let all = vec![
            snap("prod-20261101t000000z", "SUCCESS", 1),
            snap("prod-20261102t000000z", "SUCCESS", 2),
            snap("prod-20261103t000000z", "PARTIAL", 3),
            snap("prod-20261104t000000z", "SUCCESS", 4),
            snap("nightly-slm-1", "SUCCESS", 0),
            snap("prod-20261105t000000z", "FAILED", 5),
            snap("prod-20261106t000000z", "SUCCESS", 6),
        ];
        let just = "prod-20261106t000000z";
        assert_eq!(
            to_delete(&all, "prod", 2, just),
            ["prod-20261102t000000z", "prod-20261101t000000z"]
        );
        assert_eq!(
            to_delete(&all, "prod", 1, just),
            [
                "prod-20261104t000000z",
                "prod-20261102t000000z",
                "prod-20261101t000000z"
            ]
        );
        assert!(to_delete(&all, "prod", 7, just).is_empty());
        // The one just made is never deleted, even if it looks older.
        let odd = vec![
            snap("prod-20261101t000000z", "SUCCESS", 9),
            snap("prod-20261102t000000z", "SUCCESS", 1),
        ];
        assert_eq!(
            to_delete(&odd, "prod", 1, "prod-20261102t000000z"),
            ["prod-20261101t000000z"]
        );
        // Without start times the name orders them.
        let names = vec![
            snap("prod-20261101t000000z", "SUCCESS", 0),
            snap("prod-20261103t000000z", "SUCCESS", 0),
            snap("prod-20261102t000000z", "SUCCESS", 0),
        ];
        assert_eq!(
            to_delete(&names, "prod", 2, "prod-20261103t000000z"),
            ["prod-20261101t000000z"]
        );
        assert_eq!(newest_success(&all).unwrap().name, "prod-20261106t000000z");
    }

    #[test]
    fn patterns_select_non_system_indices() {
        assert!(glob("logs-*", "logs-1"));
        assert!(glob("*", "a"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(!glob("logs-*", "log"));
        assert!(glob("products", "products"));
        assert!(!glob("products", "products2"));
        let names: Vec<String> = ["logs-1", "logs-2", ".logs-x", "products", "other"]
            .map(String::from)
            .into();
        let p = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select(&p(&["logs-*", "products"]), &names),
            ["logs-1", "logs-2", "products"]
        );
        assert_eq!(
            select(&p(&["*", "-logs-2"]), &names),
            ["logs-1", "products", "other"]
        );
        assert_eq!(select(&p(&[".logs-x"]), &names), Vec::<String>::new());
    }

    #[test]
    fn manifests_round_trip_and_are_recognised() {
        let m = Manifest {
            repository: "backups".into(),
            name: "prod-20261121t101530z".into(),
            cluster: "prod".into(),
            patterns: vec!["logs-*".into()],
            indices: vec!["logs-1".into()],
            state: "SUCCESS".into(),
            start: "2026-11-21T10:15:30.000Z".into(),
            end: "2026-11-21T10:15:40.000Z".into(),
            aliases: Some(
                json!({"logs-1": {"logs": {"is_write_index": true}}})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        };
        let text = m.to_artifact();
        assert!(is_manifest(text.as_bytes()));
        assert!(!is_manifest(
            b"{\"envsync\":\"search-ndjson\",\"version\":1}\n"
        ));
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
        assert!(Manifest::parse(b"{}\n").is_err());
        // Manifests written before aliases were recorded still parse.
        let older = Manifest { aliases: None, ..m };
        let text = older.to_artifact();
        assert!(!text.contains("aliases"));
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), older);
    }

    #[test]
    fn repositories_are_compared_by_settings() {
        let have = json!({"type": "s3", "settings": {"bucket": "b", "base_path": "p", "compress": "true"}});
        assert!(same_repository(
            &have,
            &json!({"bucket": "b", "base_path": "p"})
        ));
        assert!(same_repository(
            &have,
            &json!({"bucket": "b", "compress": true})
        ));
        assert!(!same_repository(&have, &json!({"bucket": "c"})));
        assert!(!same_repository(
            &json!({"type": "fs", "settings": {"bucket": "b"}}),
            &json!({"bucket": "b"})
        ));
    }
}
