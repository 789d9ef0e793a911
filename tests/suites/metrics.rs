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

/// A long restore reports its progress while it runs, and a real
/// Prometheus scraping the Pushgateway fires the alerts on it.
///
/// The restore is long because its store is reached through a proxy that
/// lets the artifact trickle (`FaultyProxy::throttle`), not because anything
/// in the product waits. The config pushes progress every second and makes
/// the thresholds small (`[alerts]`): a 3 s runtime class, and production
/// data older than 2 s counts as too old — so both alerts must fire within
/// seconds, through Prometheus' own rule evaluation (`/api/v1/alerts`).
#[test]
fn a_long_restore_pushes_progress_and_prometheus_fires_its_alerts() {
    use envsync_tests::faulty_proxy::FaultyProxy;
    use envsync_tests::host_cli::{Expect, Host};
    use envsync_tests::postgres::PgCluster;
    use envsync_tests::prometheus::Prometheus;
    use envsync_tests::s3::S3Server;
    use std::time::Instant;

    const SOURCE: &str = "orders";
    const TARGET: &str = "orders_staging";
    /// Artifact bytes per second through the proxy: the restore takes ~10 s or more.
    const RATE: u64 = 96 * 1024;

    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database(SOURCE).unwrap();
    // md5 text barely compresses: the artifact stays big enough to take a while.
    pg.psql(
        SOURCE,
        "CREATE TABLE orders (id integer PRIMARY KEY, a text, b text);\n\
         INSERT INTO orders SELECT i, md5(i::text), md5((i * 7)::text) \
         FROM generate_series(1, 40000) AS i;",
    )
    .unwrap();
    let s3 = S3Server::start().expect("start an S3 server");
    s3.create_bucket("prod").unwrap();
    s3.create_bucket("staging").unwrap();
    // Chunked (`--jobs 2`): the progress counts the chunks' bytes too.
    s3.run(
        &host,
        &pg.step("backup", SOURCE)
            .opt("--store", "s3://prod/db")
            .opt("--jobs", "2")
            .param("chunk-mib", 1),
    )
    .expect_ok("production backup");
    let proxy = FaultyProxy::start(s3.port()).unwrap();
    proxy.throttle(RATE);
    let gw = Pushgateway::start().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("staging.toml");
    std::fs::write(
        &config,
        slow_restore_config(
            SlowRestore {
                gw: &gw,
                proxy: &proxy,
                s3: &s3,
                plugin: "postgres",
                db: (pg.host(), pg.port(), pg.user()),
                source: SOURCE,
                target: TARGET,
            },
            "[alerts]\nruntime_classes = { \"3s\" = \"3s\" }\ndata_max_age = \"2s\"\n",
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let rules = dir.path().join("rules.yml");
    host.run(&[
        "config",
        "alerts",
        &config_arg,
        "-o",
        &rules.display().to_string(),
    ])
    .expect_ok("render the alert rules from the config");
    let prometheus = Prometheus::start(gw.port(), &rules).expect("start Prometheus");

    let started = Instant::now();
    let mut run = run_refresh(&s3, &host, &config_arg);

    // While it runs: progress pushes (distinct measurement times with bytes
    // moving), the step in `status --running`, and the running-too-long alert.
    let value = |name: &str| restore_value(&gw, TARGET, name);
    let state_dir = dir.path().join("state").display().to_string();
    let mut pushes: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut items: Vec<(u64, u64)> = Vec::new();
    let mut seen_in_status = None;
    let mut running_too_long = None;
    while !run.has_exited().unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the restore did not end"
        );
        if value("db_backup_job_state") == Some(1.0)
            && let (Some(at), Some(bytes), Some(expected)) = (
                value("db_backup_job_progress_timestamp_seconds"),
                value("db_backup_job_progress_bytes"),
                value("db_backup_job_progress_expected_bytes"),
            )
            && bytes > 0.0
        {
            assert!(bytes <= expected, "{bytes} of {expected}");
            pushes.insert(((at * 1000.0) as u64, bytes as u64));
            if let Some(rows) = value("db_backup_job_progress_items").filter(|r| !r.is_nan()) {
                let at = (at * 1000.0) as u64;
                if items.last().is_none_or(|(last, _)| *last != at) {
                    items.push((at, rows as u64));
                }
            }
        }
        if seen_in_status.is_none() {
            let out = host.run(&["status", "--running", "--json", "--state-dir", &state_dir]);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout)
                && let Some(step) = v.as_array().and_then(|a| a.first())
                && step["progress"]["bytes"].as_u64().is_some_and(|b| b > 0)
            {
                seen_in_status = Some(step.clone());
            }
        }
        if running_too_long.is_none() {
            running_too_long = prometheus.alerts().unwrap().into_iter().find(|a| {
                a.name == "DbBackupJobRunningTooLong"
                    && a.state == "firing"
                    && a.label("database_db_name") == Some(TARGET)
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run.wait_timeout(Duration::from_secs(10));
    assert!(out.success(), "{out}");
    let took = started.elapsed();
    eprintln!(
        "restore took {took:?}; {} distinct progress pushes seen: {pushes:?}; rows: {items:?}",
        pushes.len()
    );

    assert!(
        pushes.len() >= 2,
        "fewer than two progress pushes seen during a {took:?} restore: {pushes:?}"
    );
    let bytes: BTreeSet<u64> = pushes.iter().map(|(_, b)| *b).collect();
    assert!(bytes.len() >= 2, "the bytes never moved: {pushes:?}");
    // Rows too (40,000 in all): counted while the chunks load, not only as
    // each one commits, so they grow though this artifact has two.
    assert_rows_grew(&items, 40_000);
    let step = seen_in_status.expect("`status --running` never showed the restore with bytes");
    assert_eq!(step["database"], TARGET, "{step}");
    assert_eq!(step["operation"], "restore", "{step}");
    assert_eq!(step["progress"]["expected_is_estimate"], false, "{step}");
    let alert =
        running_too_long.expect("DbBackupJobRunningTooLong did not fire during the restore");
    assert_eq!(alert.label("runtime_class"), Some("3s"));

    // After it: the progress ended at the artifact's size, and the data's
    // age is the backup's; Prometheus fires the data-age alert on it.
    assert_eq!(value("db_backup_job_state"), Some(2.0));
    // The whole artifact: its plan and every chunk.
    assert_eq!(
        value("db_backup_job_progress_bytes"),
        value("db_backup_job_file_size_bytes"),
        "the last progress is the whole artifact"
    );
    let chunks = s3
        .client()
        .list_objects("prod", "")
        .unwrap()
        .into_iter()
        .filter(|o| o.key.contains(".chunks/"))
        .count();
    assert!(
        chunks >= 3,
        "the backup was not chunked: {chunks} chunk objects"
    );
    let data_at = value("db_backup_job_data_timestamp_seconds").expect("no data timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        data_at < now - took.as_secs_f64() && data_at > now - 600.0,
        "the data timestamp {data_at} is not the backup's time (now {now})"
    );
    let old = prometheus
        .wait_for_firing(Duration::from_secs(30), |a| {
            a.name == "DbBackupTargetDataTooOld" && a.label("database_db_name") == Some(TARGET)
        })
        .unwrap();
    assert_eq!(old.label("database_engine"), Some("postgres"));
    assert!(
        host.run(&["status", "--running", "--json", "--state-dir", &state_dir])
            .stdout
            .trim()
            == "[]",
        "the finished step is still shown as running"
    );
}

/// The rows of the progress pushes seen while a restore ran (push time in
/// ms, rows) grew: at least two distinct counts above zero, never going
/// down, never above the `total` rows restored.
fn assert_rows_grew(items: &[(u64, u64)], total: u64) {
    let rows: Vec<u64> = items.iter().map(|(_, r)| *r).collect();
    assert!(
        rows.windows(2).all(|w| w[0] <= w[1]),
        "the rows went down: {items:?}"
    );
    let distinct: BTreeSet<u64> = rows.iter().copied().filter(|&r| r > 0).collect();
    assert!(
        distinct.len() >= 2,
        "fewer than two growing row counts pushed during the restore: {items:?}"
    );
    assert!(
        rows.iter().all(|&r| r <= total),
        "more rows than the {total} restored: {items:?}"
    );
}

/// Restores `database` (of `plugin`, on `host:port` as `user`) from the
/// backup at `s3://prod/db`, its store reached through a proxy that lets
/// the artifact trickle, with progress pushed every second; returns the
/// rows (`db_backup_job_progress_items`) of the pushes the Pushgateway
/// received while it ran, as (push time in ms, rows).
fn rows_pushed_during_a_slow_restore(
    s3: &envsync_tests::s3::S3Server,
    plugin: &str,
    (db_host, port, user): (&str, u16, &str),
    source: &str,
    target: &str,
) -> Vec<(u64, u64)> {
    use envsync_tests::faulty_proxy::FaultyProxy;
    use envsync_tests::host_cli::Host;
    use std::time::Instant;

    /// Artifact bytes per second through the proxy: the restore takes ~10 s or more.
    const RATE: u64 = 96 * 1024;

    let host = Host::built();
    let proxy = FaultyProxy::start(s3.port()).unwrap();
    proxy.throttle(RATE);
    let gw = Pushgateway::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("staging.toml");
    let slow = SlowRestore {
        gw: &gw,
        proxy: &proxy,
        s3,
        plugin,
        db: (db_host, port, user),
        source,
        target,
    };
    std::fs::write(&config, slow_restore_config(slow, "")).unwrap();
    let started = Instant::now();
    let mut run = run_refresh(s3, &host, &config.display().to_string());
    let value = |name: &str| restore_value(&gw, target, name);
    let mut items: Vec<(u64, u64)> = Vec::new();
    while !run.has_exited().unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the restore did not end"
        );
        if value("db_backup_job_state") == Some(1.0)
            && let (Some(at), Some(rows)) = (
                value("db_backup_job_progress_timestamp_seconds"),
                value("db_backup_job_progress_items"),
            )
            && !rows.is_nan()
        {
            let at = (at * 1000.0) as u64;
            if items.last().is_none_or(|(last, _)| *last != at) {
                items.push((at, rows as u64));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run.wait_timeout(Duration::from_secs(10));
    assert!(out.success(), "{out}");
    eprintln!(
        "{plugin} restore took {:?}; rows pushed while it ran: {items:?}",
        started.elapsed()
    );
    items
}

/// pg_restore gets the artifact host-side and says nothing until it ends;
/// the plugin asks the server between chunks of the artifact how many rows
/// are in (committed tables and running COPYs), so the pushes carry rows.
#[test]
fn a_slow_postgres_restore_pushes_growing_row_counts() {
    use envsync_tests::host_cli::{Expect, Host};
    use envsync_tests::postgres::PgCluster;
    use envsync_tests::s3::S3Server;

    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("orders").unwrap();
    // Two tables: the rows of the finished one count while the next loads.
    pg.psql(
        "orders",
        "CREATE TABLE a (id integer PRIMARY KEY, x text, y text);\n\
         INSERT INTO a SELECT i, md5(i::text), md5((i * 7)::text) FROM generate_series(1, 20000) AS i;\n\
         CREATE TABLE b (id integer PRIMARY KEY, x text, y text);\n\
         INSERT INTO b SELECT i, md5(i::text), md5((i * 3)::text) FROM generate_series(1, 20000) AS i;",
    )
    .unwrap();
    let s3 = S3Server::start().expect("start an S3 server");
    s3.create_bucket("prod").unwrap();
    s3.create_bucket("staging").unwrap();
    s3.run(
        &host,
        &pg.step("backup", "orders").opt("--store", "s3://prod/db"),
    )
    .expect_ok("production backup (one pg_dump stream)");
    let items = rows_pushed_during_a_slow_restore(
        &s3,
        "postgres",
        (pg.host(), pg.port(), pg.user()),
        "orders",
        "orders_staging",
    );
    assert_rows_grew(&items, 40_000);
    assert_eq!(
        pg.psql(
            "orders_staging",
            "SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)"
        )
        .unwrap(),
        "40000"
    );
}

/// The MariaDB dump passes through the plugin, which counts the tuples of
/// its INSERTs on their way to the client, so the pushes carry rows.
#[test]
fn a_slow_mariadb_restore_pushes_growing_row_counts() {
    use envsync_tests::host_cli::{Expect, Host};
    use envsync_tests::mariadb::MariaDb;
    use envsync_tests::s3::S3Server;

    let host = Host::built();
    let db = MariaDb::start().expect("start a throwaway MariaDB server");
    db.create_database("shop").unwrap();
    db.sql(
        Some("shop"),
        "CREATE TABLE orders (id int PRIMARY KEY, a text, b text);\n\
         INSERT INTO orders SELECT seq, md5(seq), md5(seq * 7) FROM seq_1_to_40000;",
    )
    .unwrap();
    let s3 = S3Server::start().expect("start an S3 server");
    s3.create_bucket("prod").unwrap();
    s3.create_bucket("staging").unwrap();
    s3.run(
        &host,
        &db.step("backup", "shop").opt("--store", "s3://prod/db"),
    )
    .expect_ok("production backup");
    let items = rows_pushed_during_a_slow_restore(
        &s3,
        "mysql",
        (db.host(), db.port(), db.user()),
        "shop",
        "shop_staging",
    );
    assert_rows_grew(&items, 40_000);
    assert_eq!(
        db.sql(Some("shop_staging"), "SELECT COUNT(*) FROM orders")
            .unwrap()
            .trim(),
        "40000"
    );
}

/// What the slow-restore tests' staging config restores, and through what.
struct SlowRestore<'a> {
    gw: &'a Pushgateway,
    proxy: &'a envsync_tests::faulty_proxy::FaultyProxy,
    s3: &'a envsync_tests::s3::S3Server,
    plugin: &'a str,
    /// Host, port and user of the database server.
    db: (&'a str, u16, &'a str),
    source: &'a str,
    target: &'a str,
}

/// A staging config with one task `refresh`: a restore of `source` from
/// production's store, reached through the proxy, into `target`, pushing
/// progress every second; `extra` is TOML added after the environment.
fn slow_restore_config(r: SlowRestore, extra: &str) -> String {
    let (db_host, port, user) = r.db;
    format!(
        r#"
[environment]
name = "staging"
store = "s3://staging/db"
upper_store = "s3://prod/db"
pushgateway = "{gw}"
progress_interval = "1s"
state_dir = "state"

[environment.s3]
endpoint = "{endpoint}"
region = "{region}"
path_style = true

{extra}
[[task]]
name = "refresh"
plugin = "{plugin}"
database = {{ host = "{db_host}", port = {port}, user = "{user}", name = "{target}" }}

[[task.step]]
op = "restore"
from_instance = "{db_host}"
from_database = "{source}"
"#,
        gw = r.gw.url(),
        endpoint = r.proxy.endpoint(),
        region = r.s3.region(),
        plugin = r.plugin,
        target = r.target,
        source = r.source,
    )
}

/// Starts `run --config <config> --task refresh` with the S3 server's keys.
fn run_refresh(
    s3: &envsync_tests::s3::S3Server,
    host: &envsync_tests::host_cli::Host,
    config: &str,
) -> process::Running {
    let credentials = [
        ("AWS_ACCESS_KEY_ID".to_string(), s3.access_key().to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            s3.secret_key().to_string(),
        ),
    ];
    let cmd = s3.host_command_with_env(
        host,
        &["run", "--config", config, "--task", "refresh"],
        &credentials,
    );
    process::Running::spawn(cmd, None).unwrap()
}

/// The value of metric `name` the Pushgateway holds for the restore into
/// `target`.
fn restore_value(gw: &Pushgateway, target: &str, name: &str) -> Option<f64> {
    gw.samples(name)
        .unwrap_or_default()
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.get("database_db_name").map(String::as_str) == Some(target)
                && s.labels.get("operation").map(String::as_str) == Some("restore")
        })
        .map(|s| s.value)
}
