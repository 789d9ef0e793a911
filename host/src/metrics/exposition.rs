//! The last values of every group, and the Prometheus text exposition
//! format (version 0.0.4) they are pushed and served in.
//!
//! [`Registry`] is what the Pushgateway client updates before each push and
//! what the daemon serves as `/metrics`. Each group keeps every series it
//! ever had (the last started, succeeded and failed timestamps side by side),
//! because a push replaces a whole metric family in the Pushgateway group
//! (see docs/decisions/0009-metrics-http.md).

use super::names::{
    DATA_TIMESTAMP, DURATION, FILE_SIZE, Group, GroupingKey, LABEL_STATE, PROGRESS_BYTES,
    PROGRESS_ETA, PROGRESS_EXPECTED_BYTES, PROGRESS_ITEMS, PROGRESS_TIMESTAMP, STATE,
    STATUS_TIMESTAMP, State,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One sample: metric name, labels, value.
type SampleOf<'a> = (&'static str, Vec<(&'a str, &'a str)>, f64);

/// The last values of one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupValues {
    /// Alert class labels put on every series (see [`Group`]).
    pub runtime_class: Option<String>,
    pub schedule_class: Option<String>,
    /// `db_backup_job_state`.
    pub state: Option<State>,
    /// `db_backup_job_status_timestamp_seconds{state}`: Unix seconds.
    pub timestamps: BTreeMap<State, f64>,
    /// `db_backup_job_duration_seconds{state}` (succeeded, failed).
    pub durations: BTreeMap<State, f64>,
    /// `db_backup_job_file_size_bytes` of the last success that had a size.
    pub file_size: Option<f64>,
    /// The `db_backup_job_progress_*` gauges of the running (or last) run.
    pub progress: Option<ProgressValues>,
    /// `db_backup_job_data_timestamp_seconds`: Unix time of the production
    /// data in the target database (restore and copy groups).
    pub data_timestamp: Option<f64>,
}

/// The progress gauges of one run; NaN stands for unknown, so that a push
/// always replaces all of them (a family left out of a push would keep the
/// previous run's value in the Pushgateway).
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressValues {
    pub bytes: f64,
    pub expected_bytes: f64,
    pub items: f64,
    pub eta_seconds: f64,
    /// Unix seconds.
    pub timestamp: f64,
}

impl ProgressValues {
    /// A run that has just started: nothing done, `expected` bytes.
    pub fn starting(expected: Option<u64>, at: f64) -> ProgressValues {
        ProgressValues {
            bytes: 0.0,
            expected_bytes: expected.map_or(f64::NAN, |b| b as f64),
            items: f64::NAN,
            eta_seconds: f64::NAN,
            timestamp: at,
        }
    }

    pub fn of(s: &crate::progress::Snapshot, at: f64) -> ProgressValues {
        ProgressValues {
            bytes: s.bytes as f64,
            expected_bytes: s.expected_bytes.map_or(f64::NAN, |b| b as f64),
            items: s.items.map_or(f64::NAN, |i| i as f64),
            eta_seconds: s.eta_seconds.unwrap_or(f64::NAN),
            timestamp: at,
        }
    }
}

impl GroupValues {
    /// Takes the classes of `group` (the config may have changed them).
    pub fn set_classes(&mut self, group: &Group) {
        self.runtime_class = group.runtime_class.clone();
        self.schedule_class = group.schedule_class.clone();
    }

    /// Fills in every series `older` has and `self` lacks (`self` is newer).
    pub fn fill_from(&mut self, older: &GroupValues) {
        if self.state.is_none() {
            self.state = older.state;
        }
        for (s, v) in &older.timestamps {
            self.timestamps.entry(*s).or_insert(*v);
        }
        for (s, v) in &older.durations {
            self.durations.entry(*s).or_insert(*v);
        }
        if self.file_size.is_none() {
            self.file_size = older.file_size;
        }
        if self.data_timestamp.is_none() {
            self.data_timestamp = older.data_timestamp;
        }
    }

    fn class_labels(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(c) = &self.runtime_class {
            out.push((super::names::LABEL_RUNTIME_CLASS, c.as_str()));
        }
        if let Some(c) = &self.schedule_class {
            out.push((super::names::LABEL_SCHEDULE_CLASS, c.as_str()));
        }
        out
    }

    /// The samples of this group as `(metric, labels, value)`, families in
    /// the order of [`FAMILIES`], grouping labels first when `key` is given.
    fn samples<'a>(&'a self, key: Option<&'a GroupingKey>) -> Vec<SampleOf<'a>> {
        let base: Vec<(&str, &str)> = key.map(|k| k.labels().to_vec()).unwrap_or_default();
        let classes = self.class_labels();
        let labels = |state: Option<State>| {
            let mut l = base.clone();
            if let Some(s) = state {
                l.push((LABEL_STATE, s.label()));
            }
            l.extend(classes.iter().copied());
            l
        };
        let mut out = Vec::new();
        if let Some(s) = self.state {
            out.push((STATE, labels(None), f64::from(s.value())));
        }
        for (s, v) in &self.timestamps {
            out.push((STATUS_TIMESTAMP, labels(Some(*s)), *v));
        }
        for (s, v) in &self.durations {
            out.push((DURATION, labels(Some(*s)), *v));
        }
        if let Some(v) = self.file_size {
            out.push((FILE_SIZE, labels(None), v));
        }
        if let Some(p) = &self.progress {
            out.push((PROGRESS_BYTES, labels(None), p.bytes));
            out.push((PROGRESS_EXPECTED_BYTES, labels(None), p.expected_bytes));
            out.push((PROGRESS_ITEMS, labels(None), p.items));
            out.push((PROGRESS_ETA, labels(None), p.eta_seconds));
            out.push((PROGRESS_TIMESTAMP, labels(None), p.timestamp));
        }
        if let Some(v) = self.data_timestamp {
            out.push((DATA_TIMESTAMP, labels(None), v));
        }
        out
    }

    /// The body of a push to this group's URL: no grouping labels (the URL
    /// carries them), every family this group has a value for.
    pub fn push_body(&self) -> String {
        render(self.samples(None).into_iter())
    }
}

/// The families, in exposition order, with their help text.
pub const FAMILIES: [(&str, &str); 10] = [
    (
        STATE,
        "State of the last run: 0 failed, 1 started, 2 succeeded.",
    ),
    (
        STATUS_TIMESTAMP,
        "Unix time the last run reached the state in the state label.",
    ),
    (
        DURATION,
        "Duration of the last run that ended in the state in the state label.",
    ),
    (
        FILE_SIZE,
        "Size in bytes of the artifact of the last successful run.",
    ),
    (
        PROGRESS_BYTES,
        "Artifact bytes the running (or last) run has streamed so far.",
    ),
    (
        PROGRESS_EXPECTED_BYTES,
        "Bytes the running run is expected to stream: the artifact's size, else the previous success's; NaN if unknown.",
    ),
    (
        PROGRESS_ITEMS,
        "Rows or documents the running run has done, as its plugin reports them; NaN if it reports none.",
    ),
    (
        PROGRESS_ETA,
        "Estimated seconds until the running run has streamed its expected bytes; NaN if unknown.",
    ),
    (
        PROGRESS_TIMESTAMP,
        "Unix time the progress values were measured.",
    ),
    (
        DATA_TIMESTAMP,
        "Unix time of the production data the target database holds: the restored backup's creation or the copy's start.",
    ),
];

/// Renders samples as text, one `# HELP`/`# TYPE` header per family present
/// (all samples of a family together, as the format requires).
fn render<'a>(samples: impl Iterator<Item = SampleOf<'a>>) -> String {
    let mut by_family: BTreeMap<usize, Vec<SampleOf<'a>>> = BTreeMap::new();
    for sample in samples {
        let idx = FAMILIES
            .iter()
            .position(|(n, _)| *n == sample.0)
            .expect("known family");
        by_family.entry(idx).or_default().push(sample);
    }
    let mut out = String::new();
    for (idx, series) in by_family {
        let (name, help) = FAMILIES[idx];
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (_, labels, value) in series {
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(value));
        }
    }
    out
}

/// Escapes a label value for the text format: `\`, `"` and newlines.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, no exponent.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// The last values of every group this process pushed (or learned from the
/// Pushgateway).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    groups: BTreeMap<GroupingKey, GroupValues>,
}

/// A registry shared between the pusher and the `/metrics` endpoint.
pub type SharedRegistry = Arc<Mutex<Registry>>;

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn get(&self, key: &GroupingKey) -> Option<&GroupValues> {
        self.groups.get(key)
    }

    pub fn contains(&self, key: &GroupingKey) -> bool {
        self.groups.contains_key(key)
    }

    /// The group's values, created empty when new.
    pub fn entry(&mut self, key: &GroupingKey) -> &mut GroupValues {
        self.groups.entry(key.clone()).or_default()
    }

    pub fn groups(&self) -> impl Iterator<Item = (&GroupingKey, &GroupValues)> {
        self.groups.iter()
    }

    /// Records that a run of `group` started at `at` (Unix seconds):
    /// state 1 and the started timestamp; everything else stays.
    pub fn record_started(&mut self, group: &Group, at: f64) {
        let g = self.entry(&group.key);
        g.set_classes(group);
        g.state = Some(State::Started);
        g.timestamps.insert(State::Started, at);
    }

    /// Records that a run ended in `state` (succeeded or failed) at `at`
    /// after `duration` seconds, with the artifact size on success.
    pub fn record_finished(
        &mut self,
        group: &Group,
        state: State,
        at: f64,
        duration: f64,
        size: Option<f64>,
    ) {
        debug_assert!(state != State::Started);
        let g = self.entry(&group.key);
        g.set_classes(group);
        g.state = Some(state);
        g.timestamps.insert(state, at);
        g.durations.insert(state, duration);
        if state == State::Succeeded
            && let Some(size) = size
        {
            g.file_size = Some(size);
        }
    }

    /// The running run's progress now.
    pub fn record_progress(&mut self, group: &Group, values: ProgressValues) {
        let g = self.entry(&group.key);
        g.set_classes(group);
        g.progress = Some(values);
    }

    /// The target database now holds production data from `at` (Unix
    /// seconds).
    pub fn record_data_timestamp(&mut self, group: &Group, at: f64) {
        let g = self.entry(&group.key);
        g.set_classes(group);
        g.data_timestamp = Some(at);
    }

    /// The text exposition of every group, grouping labels included — what
    /// the daemon serves as `/metrics`.
    pub fn render(&self) -> String {
        render(
            self.groups
                .iter()
                .flat_map(|(key, values)| values.samples(Some(key))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        Group::new(GroupingKey::new("postgres", "db/1", "my \"db\"", "backup"))
            .with_runtime_class("4h")
            .with_schedule_class("daily")
    }

    #[test]
    fn metrics_exposition_of_a_success_then_a_failure() {
        let mut r = Registry::new();
        let g = group();
        r.record_started(&g, 1000.0);
        r.record_finished(&g, State::Succeeded, 1060.5, 60.5, Some(4096.0));
        r.record_started(&g, 2000.0);
        r.record_finished(&g, State::Failed, 2010.0, 10.0, None);
        let l = r#"job="db-backup",database_engine="postgres",database_instance="db/1",database_db_name="my \"db\"",operation="backup""#;
        let c = r#"runtime_class="4h",schedule_class="daily""#;
        let expected = format!(
            "# HELP db_backup_job_state State of the last run: 0 failed, 1 started, 2 succeeded.\n\
             # TYPE db_backup_job_state gauge\n\
             db_backup_job_state{{{l},{c}}} 0\n\
             # HELP db_backup_job_status_timestamp_seconds Unix time the last run reached the state in the state label.\n\
             # TYPE db_backup_job_status_timestamp_seconds gauge\n\
             db_backup_job_status_timestamp_seconds{{{l},state=\"failed\",{c}}} 2010\n\
             db_backup_job_status_timestamp_seconds{{{l},state=\"started\",{c}}} 2000\n\
             db_backup_job_status_timestamp_seconds{{{l},state=\"succeeded\",{c}}} 1060.5\n\
             # HELP db_backup_job_duration_seconds Duration of the last run that ended in the state in the state label.\n\
             # TYPE db_backup_job_duration_seconds gauge\n\
             db_backup_job_duration_seconds{{{l},state=\"failed\",{c}}} 10\n\
             db_backup_job_duration_seconds{{{l},state=\"succeeded\",{c}}} 60.5\n\
             # HELP db_backup_job_file_size_bytes Size in bytes of the artifact of the last successful run.\n\
             # TYPE db_backup_job_file_size_bytes gauge\n\
             db_backup_job_file_size_bytes{{{l},{c}}} 4096\n"
        );
        assert_eq!(r.render(), expected);
    }

    #[test]
    fn metrics_push_body_has_no_grouping_labels() {
        let mut r = Registry::new();
        let g = Group::new(GroupingKey::new("mysql", "h", "d", "restore"));
        r.record_started(&g, 1700000000.25);
        let body = r.get(&g.key).unwrap().push_body();
        assert_eq!(
            body,
            "# HELP db_backup_job_state State of the last run: 0 failed, 1 started, 2 succeeded.\n\
             # TYPE db_backup_job_state gauge\n\
             db_backup_job_state 1\n\
             # HELP db_backup_job_status_timestamp_seconds Unix time the last run reached the state in the state label.\n\
             # TYPE db_backup_job_status_timestamp_seconds gauge\n\
             db_backup_job_status_timestamp_seconds{state=\"started\"} 1700000000.25\n"
        );
    }

    #[test]
    fn metrics_progress_and_data_age_families() {
        let mut r = Registry::new();
        let g = Group::new(GroupingKey::new("mysql", "h", "d", "restore"));
        r.record_progress(&g, ProgressValues::starting(None, 5.0));
        r.record_data_timestamp(&g, 1700000000.0);
        let body = r.get(&g.key).unwrap().push_body();
        for line in [
            "db_backup_job_progress_bytes 0\n",
            "db_backup_job_progress_expected_bytes NaN\n",
            "db_backup_job_progress_items NaN\n",
            "db_backup_job_progress_eta_seconds NaN\n",
            "db_backup_job_progress_timestamp_seconds 5\n",
            "db_backup_job_data_timestamp_seconds 1700000000\n",
            "# TYPE db_backup_job_data_timestamp_seconds gauge\n",
        ] {
            assert!(body.contains(line), "{line:?} missing from\n{body}");
        }
    }

    #[test]
    fn metrics_families_stay_together_across_groups() {
        let mut r = Registry::new();
        for db in ["a", "b"] {
            let g = Group::new(GroupingKey::new("postgres", "h", db, "backup"));
            r.record_started(&g, 1.0);
        }
        let text = r.render();
        assert_eq!(text.matches("# TYPE db_backup_job_state gauge").count(), 1);
        assert_eq!(
            text.matches("# TYPE db_backup_job_status_timestamp_seconds gauge")
                .count(),
            1
        );
        assert_eq!(text.lines().count(), 8);
    }

    #[test]
    fn metrics_fill_from_keeps_newer_values() {
        let mut newer = GroupValues {
            state: Some(State::Failed),
            timestamps: BTreeMap::from([(State::Failed, 20.0)]),
            ..GroupValues::default()
        };
        let older = GroupValues {
            state: Some(State::Succeeded),
            timestamps: BTreeMap::from([(State::Failed, 5.0), (State::Succeeded, 10.0)]),
            file_size: Some(7.0),
            ..GroupValues::default()
        };
        newer.fill_from(&older);
        assert_eq!(newer.state, Some(State::Failed));
        assert_eq!(newer.timestamps[&State::Failed], 20.0);
        assert_eq!(newer.timestamps[&State::Succeeded], 10.0);
        assert_eq!(newer.file_size, Some(7.0));
    }

    #[test]
    fn metrics_escapes_and_values() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1e15), "1000000000000000");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
