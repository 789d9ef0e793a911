//! Metric names, label names and the Pushgateway grouping key (docs/metrics.md).
//!
//! These are the names operators already alert on; changing one breaks their
//! dashboards and rules.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;

/// The `job` label of every group.
pub const JOB: &str = "db-backup";

/// Gauge: 0 failed, 1 started, 2 succeeded.
pub const STATE: &str = "db_backup_job_state";
/// Gauge, `{state}`: Unix time the last run reached that state.
pub const STATUS_TIMESTAMP: &str = "db_backup_job_status_timestamp_seconds";
/// Gauge, `{state}` (succeeded or failed): how long the last run that ended so took.
pub const DURATION: &str = "db_backup_job_duration_seconds";
/// Gauge: size of the artifact the last successful run wrote or read.
pub const FILE_SIZE: &str = "db_backup_job_file_size_bytes";

/// Gauge, pushed while a run is in progress (then the last run's final
/// values): artifact bytes streamed so far.
pub const PROGRESS_BYTES: &str = "db_backup_job_progress_bytes";
/// Gauge: bytes expected in all (the artifact's size on restore, else the
/// previous success's size); NaN when unknown.
pub const PROGRESS_EXPECTED_BYTES: &str = "db_backup_job_progress_expected_bytes";
/// Gauge: rows or documents done, as the plugin reports them; NaN when it
/// reports none.
pub const PROGRESS_ITEMS: &str = "db_backup_job_progress_items";
/// Gauge: estimated seconds left; NaN when unknown.
pub const PROGRESS_ETA: &str = "db_backup_job_progress_eta_seconds";
/// Gauge: Unix time the progress values were measured.
pub const PROGRESS_TIMESTAMP: &str = "db_backup_job_progress_timestamp_seconds";
/// Gauge, restore and copy groups: Unix time of the production data the
/// target database now holds (the restored backup's creation, or the
/// start of the copy).
pub const DATA_TIMESTAMP: &str = "db_backup_job_data_timestamp_seconds";

/// Grouping-key label names, in URL order after `job`.
pub const LABEL_ENGINE: &str = "database_engine";
pub const LABEL_INSTANCE: &str = "database_instance";
pub const LABEL_DB_NAME: &str = "database_db_name";
pub const LABEL_OPERATION: &str = "operation";
/// Series label of the timestamp and duration metrics.
pub const LABEL_STATE: &str = "state";
/// Metric labels (not grouping labels) naming the alert classes of a job.
pub const LABEL_RUNTIME_CLASS: &str = "runtime_class";
pub const LABEL_SCHEDULE_CLASS: &str = "schedule_class";

/// The state of a run, as `db_backup_job_state` encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Failed,
    Started,
    Succeeded,
}

impl State {
    pub const ALL: [State; 3] = [State::Started, State::Succeeded, State::Failed];

    /// The value of `db_backup_job_state`.
    pub fn value(self) -> u8 {
        match self {
            State::Failed => 0,
            State::Started => 1,
            State::Succeeded => 2,
        }
    }

    /// The value of the `state` label.
    pub fn label(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Started => "started",
            State::Succeeded => "succeeded",
        }
    }

    pub fn from_label(label: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.label() == label)
    }

    pub fn from_value(value: f64) -> Option<State> {
        [State::Failed, State::Started, State::Succeeded]
            .into_iter()
            .find(|s| f64::from(s.value()) == value)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The Pushgateway grouping key of one database and operation: `job` is
/// always [`JOB`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupingKey {
    /// `database_engine`, e.g. `postgres`, `mysql`.
    pub engine: String,
    /// `database_instance`: the database host.
    pub instance: String,
    /// `database_db_name`.
    pub db_name: String,
    /// `operation`: `backup`, `restore`, `transform`, `copy`.
    pub operation: String,
}

impl GroupingKey {
    pub fn new(
        engine: impl Into<String>,
        instance: impl Into<String>,
        db_name: impl Into<String>,
        operation: impl Into<String>,
    ) -> GroupingKey {
        GroupingKey {
            engine: engine.into(),
            instance: instance.into(),
            db_name: db_name.into(),
            operation: operation.into(),
        }
    }

    /// All grouping labels, `job` first, in URL order.
    pub fn labels(&self) -> [(&'static str, &str); 5] {
        [
            ("job", JOB),
            (LABEL_ENGINE, &self.engine),
            (LABEL_INSTANCE, &self.instance),
            (LABEL_DB_NAME, &self.db_name),
            (LABEL_OPERATION, &self.operation),
        ]
    }

    /// The group's path below the Pushgateway's base URL:
    /// `/metrics/job/db-backup/database_engine/E/database_instance/H/database_db_name/D/operation/O`.
    pub fn push_path(&self) -> String {
        let mut path = String::from("/metrics");
        for (name, value) in self.labels() {
            path.push('/');
            path.push_str(&encode_path_label(name, value));
        }
        path
    }
}

impl fmt::Display for GroupingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of {} on {}",
            self.engine, self.operation, self.db_name, self.instance
        )
    }
}

/// One job's metrics identity: its grouping key plus the alert classes it
/// declares, pushed as metric labels (see docs/metrics.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub key: GroupingKey,
    /// `runtime_class` label, e.g. `1h`, `4h`, `13h`, `45m`: which
    /// "running too long" rule applies. `None`: no such alert.
    pub runtime_class: Option<String>,
    /// `schedule_class` label, e.g. `daily`, `weekly`: which "not succeeded
    /// within" rule applies. `None`: no such alert.
    pub schedule_class: Option<String>,
}

impl Group {
    pub fn new(key: GroupingKey) -> Group {
        Group {
            key,
            runtime_class: None,
            schedule_class: None,
        }
    }

    pub fn with_runtime_class(mut self, class: impl Into<String>) -> Group {
        self.runtime_class = Some(class.into());
        self
    }

    pub fn with_schedule_class(mut self, class: impl Into<String>) -> Group {
        self.schedule_class = Some(class.into());
        self
    }

    /// The class labels that are set, in rendering order.
    pub fn class_labels(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(c) = &self.runtime_class {
            out.push((LABEL_RUNTIME_CLASS, c.as_str()));
        }
        if let Some(c) = &self.schedule_class {
            out.push((LABEL_SCHEDULE_CLASS, c.as_str()));
        }
        out
    }
}

/// Characters a label value may contain and still go into the URL as is.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// `name/value` for a URL path; any value that is not plain (contains `/`,
/// spaces, non-ASCII, or is empty) goes as `name@base64/<base64url>`, the
/// Pushgateway's rule; an empty value is `name@base64/=`.
pub fn encode_path_label(name: &str, value: &str) -> String {
    if is_plain(value) {
        format!("{name}/{value}")
    } else if value.is_empty() {
        format!("{name}@base64/=")
    } else {
        format!("{name}@base64/{}", URL_SAFE_NO_PAD.encode(value.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_plain_values_go_as_is() {
        let key = GroupingKey::new("postgres", "db1.example.org", "orders_2024", "backup");
        assert_eq!(
            key.push_path(),
            "/metrics/job/db-backup/database_engine/postgres/database_instance/db1.example.org\
             /database_db_name/orders_2024/operation/backup"
        );
    }

    #[test]
    fn metrics_special_values_go_as_base64url() {
        assert_eq!(encode_path_label("a", "x/y"), "a@base64/eC95");
        assert_eq!(encode_path_label("a", "my db"), "a@base64/bXkgZGI");
        assert_eq!(encode_path_label("a", ""), "a@base64/=");
        // base64url alphabet: '-' and '_' instead of '+' and '/'.
        assert_eq!(encode_path_label("a", "\u{fb}\u{ff}"), "a@base64/w7vDvw");
        assert_eq!(encode_path_label("a", "??>"), "a@base64/Pz8-");
        assert_eq!(encode_path_label("a", "a-b_c.d~e"), "a/a-b_c.d~e");
    }

    #[test]
    fn metrics_state_values() {
        assert_eq!(State::Failed.value(), 0);
        assert_eq!(State::Started.value(), 1);
        assert_eq!(State::Succeeded.value(), 2);
        for s in State::ALL {
            assert_eq!(State::from_label(s.label()), Some(s));
            assert_eq!(State::from_value(f64::from(s.value())), Some(s));
        }
    }
}
