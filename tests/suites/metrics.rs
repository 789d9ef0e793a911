//! Metrics end to end: `envsync_host::metrics::Pusher` pushing to a real
//! `prometheus-pushgateway` started by the harness, read back from the
//! gateway's own `/metrics`; and `promtool test rules` on the alert rules in
//! `deploy/prometheus/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envsync_host::metrics::{
    AlertSettings, Group, GroupingKey, Outcome, Pusher, RuntimeClass, alert_rules,
};
use envsync_tests::paths::workspace_root;
use envsync_tests::process;
use envsync_tests::pushgateway::{Pushgateway, Sample, promtool_program};

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A group whose instance has a `/` and whose database name has spaces and
/// a quote: both must travel base64-encoded in the URL and come back as is.
fn odd_group() -> Group {
    Group::new(GroupingKey::new(
        "postgres",
        "db/1.example.org",
        "my \"orders\" db",
        "backup",
    ))
    .with_runtime_class("4h")
    .with_schedule_class("daily")
}

/// The labels the Pushgateway puts on every series of `group` (plus the
/// series' own), as in its `/metrics`.
fn labels<'a>(group: &'a Group, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![
        ("job", "db-backup"),
        ("database_engine", group.key.engine.as_str()),
        ("database_instance", group.key.instance.as_str()),
        ("database_db_name", group.key.db_name.as_str()),
        ("operation", group.key.operation.as_str()),
        ("instance", ""),
    ];
    if let Some(c) = &group.runtime_class {
        l.push(("runtime_class", c));
    }
    if let Some(c) = &group.schedule_class {
        l.push(("schedule_class", c));
    }
    l.extend_from_slice(extra);
    l
}

/// The `db_backup_*` samples of `group` in the gateway, sorted for comparing.
fn group_samples(gw: &Pushgateway, group: &Group) -> Vec<Sample> {
    let mut s: Vec<Sample> = gw
        .samples("db_backup_")
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.labels.get("database_db_name") == Some(&group.key.db_name)
                && s.labels.get("database_instance") == Some(&group.key.instance)
                && s.labels.get("operation") == Some(&group.key.operation)
        })
        .collect();
    sort(&mut s);
    s
}

fn sort(s: &mut [Sample]) {
    s.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
}

fn expected(mut s: Vec<Sample>) -> Vec<Sample> {
    sort(&mut s);
    s
}

fn pusher(gw: &Pushgateway) -> Pusher {
    Pusher::new(&gw.url(), Duration::from_secs(5)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn started_succeeded_then_failed_keeps_the_last_success() {
    let gw = Pushgateway::start().unwrap();
    let g = odd_group();
    let p = pusher(&gw);

    p.push_started(&g, at(T0)).await.unwrap();
    assert_eq!(
        group_samples(&gw, &g),
        expected(vec![
            Sample::new("db_backup_job_state", &labels(&g, &[]), 1.0),
            Sample::new(
                "db_backup_job_status_timestamp_seconds",
                &labels(&g, &[("state", "started")]),
                T0 as f64
            ),
        ]),
        "after the start"
    );

    let ok = Outcome::Succeeded {
        duration: Duration::from_millis(60_500),
        size: Some(4096),
    };
    p.push_finished(&g, &ok, at(T0 + 61)).await.unwrap();
    let after_success = expected(vec![
        Sample::new("db_backup_job_state", &labels(&g, &[]), 2.0),
        Sample::new(
            "db_backup_job_status_timestamp_seconds",
            &labels(&g, &[("state", "started")]),
            T0 as f64,
        ),
        Sample::new(
            "db_backup_job_status_timestamp_seconds",
            &labels(&g, &[("state", "succeeded")]),
            (T0 + 61) as f64,
        ),
        Sample::new(
            "db_backup_job_duration_seconds",
            &labels(&g, &[("state", "succeeded")]),
            60.5,
        ),
        Sample::new("db_backup_job_file_size_bytes", &labels(&g, &[]), 4096.0),
    ]);
    assert_eq!(group_samples(&gw, &g), after_success, "after the success");

    // The next run starts and fails: the last success's timestamp, duration
    // and size stay beside the failure.
    p.push_started(&g, at(T0 + 86_400)).await.unwrap();
    let failed = Outcome::Failed {
        duration: Duration::from_secs(10),
    };
    p.push_finished(&g, &failed, at(T0 + 86_410)).await.unwrap();
    let after_failure = expected(vec![
        Sample::new("db_backup_job_state", &labels(&g, &[]), 0.0),
        Sample::new(
            "db_backup_job_status_timestamp_seconds",
            &labels(&g, &[("state", "started")]),
            (T0 + 86_400) as f64,
        ),
        Sample::new(
            "db_backup_job_status_timestamp_seconds",
            &labels(&g, &[("state", "succeeded")]),
            (T0 + 61) as f64,
        ),
        Sample::new(
            "db_backup_job_status_timestamp_seconds",
            &labels(&g, &[("state", "failed")]),
            (T0 + 86_410) as f64,
        ),
        Sample::new(
            "db_backup_job_duration_seconds",
            &labels(&g, &[("state", "succeeded")]),
            60.5,
        ),
        Sample::new(
            "db_backup_job_duration_seconds",
            &labels(&g, &[("state", "failed")]),
            10.0,
        ),
        Sample::new("db_backup_job_file_size_bytes", &labels(&g, &[]), 4096.0),
    ]);
    assert_eq!(group_samples(&gw, &g), after_failure, "after the failure");

    // The gateway's series equal what the pusher's registry renders (the
    // daemon's /metrics), apart from the gateway's `instance=""`.
    let registry_text = p.registry().lock().unwrap().render();
    let mut from_registry = envsync_tests::pushgateway::parse_exposition(&registry_text).unwrap();
    for s in &mut from_registry {
        s.labels.insert("instance".into(), String::new());
    }
    sort(&mut from_registry);
    assert_eq!(from_registry, after_failure);
}

/// A new process (a fresh pusher, e.g. the next `envsync-host run`) reads the
/// group's earlier series back before its first push, so a failure does not
/// wipe the success another process pushed.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_process_keeps_the_series_of_earlier_ones() {
    let gw = Pushgateway::start().unwrap();
    let g =
        Group::new(GroupingKey::new("mysql", "db2", "shop", "restore")).with_runtime_class("1h");

    let first = pusher(&gw);
    first.push_started(&g, at(T0)).await.unwrap();
    first
        .push_finished(
            &g,
            &Outcome::Succeeded {
                duration: Duration::from_secs(30),
                size: None,
            },
            at(T0 + 30),
        )
        .await
        .unwrap();
    drop(first);

    let second = pusher(&gw);
    second
        .push_finished(
            &g,
            &Outcome::Failed {
                duration: Duration::from_secs(5),
            },
            at(T0 + 1000),
        )
        .await
        .unwrap();
    assert_eq!(
        group_samples(&gw, &g),
        expected(vec![
            Sample::new("db_backup_job_state", &labels(&g, &[]), 0.0),
            Sample::new(
                "db_backup_job_status_timestamp_seconds",
                &labels(&g, &[("state", "started")]),
                T0 as f64
            ),
            Sample::new(
                "db_backup_job_status_timestamp_seconds",
                &labels(&g, &[("state", "succeeded")]),
                (T0 + 30) as f64
            ),
            Sample::new(
                "db_backup_job_status_timestamp_seconds",
                &labels(&g, &[("state", "failed")]),
                (T0 + 1000) as f64
            ),
            Sample::new(
                "db_backup_job_duration_seconds",
                &labels(&g, &[("state", "succeeded")]),
                30.0
            ),
            Sample::new(
                "db_backup_job_duration_seconds",
                &labels(&g, &[("state", "failed")]),
                5.0
            ),
        ])
    );
}

/// Groups differing in one grouping label (or only in how the label would
/// be written in a URL) stay apart; a group's classes changing takes effect
/// on every series at the next push.
#[tokio::test(flavor = "multi_thread")]
async fn groups_stay_apart_and_classes_follow_the_config() {
    let gw = Pushgateway::start().unwrap();
    let p = pusher(&gw);
    let a = Group::new(GroupingKey::new("postgres", "h", "a/b", "backup"));
    let b = Group::new(GroupingKey::new("postgres", "h", "a b", "backup"));
    let c =
        Group::new(GroupingKey::new("postgres", "h", "a/b", "transform")).with_runtime_class("45m");
    for g in [&a, &b, &c] {
        p.push_started(g, at(T0)).await.unwrap();
    }
    let all = gw.samples("db_backup_job_state").unwrap();
    let keys: BTreeSet<(String, String, Option<String>)> = all
        .iter()
        .map(|s| {
            (
                s.labels["database_db_name"].clone(),
                s.labels["operation"].clone(),
                s.labels.get("runtime_class").cloned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            ("a b".to_string(), "backup".to_string(), None),
            ("a/b".to_string(), "backup".to_string(), None),
            (
                "a/b".to_string(),
                "transform".to_string(),
                Some("45m".to_string())
            ),
        ])
    );

    let a13 = a
        .clone()
        .with_runtime_class("13h")
        .with_schedule_class("weekly");
    p.push_finished(
        &a13,
        &Outcome::Succeeded {
            duration: Duration::from_secs(1),
            size: Some(1),
        },
        at(T0 + 1),
    )
    .await
    .unwrap();
    for s in group_samples(&gw, &a13) {
        assert_eq!(
            (
                s.labels.get("runtime_class"),
                s.labels.get("schedule_class")
            ),
            (Some(&"13h".to_string()), Some(&"weekly".to_string())),
            "{s:?}"
        );
    }
}

/// A Pushgateway that is gone: the push reports an error quickly, the
/// non-failing form only logs.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_gateway_never_fails_the_step() {
    let mut gw = Pushgateway::start().unwrap();
    let p = pusher(&gw);
    let g = odd_group();
    p.push_started(&g, at(T0)).await.unwrap();
    gw.kill();
    let start = std::time::Instant::now();
    assert!(p.push_started(&g, at(T0 + 5)).await.is_err());
    p.finished(
        &g,
        Outcome::Failed {
            duration: Duration::from_secs(1),
        },
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(10));
}

fn promtool() -> PathBuf {
    promtool_program().unwrap_or_else(|| {
        panic!(
            "promtool not found (PATH, /usr/bin, or ENVSYNC_PROMTOOL_BIN): run scripts/setup.sh \
             (`apt-get install prometheus`)"
        )
    })
}

#[test]
fn promtool_tests_of_the_alert_rules_pass() {
    let root = workspace_root();
    let tests_dir = root.join("deploy/prometheus/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "promtool tests in {}",
        tests_dir.display()
    );
    let mut cmd = Command::new(promtool());
    cmd.arg("test").arg("rules").args(&files).current_dir(&root);
    let out = process::run(cmd, None, Duration::from_secs(120)).unwrap();
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.matches("SUCCESS").count(), files.len(), "{out}");
}

#[test]
fn rendered_rules_pass_promtool_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut custom = AlertSettings::default();
    custom.runtime_classes.push(RuntimeClass {
        name: "2h30m".into(),
        max_runtime: Duration::from_secs(9000),
    });
    custom.schedule_classes[0].max_age = Duration::from_secs(26 * 3600);
    custom.validate().unwrap();
    let custom_file = dir.path().join("custom.yml");
    std::fs::write(&custom_file, alert_rules(&custom)).unwrap();
    let committed = workspace_root().join("deploy/prometheus/envsync-alerts.yml");
    for file in [committed, custom_file] {
        let mut cmd = Command::new(promtool());
        cmd.arg("check").arg("rules").arg(&file);
        let out = process::run(cmd, None, Duration::from_secs(60)).unwrap();
        assert!(out.success(), "{out}");
    }
}

/// The promtool tests notice a changed threshold: run against rules whose
/// 1h class allows 2h, they fail on that class.
#[test]
fn promtool_tests_fail_on_a_changed_threshold() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = AlertSettings::default();
    for class in &mut settings.runtime_classes {
        if class.name == "1h" {
            class.max_runtime = Duration::from_secs(7200);
        }
    }
    std::fs::write(
        dir.path().join("envsync-alerts.yml"),
        alert_rules(&settings),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    let test = dir.path().join("tests/running-too-long.yml");
    std::fs::copy(
        root.join("deploy/prometheus/tests/running-too-long.yml"),
        &test,
    )
    .unwrap();
    let mut cmd = Command::new(promtool());
    cmd.arg("test").arg("rules").arg(&test);
    let out = process::run(cmd, None, Duration::from_secs(120)).unwrap();
    assert!(!out.success(), "{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("alertname: DbBackupJobRunningTooLong, time: 1h1m"),
        "{out}"
    );
}
