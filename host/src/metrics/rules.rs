//! Prometheus alert rules over the job metrics, rendered from settings.
//!
//! `deploy/prometheus/envsync-alerts.yml` is [`alert_rules`] of
//! [`AlertSettings::default`]; a unit test keeps the two equal
//! (`ENVSYNC_UPDATE_RULES=1 cargo test -p envsync-host metrics_committed_rules`
//! rewrites the file). The promtool tests in `deploy/prometheus/tests/` test
//! the default file.
//!
//! A job declares its classes through the `runtime_class` and
//! `schedule_class` labels on its series (see [`super::Group`]); every rule
//! below selects on one class.

use super::names::{LABEL_RUNTIME_CLASS, LABEL_SCHEDULE_CLASS};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::time::Duration;

/// "Running too long": a run in this class that started more than
/// `max_runtime` ago and has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeClass {
    /// The `runtime_class` label value, e.g. `4h`.
    pub name: String,
    pub max_runtime: Duration,
}

/// "Not succeeded within": a job in this class whose last success is older
/// than `max_age`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleClass {
    /// The `schedule_class` label value, e.g. `daily`.
    pub name: String,
    pub max_age: Duration,
}

/// Classes, thresholds and severities of the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    pub runtime_classes: Vec<RuntimeClass>,
    pub schedule_classes: Vec<ScheduleClass>,
    /// `severity` label of each alert.
    pub failed_severity: String,
    pub running_too_long_severity: String,
    pub not_succeeded_severity: String,
    /// "Data too old": a target database whose production data (the
    /// restored backup's time, or the copy's) is older than this.
    pub data_max_age: Duration,
    pub data_too_old_severity: String,
}

/// Rule group name in the rendered file.
pub const RULE_GROUP: &str = "envsync-db-backup";
pub const ALERT_FAILED: &str = "DbBackupJobFailed";
pub const ALERT_RUNNING_TOO_LONG: &str = "DbBackupJobRunningTooLong";
pub const ALERT_NOT_SUCCEEDED: &str = "DbBackupJobNotSucceeded";
pub const ALERT_DATA_TOO_OLD: &str = "DbBackupTargetDataTooOld";

/// The labels identifying one job across its series.
const JOB_LABELS: &str = "database_engine, database_instance, database_db_name, operation";

impl Default for AlertSettings {
    /// The classes of the system this replaces (docs/metrics.md): runtime 45m
    /// (transforms), 1h, 4h, 13h; schedules daily (25h) and weekly (7.5 days).
    fn default() -> AlertSettings {
        let h = |n: u64| Duration::from_secs(n * 3600);
        AlertSettings {
            runtime_classes: vec![
                RuntimeClass {
                    name: "45m".into(),
                    max_runtime: Duration::from_secs(45 * 60),
                },
                RuntimeClass {
                    name: "1h".into(),
                    max_runtime: h(1),
                },
                RuntimeClass {
                    name: "4h".into(),
                    max_runtime: h(4),
                },
                RuntimeClass {
                    name: "13h".into(),
                    max_runtime: h(13),
                },
            ],
            schedule_classes: vec![
                ScheduleClass {
                    name: "daily".into(),
                    max_age: h(25),
                },
                ScheduleClass {
                    name: "weekly".into(),
                    max_age: h(180),
                },
            ],
            failed_severity: "critical".into(),
            running_too_long_severity: "warning".into(),
            not_succeeded_severity: "critical".into(),
            // As long as `status` waits before showing a run as stale.
            data_max_age: h(8 * 24),
            data_too_old_severity: "warning".into(),
        }
    }
}

impl AlertSettings {
    /// The runtime class a step gets when its config names none: `45m` for
    /// transforms, `4h` otherwise.
    pub fn default_runtime_class(operation: &str) -> &'static str {
        if operation == "transform" {
            "45m"
        } else {
            "4h"
        }
    }

    /// Class names are label values that go into rules: letters, digits and
    /// `_ . : -`, unique; thresholds above zero; severities non-empty.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (kind, name, limit) in self
            .runtime_classes
            .iter()
            .map(|c| ("runtime", &c.name, c.max_runtime))
            .chain(
                self.schedule_classes
                    .iter()
                    .map(|c| ("schedule", &c.name, c.max_age)),
            )
        {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
            {
                bail!(
                    "{kind} class {name:?}: use letters, digits and _ . : - only, e.g. \"4h\" or \"daily\""
                );
            }
            if !seen.insert((kind, name.as_str())) {
                bail!("{kind} class {name:?} is defined twice");
            }
            if limit < Duration::from_secs(1) {
                bail!("{kind} class {name:?}: the threshold must be at least one second");
            }
        }
        if self.data_max_age < Duration::from_secs(1) {
            bail!("data_max_age must be at least one second");
        }
        for (what, s) in [
            ("failed", &self.failed_severity),
            ("running too long", &self.running_too_long_severity),
            ("not succeeded", &self.not_succeeded_severity),
            ("data too old", &self.data_too_old_severity),
        ] {
            if s.trim().is_empty() {
                bail!("severity of the {what} alert is empty");
            }
        }
        Ok(())
    }
}

/// A Prometheus duration for messages: `45m`, `13h`, `25h`, `7d12h` (days
/// from two days on).
pub fn prom_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len && (unit != "d" || s >= 2 * 86400) {
            let _ = write!(out, "{}{unit}", s / len);
            s %= len;
        }
    }
    out
}

/// A string as a double-quoted YAML (and JSON) scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A string as a PromQL double-quoted string literal.
fn promql_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const WHAT: &str = "{{ $labels.operation }} of {{ $labels.database_engine }} database \
                    {{ $labels.database_db_name }} on {{ $labels.database_instance }}";

/// One rule; `class` becomes a rule label too, so that the rules of one
/// alert name differ in their labels (promtool's lint asks for that).
fn rule(
    out: &mut String,
    alert: &str,
    expr: &str,
    severity: &str,
    class: Option<(&str, &str)>,
    summary: &str,
    description: &str,
) {
    let _ = writeln!(out, "      - alert: {alert}");
    let _ = writeln!(out, "        expr: |-");
    for line in expr.lines() {
        let _ = writeln!(out, "          {line}");
    }
    let _ = writeln!(out, "        labels:");
    let _ = writeln!(out, "          severity: {}", yaml_str(severity));
    if let Some((name, value)) = class {
        let _ = writeln!(out, "          {name}: {}", yaml_str(value));
    }
    let _ = writeln!(out, "        annotations:");
    let _ = writeln!(out, "          summary: {}", yaml_str(summary));
    let _ = writeln!(out, "          description: {}", yaml_str(description));
}

/// The rule file (YAML) for `settings`: one "failed" rule, one "running too
/// long" rule per runtime class and one "not succeeded within" rule per
/// schedule class.
pub fn alert_rules(settings: &AlertSettings) -> String {
    let mut out = String::new();
    out.push_str(
        "# Prometheus alert rules for envsync's job metrics (docs/metrics.md).\n\
         # Rendered by envsync_host::metrics::alert_rules; do not edit by hand.\n\
         # Load with `rule_files:` in prometheus.yml; test with\n\
         # `promtool test rules deploy/prometheus/tests/*.yml`.\n\
         groups:\n",
    );
    let _ = writeln!(out, "  - name: {RULE_GROUP}");
    out.push_str("    rules:\n");

    rule(
        &mut out,
        ALERT_FAILED,
        "db_backup_job_state == 0",
        &settings.failed_severity,
        None,
        &format!("{WHAT} failed"),
        "The last run ended in state failed (db_backup_job_state == 0). \
         It stays so until the next run starts; see the job's logs.",
    );

    for class in &settings.runtime_classes {
        let secs = class.max_runtime.as_secs();
        let limit = prom_duration(class.max_runtime);
        let expr = format!(
            "(\n  time() - db_backup_job_status_timestamp_seconds{{state=\"started\", runtime_class={}}} > {secs}\n)\n\
             and on ({JOB_LABELS})\n\
             (db_backup_job_state == 1)",
            promql_str(&class.name)
        );
        rule(
            &mut out,
            ALERT_RUNNING_TOO_LONG,
            &expr,
            &settings.running_too_long_severity,
            Some((LABEL_RUNTIME_CLASS, &class.name)),
            &format!("{WHAT} has been running for more than {limit}"),
            &format!(
                "Started {{{{ $value | humanizeDuration }}}} ago and not finished; runtime class {} allows {limit}. \
                 A run killed without reporting stays in state started.",
                class.name
            ),
        );
    }

    for class in &settings.schedule_classes {
        let secs = class.max_age.as_secs();
        let limit = prom_duration(class.max_age);
        let name = promql_str(&class.name);
        let expr = format!(
            "(\n  time() - db_backup_job_status_timestamp_seconds{{state=\"succeeded\", schedule_class={name}}} > {secs}\n)\n\
             or\n\
             (\n  time() - db_backup_job_status_timestamp_seconds{{state=\"started\", schedule_class={name}}} > {secs}\n  \
             unless on ({JOB_LABELS})\n  \
             db_backup_job_status_timestamp_seconds{{state=\"succeeded\"}}\n)"
        );
        rule(
            &mut out,
            ALERT_NOT_SUCCEEDED,
            &expr,
            &settings.not_succeeded_severity,
            Some((LABEL_SCHEDULE_CLASS, &class.name)),
            &format!("{WHAT} has not succeeded for more than {limit}"),
            &format!(
                "The last success (or, if none, the last start) was {{{{ $value | humanizeDuration }}}} ago; \
                 schedule class {} expects one within {limit}.",
                class.name
            ),
        );
    }

    // One alert per target database: the newest data any of its restore
    // or copy groups put there counts.
    let limit = prom_duration(settings.data_max_age);
    rule(
        &mut out,
        ALERT_DATA_TOO_OLD,
        &format!(
            "time() - max by (database_engine, database_instance, database_db_name) (\n  \
             db_backup_job_data_timestamp_seconds\n) > {}",
            settings.data_max_age.as_secs()
        ),
        &settings.data_too_old_severity,
        None,
        &format!(
            "{{{{ $labels.database_engine }}}} database {{{{ $labels.database_db_name }}}} on \
             {{{{ $labels.database_instance }}}} holds production data older than {limit}"
        ),
        &format!(
            "Its newest restore or copy brought data from {{{{ $value | humanizeDuration }}}} ago; \
             data_max_age allows {limit}. Check the restore task and the backups it reads."
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn metrics_committed_rules_are_the_rendered_default() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/envsync-alerts.yml");
        let rendered = alert_rules(&AlertSettings::default());
        if std::env::var_os("ENVSYNC_UPDATE_RULES").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == rendered,
            "{} differs from alert_rules(&AlertSettings::default()); regenerate with \
             ENVSYNC_UPDATE_RULES=1 cargo test -p envsync-host metrics_committed_rules",
            path.display()
        );
    }

    #[test]
    fn metrics_rules_follow_the_settings() {
        let mut s = AlertSettings {
            runtime_classes: vec![RuntimeClass {
                name: "2h30m".into(),
                max_runtime: Duration::from_secs(9000),
            }],
            ..AlertSettings::default()
        };
        s.schedule_classes.truncate(1);
        s.schedule_classes[0].max_age = Duration::from_secs(26 * 3600);
        s.validate().unwrap();
        let text = alert_rules(&s);
        assert_eq!(text.matches("- alert: ").count(), 4);
        assert!(text.contains(
            "time() - db_backup_job_status_timestamp_seconds{state=\"started\", runtime_class=\"2h30m\"} > 9000"
        ));
        assert!(text.contains("schedule_class=\"daily\"} > 93600"));
        assert!(text.contains("more than 26h\""));
        assert!(!text.contains("weekly"));
    }

    #[test]
    fn metrics_settings_are_checked() {
        AlertSettings::default().validate().unwrap();
        let mut s = AlertSettings::default();
        s.runtime_classes[0].name = "4 h".into();
        assert!(s.validate().is_err());
        let mut s = AlertSettings::default();
        s.runtime_classes[1].name = "45m".into();
        assert!(s.validate().unwrap_err().to_string().contains("twice"));
        let mut s = AlertSettings::default();
        s.schedule_classes[0].max_age = Duration::ZERO;
        assert!(s.validate().is_err());
        let s = AlertSettings {
            failed_severity: " ".into(),
            ..AlertSettings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn metrics_durations_for_messages() {
        assert_eq!(prom_duration(Duration::from_secs(45 * 60)), "45m");
        assert_eq!(prom_duration(Duration::from_secs(13 * 3600)), "13h");
        assert_eq!(prom_duration(Duration::from_secs(25 * 3600)), "25h");
        assert_eq!(prom_duration(Duration::from_secs(48 * 3600)), "2d");
        assert_eq!(prom_duration(Duration::from_secs(180 * 3600)), "7d12h");
        assert_eq!(prom_duration(Duration::from_secs(61)), "1m1s");
    }

    #[test]
    fn metrics_default_runtime_classes() {
        assert_eq!(AlertSettings::default_runtime_class("transform"), "45m");
        assert_eq!(AlertSettings::default_runtime_class("backup"), "4h");
    }
}
