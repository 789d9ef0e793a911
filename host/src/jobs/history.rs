//! Run history: one JSON line per finished step, appended to
//! `history.jsonl` in the state folder; `envsync-host status` reads it back
//! and shows the latest run of each database and operation.
//!
//! An append-only file rather than a database: one small `O_APPEND` write
//! per step is atomic enough for concurrent runs, survives crashes (a torn
//! last line is skipped on read) and is trivial to inspect or rotate.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FILE_NAME: &str = "history.jsonl";

/// A run older than this is shown as stale (red) by `status`.
pub const STALE_AFTER: Duration = Duration::from_secs(8 * 24 * 3600);

/// One finished step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the step ended.
    pub time: DateTime<Utc>,
    pub environment: String,
    /// The config task; none for ad-hoc `run --plugin` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub plugin: String,
    pub instance: String,
    pub database: String,
    pub operation: String,
    /// `succeeded` or `failed`.
    pub state: String,
    pub duration_seconds: f64,
    /// Artifact size in bytes (backup: written; restore: read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Artifact key in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How old the production data is that a successful step left in its
    /// target (a restore: the backup's creation; a copy: its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_time: Option<DateTime<Utc>>,
}

/// The state folder: `configured` (the config's `state_dir`), else
/// `$ENVSYNC_STATE_DIR`, else the user's state folder + `envsync/`.
pub fn state_dir(configured: Option<&Path>) -> Option<PathBuf> {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ENVSYNC_STATE_DIR").map(PathBuf::from))
        .or_else(|| {
            dirs::state_dir()
                .or_else(dirs::data_local_dir)
                .map(|d| d.join("envsync"))
        })
}

/// The history file of one state folder.
#[derive(Clone, Debug)]
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn in_dir(dir: &Path) -> History {
        History {
            path: dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line (creating the folder and file).
    pub fn append(&self, record: &Record) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state folder {}", dir.display()))?;
        }
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        // One write call: concurrent appenders do not interleave lines.
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }

    /// Every readable record in file order; a missing file is no history.
    /// Lines that do not parse (a torn write) are skipped with a warning.
    pub fn read(&self) -> Result<Vec<Record>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        Ok(parse_lines(&text, &self.path))
    }
}

fn parse_lines(text: &str, path: &Path) -> Vec<Record> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .filter_map(|(i, l)| match serde_json::from_str(l) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "{}:{}: skipping a bad history line: {e}",
                    path.display(),
                    i + 1
                );
                None
            }
        })
        .collect()
}

/// A short age for tables: `42s`, `5m`, `3h`, `9d`.
pub fn short_age(seconds: f64) -> String {
    let d = Duration::from_secs_f64(seconds.max(0.0)).as_secs();
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

/// The latest run of one database and operation, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub last: Record,
    pub age_seconds: f64,
    /// Failed, or older than [`STALE_AFTER`]: shown red.
    pub alarm: bool,
}

/// One row per (instance, database, operation): its latest record (by time;
/// on a tie the later line wins), sorted by instance, database, operation.
pub fn latest(records: &[Record], now: DateTime<Utc>) -> Vec<Row> {
    let mut last: BTreeMap<(&str, &str, &str), &Record> = BTreeMap::new();
    for r in records {
        let key = (
            r.instance.as_str(),
            r.database.as_str(),
            r.operation.as_str(),
        );
        match last.get(&key) {
            Some(prev) if prev.time > r.time => {}
            _ => {
                last.insert(key, r);
            }
        }
    }
    last.into_values()
        .map(|r| {
            let age = (now - r.time).to_std().unwrap_or_default();
            Row {
                last: r.clone(),
                age_seconds: age.as_secs_f64(),
                alarm: r.state != "succeeded" || age > STALE_AFTER,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(day: u32, db: &str, op: &str, state: &str) -> Record {
        Record {
            time: Utc.with_ymd_and_hms(2024, 5, day, 4, 0, 0).unwrap(),
            environment: "staging".into(),
            task: Some("shop".into()),
            plugin: "postgres".into(),
            instance: "db1".into(),
            database: db.into(),
            operation: op.into(),
            state: state.into(),
            duration_seconds: 1.5,
            size: Some(42),
            key: None,
            data_time: None,
        }
    }

    #[test]
    fn jobs_history_latest_per_database_and_operation() {
        let now = Utc.with_ymd_and_hms(2024, 5, 20, 0, 0, 0).unwrap();
        let records = [
            rec(18, "shop", "backup", "failed"),
            rec(19, "shop", "backup", "succeeded"),
            // Out of order in the file: the later time still wins.
            rec(17, "shop", "backup", "failed"),
            rec(19, "shop", "restore", "failed"),
            rec(2, "blog", "backup", "succeeded"),
        ];
        let rows = latest(&records, now);
        let got: Vec<(&str, &str, &str, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.last.database.as_str(),
                    r.last.operation.as_str(),
                    r.last.state.as_str(),
                    r.alarm,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("blog", "backup", "succeeded", true), // 18 days old
                ("shop", "backup", "succeeded", false),
                ("shop", "restore", "failed", true),
            ]
        );
        assert_eq!(rows[1].age_seconds, 20.0 * 3600.0);
    }

    #[test]
    fn jobs_history_appends_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::in_dir(&dir.path().join("state"));
        assert!(history.read().unwrap().is_empty());
        history
            .append(&rec(1, "shop", "backup", "succeeded"))
            .unwrap();
        // A crash mid-write leaves a partial line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(history.path())
            .unwrap();
        f.write_all(b"{\"time\":\"2024-").unwrap();
        f.write_all(b"\n").unwrap();
        history.append(&rec(2, "shop", "backup", "failed")).unwrap();
        let read = history.read().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1], rec(2, "shop", "backup", "failed"));
    }
}
