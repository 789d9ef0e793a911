//! Running tasks unattended: the per-task lock across processes, the busy
//! marker, per-step deadlines, SIGTERM, the `daemon`'s cron schedules and
//! `/metrics`, and the status page (rendered in headless Chromium) — against
//! a throwaway PostgreSQL, folder stores and a real Pushgateway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envsync_tests::host_cli::{Expect, Host, exit};
use envsync_tests::http;
use envsync_tests::paths::workspace_root;
use envsync_tests::ports::free_port;
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::Running;
use envsync_tests::procs::{self, Frozen};
use envsync_tests::pushgateway::{Pushgateway, Sample};
use envsync_tests::store::LocalStore;
use serde_json::Value;

/// Backups are filed under the database host.
const INSTANCE: &str = "127.0.0.1";

struct Env {
    host: Host,
    pg: PgCluster,
    store: LocalStore,
    dir: tempfile::TempDir,
}

fn setup() -> Env {
    procs::become_subreaper();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("small").unwrap();
    pg.psql(
        "small",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;",
    )
    .unwrap();
    Env {
        host: Host::built(),
        pg,
        store: LocalStore::new().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    /// A database big enough that its `pg_dump` can be caught running.
    fn create_big(&self, name: &str) {
        self.pg.create_database(name).unwrap();
        self.pg
            .psql(
                name,
                "CREATE TABLE big (id integer NOT NULL, a text NOT NULL);\n\
                 INSERT INTO big SELECT i, md5(i::text) || md5((i * 31)::text) FROM generate_series(1, 200000) AS i;",
            )
            .unwrap();
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("run/envsync-busy")
    }

    /// Writes `env.toml`: environment `staging` with the own store, the
    /// state folder and the marker in the temp folder, `extra` lines in
    /// `[environment]`, and `tasks` (TOML) appended.
    fn config(&self, extra: &str, tasks: &str) -> PathBuf {
        let text = format!(
            "[environment]\nname = \"staging\"\nstore = \"{store}\"\nstate_dir = \"{state}\"\nmarker_file = \"{marker}\"\n{extra}\n{tasks}",
            store = self.store.path_arg(),
            state = self.state_dir().display(),
            marker = self.marker().display(),
        );
        let path = self.dir.path().join("env.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A backup task of `db` (TOML).
    fn backup_task(
        &self,
        name: &str,
        db: &str,
        schedule: Option<&str>,
        step_extra: &str,
    ) -> String {
        format!(
            "[[task]]\nname = \"{name}\"\nplugin = \"postgres\"\n{schedule}\n\
             [task.database]\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\nname = \"{db}\"\n\
             [[task.step]]\nop = \"backup\"\n{step_extra}\n",
            schedule = schedule
                .map(|s| format!("schedule = \"{s}\""))
                .unwrap_or_default(),
            host = self.pg.host(),
            port = self.pg.port(),
            user = self.pg.user(),
        )
    }

    fn history(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state_dir().join("history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn run_task(&self, config: &Path, task: &str) -> Running {
        let config = config.display().to_string();
        self.host
            .spawn(&["run", "--config", &config, "--task", task])
            .unwrap()
    }
}

/// Waits for the `pg_dump` under `host_pid` and freezes it.
fn freeze_pg_dump(running: &mut Running) -> Frozen {
    let host_pid = running.pid() as i32;
    let dump = procs::wait_for_descendant(host_pid, "pg_dump", Duration::from_secs(300), || {
        running.has_exited().unwrap_or(true)
    });
    let Some(dump) = dump else {
        let out = running.wait_timeout(Duration::from_secs(10));
        panic!("the task never started pg_dump\n{out}");
    };
    Frozen::freeze(dump, "pg_dump")
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_run_of_a_running_task_is_refused_and_sigterm_stops_the_first_cleanly() {
    let env = setup();
    env.create_big("big_lock");
    let config = env.config("", &env.backup_task("nightly", "big_lock", None, ""));

    let mut first = env.run_task(&config, "nightly");
    let dump = freeze_pg_dump(&mut first);
    // While the task runs, the busy marker names it.
    let marker = std::fs::read_to_string(env.marker()).expect("the busy marker exists");
    assert!(marker.contains("task=nightly"), "{marker}");

    let second = env.host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        "nightly",
    ]);
    second.expect_fail(
        &[exit::BUSY],
        &["already running", &format!("pid {}", first.pid())],
        "a second run of the same task",
    );

    // SIGTERM: the step is stopped, pg_dump killed, nothing published.
    first.signal(libc::SIGTERM);
    let out = first.wait_timeout(Duration::from_secs(60));
    out.expect_fail(
        &[exit::STOPPED],
        &["asked to stop"],
        "the run stopped by SIGTERM",
    );
    assert!(!procs::is_alive(dump.pid()), "pg_dump survived the stop");
    assert_eq!(
        env.store.pointer(INSTANCE, "big_lock"),
        None,
        "the pointer moved"
    );
    assert!(
        env.store.visible_files().is_empty(),
        "a stopped backup left files: {:#?}",
        env.store.visible_files()
    );
    let history = env.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["state"], "failed");
    assert!(!env.marker().exists(), "the busy marker outlived the run");

    // The lock went with the process: the task runs again.
    let again = env.host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        "nightly",
    ]);
    again.expect_ok("the task after the stopped run");
    assert!(env.store.pointer(INSTANCE, "big_lock").is_some());
}

#[test]
fn a_step_past_its_deadline_is_stopped_with_its_programs() {
    let env = setup();
    env.create_big("big_deadline");
    let config = env.config(
        "",
        &env.backup_task("slow", "big_deadline", None, "max_runtime = \"4s\""),
    );
    let mut run = env.run_task(&config, "slow");
    let dump = freeze_pg_dump(&mut run);
    let out = run.wait_timeout(Duration::from_secs(60));
    out.expect_fail(
        &[exit::SANDBOX],
        &["exceeded the step's maximum runtime of 4s"],
        "a backup past its deadline",
    );
    assert!(
        !procs::is_alive(dump.pid()),
        "pg_dump outlived the deadline"
    );
    assert_eq!(env.store.pointer(INSTANCE, "big_deadline"), None);
    let status = env.host.run(&[
        "status",
        "--json",
        "--state-dir",
        &env.state_dir().display().to_string(),
    ]);
    status.expect_ok("status --json");
    let rows: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["database"], "big_deadline");
    assert_eq!(rows[0]["state"], "failed");
}

/// The daemon's child, killed if the test fails before stopping it.
struct Daemon(Option<Running>);

impl Daemon {
    fn running(&mut self) -> &mut Running {
        self.0.as_mut().unwrap()
    }

    fn stop(mut self) -> envsync_tests::process::Output {
        let mut running = self.0.take().unwrap();
        running.signal(libc::SIGTERM);
        running.wait_timeout(Duration::from_secs(60))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut r) = self.0.take() {
            r.signal(libc::SIGKILL);
            let _ = r.wait_timeout(Duration::from_secs(10));
        }
    }
}

fn start_daemon(env: &Env, config: &Path, port: u16) -> Daemon {
    let running = env
        .host
        .spawn(&[
            "daemon",
            "--config",
            &config.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .unwrap();
    let daemon = Daemon(Some(running));
    http::wait_for(port, "/healthz", Duration::from_secs(60)).expect("the daemon listens");
    daemon
}

#[test]
fn the_daemon_runs_tasks_on_their_schedules_and_serves_metrics() {
    let env = setup();
    env.pg.create_database("paused_db").unwrap();
    let gw = Pushgateway::start().unwrap();
    // A suspended task (the flag goes in the task table, before its steps).
    let paused = env
        .backup_task("paused", "paused_db", Some("* * * * * *"), "")
        .replace(
            "plugin = \"postgres\"",
            "plugin = \"postgres\"\nsuspend = true",
        );
    let tasks = format!(
        "{}\n{paused}",
        env.backup_task("every2s", "small", Some("*/2 * * * * *"), ""),
    );
    let config = env.config(
        &format!(
            "pushgateway = \"{}\"\ntimezone = \"Europe/London\"",
            gw.url()
        ),
        &tasks,
    );
    let port = free_port().unwrap();
    let mut daemon = start_daemon(&env, &config, port);

    wait_until("two scheduled runs", Duration::from_secs(90), || {
        env.history()
            .iter()
            .filter(|r| r["database"] == "small" && r["state"] == "succeeded")
            .count()
            >= 2
    });
    assert!(!daemon.running().has_exited().unwrap(), "the daemon exited");
    assert!(env.store.pointer(INSTANCE, "small").is_some());
    assert!(
        env.history().iter().all(|r| r["database"] != "paused_db"),
        "a suspended task ran"
    );

    // /metrics: the job series of the runs, with the grouping labels.
    let (status, metrics) = http::get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let state_line = metrics
        .lines()
        .find(|l| l.starts_with("db_backup_job_state{") && l.contains("database_db_name=\"small\""))
        .unwrap_or_else(|| panic!("no job state for small in /metrics:\n{metrics}"));
    assert!(state_line.contains("operation=\"backup\""), "{state_line}");
    assert!(
        state_line.contains("database_engine=\"postgres\""),
        "{state_line}"
    );
    assert!(
        metrics.contains("db_backup_job_file_size_bytes{"),
        "{metrics}"
    );
    // The same runs reached the Pushgateway.
    let pushed = gw.samples("db_backup_job_state").unwrap();
    assert!(
        pushed
            .iter()
            .any(|s| label(s, "database_db_name") == Some("small")),
        "{pushed:#?}"
    );
    let (status, page) = http::get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("data-database=\"small\""), "{page}");

    let out = daemon.stop();
    out.expect_ok("the daemon stopped by SIGTERM between runs");
    assert!(out.stderr.contains("next run"), "{out}");
    assert!(out.stderr.contains("task paused: suspended"), "{out}");
}

#[test]
fn sigterm_during_a_scheduled_backup_fails_the_step_and_leaves_the_pointer() {
    let env = setup();
    env.create_big("big_daemon");
    let gw = Pushgateway::start().unwrap();
    let config = env.config(
        &format!("pushgateway = \"{}\"", gw.url()),
        &env.backup_task("nightly", "big_daemon", Some("*/2 * * * * *"), ""),
    );
    let port = free_port().unwrap();
    let mut daemon = start_daemon(&env, &config, port);
    let dump = freeze_pg_dump(daemon.running());
    assert!(env.marker().exists(), "no busy marker while the task runs");
    // Pushed on start: state "started".
    wait_until(
        "the started state at the gateway",
        Duration::from_secs(30),
        || {
            gw.samples("db_backup_job_state")
                .unwrap()
                .iter()
                .any(|s| label(s, "database_db_name") == Some("big_daemon") && s.value == 1.0)
        },
    );

    let out = daemon.stop();
    out.expect_fail(
        &[exit::STOPPED],
        &["stopped part-way", "nightly"],
        "the daemon stopped during a backup",
    );
    assert!(!procs::is_alive(dump.pid()), "pg_dump survived the stop");
    assert_eq!(env.store.pointer(INSTANCE, "big_daemon"), None);
    assert!(
        env.store.visible_files().is_empty(),
        "{:#?}",
        env.store.visible_files()
    );
    assert!(
        !env.marker().exists(),
        "the busy marker outlived the daemon"
    );
    let history = env.history();
    assert_eq!(history.last().unwrap()["state"], "failed", "{history:#?}");
    // The failure reached the Pushgateway: state 0 (failed).
    let state = gw
        .samples("db_backup_job_state")
        .unwrap()
        .into_iter()
        .find(|s| label(s, "database_db_name") == Some("big_daemon"))
        .expect("a pushed state");
    assert_eq!(state.value, 0.0, "{state:?}");
}

fn label<'s>(sample: &'s Sample, name: &str) -> Option<&'s str> {
    sample.labels.get(name).map(String::as_str)
}

/// Debian's Chromium, installed by scripts/setup.sh.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed: run scripts/setup.sh (apt-get install chromium)")
}

fn headless(args: &[&str]) -> envsync_tests::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args);
    envsync_tests::process::run(cmd, None, Duration::from_secs(120)).unwrap()
}

#[test]
fn the_status_page_renders_in_chromium_and_matches_status_json() {
    let env = setup();
    env.pg.create_database("other").unwrap();
    let tasks = format!(
        "{}\n{}",
        env.backup_task("good", "small", None, ""),
        env.backup_task("bad", "missing_db", None, "")
    );
    let config = env.config("", &tasks);
    let c = config.display().to_string();
    env.host
        .run(&["run", "--config", &c, "--task", "good"])
        .expect_ok("backup of small");
    env.host
        .run(&["run", "--config", &c, "--task", "good"])
        .expect_ok("second backup of small");
    let bad = env.host.run(&["run", "--config", &c, "--task", "bad"]);
    assert_ne!(bad.code(), Some(0), "{bad}");

    let port = free_port().unwrap();
    let serve = env
        .host
        .spawn(&[
            "serve",
            "--config",
            &c,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .unwrap();
    let daemon = Daemon(Some(serve));
    http::wait_for(port, "/healthz", Duration::from_secs(60)).unwrap();
    let url = format!("http://127.0.0.1:{port}/");

    let dom = headless(&["--dump-dom", &url]);
    assert!(dom.success(), "{dom}");
    let rows: Vec<&str> = dom
        .stdout
        .lines()
        .filter(|l| l.contains("<tr class=\"row"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", dom.stdout);
    let small = rows
        .iter()
        .find(|r| r.contains("data-database=\"small\""))
        .unwrap();
    assert!(
        small.contains("data-state=\"succeeded\"") && small.contains("class=\"row\""),
        "{small}"
    );
    let missing = rows
        .iter()
        .find(|r| r.contains("data-database=\"missing_db\""))
        .unwrap();
    assert!(
        missing.contains("class=\"row alarm\"") && missing.contains("data-state=\"failed\""),
        "{missing}"
    );
    assert!(
        dom.stdout.contains("data-chart=\"Duration\""),
        "{}",
        dom.stdout
    );
    assert!(dom.stdout.contains("data-chart=\"Size\""), "{}", dom.stdout);

    let shots = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = headless(&[
        "--window-size=1280,900",
        &format!("--screenshot={}", png.display()),
        &url,
    ]);
    assert!(shot.success(), "{shot}");
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );

    // status --json, /status.json and the history agree.
    let status = env.host.run(&[
        "status",
        "--json",
        "--state-dir",
        &env.state_dir().display().to_string(),
    ]);
    status.expect_ok("status --json");
    let cli: Value = serde_json::from_str(&status.stdout).unwrap();
    let (_, body) = http::get(port, "/status.json").unwrap();
    let web: Value = serde_json::from_str(&body).unwrap();
    let history = env.history();
    for rows in [&cli, &web] {
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            let last = history
                .iter()
                .rfind(|r| r["database"] == row["database"])
                .unwrap();
            for field in ["time", "state", "duration_seconds", "operation", "instance"] {
                assert_eq!(row[field], last[field], "{field} of {row}");
            }
        }
    }
    drop(daemon);
}

/// `serve`'s `/metrics` is built from the run history, the data's age
/// included: after a restore, `db_backup_job_data_timestamp_seconds` of the
/// target is the restored backup's creation time, as pushed to a
/// Pushgateway (and what `DbBackupTargetDataTooOld` alerts on).
#[test]
fn serve_metrics_carry_the_age_of_the_data_a_restore_left() {
    let env = setup();
    let restore = format!(
        "[[task]]\nname = \"refresh\"\nplugin = \"postgres\"\n\
         [task.database]\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\nname = \"small_copy\"\n\
         [[task.step]]\nop = \"restore\"\nfrom = \"own\"\nfrom_database = \"small\"\n",
        host = env.pg.host(),
        port = env.pg.port(),
        user = env.pg.user(),
    );
    let tasks = format!("{}\n{restore}", env.backup_task("good", "small", None, ""));
    let config = env.config("", &tasks);
    let c = config.display().to_string();
    for task in ["good", "refresh"] {
        env.host
            .run(&["run", "--config", &c, "--task", task])
            .expect_ok(task);
    }
    let key = env.store.pointer(INSTANCE, "small").expect("a pointer");
    let created = env.store.manifest(&key).unwrap()["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    let created = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    let recorded = env
        .history()
        .into_iter()
        .rfind(|r| r["database"] == "small_copy")
        .unwrap();
    assert_eq!(
        recorded["data_time"]
            .as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap()),
        Some(created),
        "{recorded}"
    );

    let port = free_port().unwrap();
    let serve = env
        .host
        .spawn(&[
            "serve",
            "--config",
            &c,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .unwrap();
    let _daemon = Daemon(Some(serve));
    http::wait_for(port, "/healthz", Duration::from_secs(60)).unwrap();
    let (status, metrics) = http::get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("db_backup_job_data_timestamp_seconds{")
                && l.contains("database_db_name=\"small_copy\"")
        })
        .unwrap_or_else(|| panic!("no data age for small_copy in /metrics:\n{metrics}"));
    let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!(
        (value - created.timestamp_millis() as f64 / 1000.0).abs() < 0.002,
        "{line} vs {created}"
    );
    // A backup leaves no data in a target: no data age for its series.
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("db_backup_job_data_timestamp_seconds{")
                && l.contains("database_db_name=\"small\"")),
        "{metrics}"
    );
}
