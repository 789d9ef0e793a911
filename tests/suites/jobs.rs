//! Jobs end to end: config files (`config check`) and chained task steps
//! (`run --config FILE --task NAME`) against a throwaway PostgreSQL and local
//! folder stores standing for the production and staging buckets.

use std::path::{Path, PathBuf};

use envsync_tests::host_cli::{Expect, Host, exit, strip_ansi};
use envsync_tests::paths::{fixture, workspace_root};
use envsync_tests::postgres::PgCluster;
use envsync_tests::store::LocalStore;

/// Backups of the "production" database are filed under the `--db-host`.
const INSTANCE: &str = "127.0.0.1";

/// A production-like cluster with `shop` backed up into the upper store, an
/// empty own store, and a folder for the config file and its scripts.
struct Env {
    host: Host,
    pg: PgCluster,
    upper: LocalStore,
    own: LocalStore,
    dir: tempfile::TempDir,
}

fn setup() -> Env {
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    let upper = LocalStore::new().unwrap();
    pg.step("backup", "shop")
        .opt("--store", upper.path_arg())
        .run(&host)
        .expect_ok("production backup of shop into the upper store");
    assert!(upper.pointer(INSTANCE, "shop").is_some());
    Env {
        host,
        pg,
        upper,
        own: LocalStore::new().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    /// Writes `staging.toml` (restore shop from the upper store into
    /// `shop_staging`, run `script`, back up to the own store) with
    /// `script_text` as the transform; returns the config's path.
    fn staging_config(&self, script_text: &str) -> PathBuf {
        self.config_with("staging", "", script_text)
    }

    /// [`Env::staging_config`] for environment `name` with `extra` lines in
    /// its `[environment]` table.
    fn config_with(&self, name: &str, extra: &str, script_text: &str) -> PathBuf {
        std::fs::write(self.dir.path().join("transform.sql"), script_text).unwrap();
        // Each test its own state folder: task locks and history are per
        // environment and task, and the tests run side by side.
        let extra = if extra.contains("state_dir") {
            extra.to_string()
        } else {
            format!("{extra}\nstate_dir = \"state\"")
        };
        let text = format!(
            r#"
[environment]
name = "{name}"
store = "{own}"
upper_store = "{upper}"
{extra}

[[task]]
name = "shop"
plugin = "postgres"
schedule = "30 4 * * *"

[task.database]
host = "{host}"
port = {port}
user = "{user}"
name = "shop_staging"

[[task.step]]
op = "restore"
from_instance = "{INSTANCE}"
from_database = "shop"

[[task.step]]
op = "transform"
script = "transform.sql"

[[task.step]]
op = "backup"
"#,
            own = self.own.path_arg(),
            upper = self.upper.path_arg(),
            host = self.pg.host(),
            port = self.pg.port(),
            user = self.pg.user(),
        );
        let path = self.dir.path().join("staging.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run_task(
        &self,
        config: &Path,
        task: &str,
        extra: &[&str],
    ) -> envsync_tests::process::Output {
        let config = config.display().to_string();
        let mut args = vec!["run", "--config", &config, "--task", task];
        args.extend_from_slice(extra);
        self.host.run(&args)
    }

    fn count(&self, db: &str, sql: &str) -> u64 {
        self.pg.psql(db, sql).unwrap().parse().unwrap()
    }
}

const SANITISED: &str =
    "SELECT count(*) FROM customers WHERE email NOT LIKE '%@example.invalid' OR avatar IS NOT NULL";

#[test]
fn staging_chain_restores_from_the_upper_store_transforms_and_backs_up_to_its_own() {
    let env = setup();
    let upper_before = env.upper.files();
    let customers = env.pg.row_count("shop", "customers").unwrap();
    assert!(
        env.count("shop", SANITISED) > 0,
        "the sample has personal data"
    );
    let sanitise = std::fs::read_to_string(workspace_root().join("examples/sanitise.sql")).unwrap();
    let config = env.staging_config(&sanitise);

    let out = env.run_task(&config, "shop", &[]);
    out.expect_ok("the staging chain");
    let stdout = strip_ansi(&out.stdout);
    assert!(stdout.contains("task shop: all 3 steps succeeded"), "{out}");
    for line in [
        "1. restore   succeeded",
        "2. transform succeeded",
        "3. backup    succeeded",
    ] {
        assert!(stdout.contains(line), "missing {line:?}\n{out}");
    }

    // The staging database is the sanitised copy.
    assert_eq!(env.count("shop_staging", SANITISED), 0);
    assert_eq!(
        env.pg.row_count("shop_staging", "customers").unwrap(),
        customers
    );
    // Production's store was only read.
    assert_eq!(
        env.upper.files(),
        upper_before,
        "the upper store must not change"
    );
    // The own store holds the sanitised backup: restore it and look.
    let key = env
        .own
        .pointer(INSTANCE, "shop_staging")
        .unwrap_or_else(|| panic!("no staging backup: {:#?}", env.own.files()));
    env.own.verify_manifest(&key, "postgres").unwrap();
    env.pg
        .step("restore", "verify")
        .opt("--store", env.own.path_arg())
        .opt("--from-database", "shop_staging")
        .run(&env.host)
        .expect_ok("restore of the staging backup");
    assert_eq!(
        env.count("verify", SANITISED),
        0,
        "the staging backup is the transformed data"
    );
    assert_eq!(env.pg.row_count("verify", "customers").unwrap(), customers);
}

#[test]
fn a_failing_transform_stops_the_chain_and_the_backup_is_skipped() {
    let env = setup();
    // The first statement succeeds, the second fails: all rolled back.
    let config =
        env.staging_config("UPDATE customers SET name = 'x';\nSELECT * FROM does_not_exist;\n");
    let out = env.run_task(&config, "shop", &["--log-format", "json"]);
    out.expect_fail(
        &[exit::STEP_FAILED],
        &["does_not_exist", "step 2 (transform)"],
        "chain with a failing transform",
    );
    let report = out.json();
    assert_eq!(report["task"], "shop");
    assert_eq!(report["result"], "failed");
    assert_eq!(report["exit_code"], exit::STEP_FAILED);
    let states: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "failed", "skipped"], "{out}");
    assert!(
        report["steps"][1]["error"]
            .as_str()
            .unwrap()
            .contains("does_not_exist")
    );

    // The restore happened, the transform changed nothing, no backup exists.
    assert!(env.count("shop_staging", SANITISED) > 0);
    assert_eq!(
        env.count(
            "shop_staging",
            "SELECT count(*) FROM customers WHERE name = 'x'"
        ),
        0
    );
    assert!(
        env.own.files().is_empty(),
        "the own store must stay empty: {:#?}",
        env.own.files()
    );

    // The human summary says the same.
    let out = env.run_task(&config, "shop", &[]);
    assert_eq!(out.code(), Some(exit::STEP_FAILED), "{out}");
    let stdout = strip_ansi(&out.stdout);
    assert!(stdout.contains("task shop: failed at step 2 of 3"), "{out}");
    assert!(stdout.contains("3. backup    skipped"), "{out}");
    assert!(env.own.files().is_empty());
}

#[test]
fn an_unknown_task_lists_the_tasks_and_ad_hoc_flags_conflict_with_config() {
    let host = Host::built();
    let example = workspace_root().join("examples/staging.toml");
    let example = example.display().to_string();
    host.run(&["run", "--config", &example, "--task", "nope"])
        .expect_fail(
            &[exit::USAGE],
            &["no task \"nope\"", "shop, blog, crm"],
            "unknown task",
        );
    // ENVSYNC_ENVIRONMENT (for ad-hoc runs) does not conflict with --config.
    let mut cmd = host.command(&["run", "--config", &example, "--task", "nope"]);
    cmd.env("ENVSYNC_ENVIRONMENT", "prod");
    host.run_command(cmd).expect_fail(
        &[exit::USAGE],
        &["no task \"nope\""],
        "unknown task with ENVSYNC_ENVIRONMENT set",
    );
    host.run(&[
        "run", "--config", &example, "--task", "shop", "--plugin", "postgres",
    ])
    .expect_fail(
        &[exit::USAGE],
        &["do not apply with --config", "--plugin"],
        "--config with --plugin",
    );
    // Flags the config file describes are refused, naming where each goes,
    // rather than silently ignored.
    for (flags, place) in [
        (
            &["--max-runtime", "10m"][..],
            "--max-runtime (set max_runtime on each [[task.step]])",
        ),
        (
            &["--memory-cap-mib", "64"][..],
            "--memory-cap-mib (set memory_cap_mib in [[task]])",
        ),
        (
            &["--allow-program", "psql"][..],
            "--allow-program (set allow_programs in [[task]])",
        ),
        (
            &["--store", "/tmp/elsewhere"][..],
            "--store (set store in [environment])",
        ),
        (
            &["--environment", "prod"][..],
            "--environment (set name in [environment])",
        ),
        (
            &["--production", "false"][..],
            "--production (set production in [environment])",
        ),
        (
            &["--sanitiser", "sanitise"][..],
            "--sanitiser (set [task.sanitise])",
        ),
    ] {
        let mut args = vec!["run", "--config", &example, "--task", "shop"];
        args.extend_from_slice(flags);
        host.run(&args).expect_fail(
            &[exit::USAGE],
            &["do not apply with --config", place],
            &format!("--config with {}", flags[0]),
        );
    }
    // The same settings from the environment (meant for ad-hoc runs) are
    // not in the way.
    let mut cmd = host.command(&["run", "--config", &example, "--task", "nope"]);
    cmd.env("ENVSYNC_STORE", "/tmp/elsewhere")
        .env("ENVSYNC_PRODUCTION", "true")
        .env("ENVSYNC_READ_ONLY_STORES", "/tmp/a,/tmp/b");
    host.run_command(cmd).expect_fail(
        &[exit::USAGE],
        &["no task \"nope\""],
        "unknown task with ENVSYNC_STORE and ENVSYNC_PRODUCTION set",
    );
}

#[test]
fn config_check_reports_every_mistake_with_line_column_and_field() {
    let host = Host::built();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        r#"[environment]
name = "staging"
store = "s3://staging-backups/db"
upper_store = "s3://staging-backups"
timezone = "Europe/Londn"
colour = "blue"

[[task]]
name = "shop"
plugin = "postgres"
schedule = "30 2 * *"
[task.database]
name = "shop"
password = "hunter2"
[[task.step]]
op = "restor"
[[task.step]]
op = "transform"
script = "nope.sql"
max_runtime = "soon"
[[task.step]]
op = "backup"
from = "upper"
"#,
    )
    .unwrap();
    let name = file.display().to_string();
    let out = host.run(&["config", "check", &name]);
    out.expect_fail(
        &[exit::USAGE],
        &["9 mistakes"],
        "config check of a broken file",
    );
    let stderr = strip_ansi(&out.stderr);
    let expected = [
        "4:15: environment: upper_store s3://staging-backups is the same place as (or inside) store",
        "5:12: environment: timezone \"Europe/Londn\" is not an IANA time zone name",
        "6:1: environment: unknown field \"colour\"",
        "11:12: task \"shop\": schedule \"30 2 * *\" has 4 fields",
        "14:1: task \"shop\" database: unknown field \"password\" (secrets never go in the file",
        "16:6: task \"shop\" step 1: op \"restor\" is not one of backup, restore, transform, copy",
        "19:10: task \"shop\" step 2: script ",
        "20:15: task \"shop\" step 2: max_runtime \"soon\" is not a duration",
        "23:1: task \"shop\" step 3: from belongs to restore steps; it does not apply to a backup step",
    ];
    for e in expected {
        let line = format!("{name}:{e}");
        assert!(stderr.contains(&line), "missing {line:?}\n{out}");
    }
    assert!(!stderr.contains("hunter2"), "a secret was echoed\n{out}");

    // A file that is not TOML at all.
    std::fs::write(&file, "[environment\nname = 1\n").unwrap();
    let out = host.run(&["config", "check", &name]);
    out.expect_fail(
        &[exit::USAGE],
        &[&format!("{name}:1:"), "TOML syntax"],
        "config check of bad TOML",
    );

    // run --config refuses the broken file before running anything, listing the mistakes.
    std::fs::write(
        &file,
        "[environment]\nname = \"x\"\n[[task]]\nname = \"a\"\nplugin = \"postgres\"\n",
    )
    .unwrap();
    host.run(&["run", "--config", &name, "--task", "a"])
        .expect_fail(
            &[exit::USAGE],
            &["missing field \"database\"", "no steps"],
            "run with a broken config",
        );
}

#[test]
fn the_example_chain_passes_config_check() {
    let host = Host::built();
    for (file, tasks) in [
        ("production.toml", "ok: 2 tasks"),
        ("staging.toml", "ok: 3 tasks"),
        ("staging-uploads.toml", "ok: 1 task"),
        ("integration.toml", "ok: 1 task"),
    ] {
        let path = workspace_root().join("examples").join(file);
        let out = host.run(&["config", "check", &path.display().to_string()]);
        out.expect_ok(&format!("config check {file}"));
        assert!(out.stdout.contains(tasks), "{file}: {out}");
        assert!(
            !strip_ansi(&out.stderr).contains("warning"),
            "{file} has warnings\n{out}"
        );
    }
}

#[test]
fn staging_chain_between_s3_buckets_uses_the_config_s3_settings() {
    use envsync_tests::s3::S3Server;
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    let s3 = S3Server::start().expect("start a throwaway S3 server");
    for bucket in ["prod-backups", "staging-backups"] {
        s3.create_bucket(bucket).unwrap();
    }
    let prod = s3.store("prod-backups", "db");
    let staging = s3.store("staging-backups", "db");
    s3.run(
        &host,
        &pg.step("backup", "shop")
            .opt("--store", "s3://prod-backups/db"),
    )
    .expect_ok("production backup into s3://prod-backups/db");
    let prod_pointer = prod
        .pointer(INSTANCE, "shop")
        .expect("a production pointer");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        workspace_root().join("examples/sanitise.sql"),
        dir.path().join("sanitise.sql"),
    )
    .unwrap();
    let config = dir.path().join("staging.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[environment]
name = "staging"
store = "s3://staging-backups/db"
upper_store = "s3://prod-backups/db"

[environment.s3]
endpoint = "{endpoint}"
region = "{region}"
path_style = true
part_size_mib = 5

[[task]]
name = "shop"
plugin = "postgres"
database = {{ host = "{host}", port = {port}, user = "{user}", name = "shop_staging" }}

[[task.step]]
op = "restore"
from_instance = "{INSTANCE}"
from_database = "shop"

[[task.step]]
op = "transform"
script = "sanitise.sql"

[[task.step]]
op = "backup"
"#,
            endpoint = s3.endpoint(),
            region = s3.region(),
            host = pg.host(),
            port = pg.port(),
            user = pg.user(),
        ),
    )
    .unwrap();
    // Only the credentials come from the environment: endpoint, region and
    // path style come from [environment.s3].
    let credentials = [
        ("AWS_ACCESS_KEY_ID".to_string(), s3.access_key().to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            s3.secret_key().to_string(),
        ),
    ];
    let config = config.display().to_string();
    let out = host.run_command(s3.host_command_with_env(
        &host,
        &["run", "--config", &config, "--task", "shop"],
        &credentials,
    ));
    out.expect_ok("staging chain between S3 buckets");
    assert!(
        strip_ansi(&out.stdout).contains("all 3 steps succeeded"),
        "{out}"
    );
    assert_eq!(
        pg.psql("shop_staging", SANITISED).unwrap(),
        "0",
        "the staging copy is sanitised"
    );
    assert!(
        staging.pointer(INSTANCE, "shop_staging").is_some(),
        "no staging backup in s3://staging-backups/db"
    );
    assert_eq!(
        prod.pointer(INSTANCE, "shop").as_deref(),
        Some(prod_pointer.as_str()),
        "the production store must not change"
    );
}

/// The `db_backup_*` samples the gateway holds for `operation` of
/// `shop_staging`.
fn gateway_samples(
    gw: &envsync_tests::pushgateway::Pushgateway,
    operation: &str,
) -> Vec<envsync_tests::pushgateway::Sample> {
    gw.samples("db_backup_")
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.labels.get("operation").map(String::as_str) == Some(operation)
                && s.labels.get("database_db_name").map(String::as_str) == Some("shop_staging")
        })
        .collect()
}

fn job_state(gw: &envsync_tests::pushgateway::Pushgateway, operation: &str) -> Option<f64> {
    gateway_samples(gw, operation)
        .into_iter()
        .find(|s| s.name == "db_backup_job_state")
        .map(|s| s.value)
}

#[test]
fn a_chain_pushes_metrics_per_step_and_status_shows_the_history() {
    use envsync_tests::pushgateway::Pushgateway;
    let env = setup();
    let gw = Pushgateway::start().expect("start a Pushgateway");
    let state = env.dir.path().join("state");
    let extra = format!("pushgateway = \"{}\"\nstate_dir = \"state\"", gw.url());
    let sanitise = std::fs::read_to_string(workspace_root().join("examples/sanitise.sql")).unwrap();
    let config = env.config_with("staging", &extra, &sanitise);
    env.run_task(&config, "shop", &[])
        .expect_ok("the staging chain with metrics");

    // Every step's group ended in state 2 with the right labels.
    for (op, runtime_class) in [("restore", "4h"), ("transform", "45m"), ("backup", "1h")] {
        let samples = gateway_samples(&gw, op);
        let state_sample = samples
            .iter()
            .find(|s| s.name == "db_backup_job_state")
            .unwrap_or_else(|| panic!("no state for {op}: {samples:#?}"));
        assert_eq!(state_sample.value, 2.0, "{op}: {samples:#?}");
        for (label, value) in [
            ("job", "db-backup"),
            ("database_engine", "postgres"),
            ("database_instance", env.pg.host()),
            ("runtime_class", runtime_class),
            ("schedule_class", "daily"),
        ] {
            assert_eq!(
                state_sample.labels.get(label).map(String::as_str),
                Some(value),
                "{op} {label}: {state_sample:#?}"
            );
        }
        assert!(
            samples
                .iter()
                .any(|s| s.name == "db_backup_job_duration_seconds"
                    && s.labels.get("state").map(String::as_str) == Some("succeeded")),
            "{op}: no succeeded duration: {samples:#?}"
        );
    }
    let size = gateway_samples(&gw, "backup")
        .into_iter()
        .find(|s| s.name == "db_backup_job_file_size_bytes")
        .expect("a backup size");
    assert!(size.value > 0.0);

    // A failing transform: its group goes to 0; the skipped backup keeps
    // its last state.
    let failing = env.config_with(
        "staging",
        &extra,
        "UPDATE customers SET name = 'x';\nSELECT * FROM does_not_exist;\n",
    );
    let out = env.run_task(&failing, "shop", &[]);
    assert_eq!(out.code(), Some(exit::STEP_FAILED), "{out}");
    assert_eq!(job_state(&gw, "restore"), Some(2.0));
    assert_eq!(job_state(&gw, "transform"), Some(0.0));
    assert_eq!(job_state(&gw, "backup"), Some(2.0));

    // The history has 5 records; status shows the latest of each.
    let history = std::fs::read_to_string(state.join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 5, "{history}");
    let state_arg = state.display().to_string();
    let out = env
        .host
        .run(&["status", "--state-dir", &state_arg, "--json"]);
    out.expect_ok("status --json");
    let rows = out.json();
    let rows = rows.as_array().unwrap();
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
                r["alarm"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("backup", "succeeded", false),
            ("restore", "succeeded", false),
            ("transform", "failed", true),
        ],
        "{out}"
    );
    for r in rows {
        assert_eq!(r["environment"], "staging");
        assert_eq!(r["task"], "shop");
        assert_eq!(r["database"], "shop_staging");
        assert_eq!(r["instance"], env.pg.host());
    }
    let backup = &rows[0];
    assert!(backup["size"].as_u64().unwrap() > 0);
    let key = backup["key"].as_str().unwrap();
    assert_eq!(
        env.own.pointer(INSTANCE, "shop_staging").as_deref(),
        Some(key)
    );

    // The human table: one line per row, no colour when not a terminal.
    let out = env.host.run(&["status", "--state-dir", &state_arg]);
    out.expect_ok("status");
    assert!(!out.stdout.contains('\x1b'), "{out}");
    assert_eq!(out.stdout.lines().count(), 4, "{out}");
    assert!(out.stdout.contains("transform  failed"), "{out}");
}

#[test]
fn a_restore_into_production_needs_the_override() {
    let env = setup();
    let config = env.config_with("production-eu", "", "SELECT 1;\n");
    env.run_task(&config, "shop", &[]).expect_fail(
        &[exit::USAGE],
        &[
            "refusing to write into production",
            "\"production-eu\"",
            "step 1 (restore) restores into it",
            "--allow-production-write",
            "set production = false in its [environment]",
        ],
        "restore step into production",
    );
    assert!(
        !env.pg.database_exists("shop_staging").unwrap(),
        "nothing ran"
    );
    // The flag's earlier name still works.
    env.run_task(&config, "shop", &["--allow-production-restore"])
        .expect_ok("restore into production with the override");
    assert!(env.pg.database_exists("shop_staging").unwrap());

    // Ad hoc: --environment (or ENVSYNC_ENVIRONMENT) marks production.
    let restore = env
        .pg
        .step("restore", "adhoc")
        .opt("--store", env.upper.path_arg())
        .opt("--from-database", "shop");
    restore
        .clone()
        .opt("--environment", "prod")
        .run(&env.host)
        .expect_fail(
            &[exit::USAGE],
            &[
                "refusing to write into production",
                "\"prod\"",
                "--production false",
            ],
            "ad-hoc restore with --environment prod",
        );
    let mut cmd = env.host.command(restore.args());
    cmd.env("ENVSYNC_ENVIRONMENT", "Production");
    env.host.run_command(cmd).expect_fail(
        &[exit::USAGE],
        &["refusing to write into production"],
        "ad-hoc restore with ENVSYNC_ENVIRONMENT=Production",
    );
    assert!(!env.pg.database_exists("adhoc").unwrap(), "nothing ran");
    // Ad-hoc steps are recorded in the run history too.
    let state = env.dir.path().join("adhoc-state");
    let mut cmd = env
        .host
        .command(restore.clone().opt("--environment", "staging").args());
    cmd.env("ENVSYNC_STATE_DIR", &state);
    env.host
        .run_command(cmd)
        .expect_ok("ad-hoc restore into staging");
    let state_arg = state.display().to_string();
    let out = env
        .host
        .run(&["status", "--state-dir", &state_arg, "--json"]);
    out.expect_ok("status --json after an ad-hoc restore");
    let rows = out.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(rows[0]["database"], "adhoc");
    assert_eq!(rows[0]["operation"], "restore");
    assert_eq!(rows[0]["environment"], "staging");
    assert_eq!(rows[0]["state"], "succeeded");
    assert!(rows[0].get("task").is_none(), "{out}");
    restore
        .opt("--environment", "prod")
        .arg("--allow-production-write")
        .run(&env.host)
        .expect_ok("ad-hoc restore into production with the override");
}

impl Env {
    /// `guard.toml`: environment `name` (`extra` lines in `[environment]`)
    /// with one task `shop` of one `op` step into `shop_target`: a copy of
    /// `shop`, or a transform that creates table `guard_marker`.
    fn one_step_config(&self, name: &str, extra: &str, op: &str) -> PathBuf {
        std::fs::write(
            self.dir.path().join("marker.sql"),
            "CREATE TABLE guard_marker (x int);\n",
        )
        .unwrap();
        let step = match op {
            "copy" => "op = \"copy\"".to_string(),
            _ => "op = \"transform\"\nscript = \"marker.sql\"".to_string(),
        };
        let text = format!(
            r#"
[environment]
name = "{name}"
state_dir = "state"
{extra}

[[task]]
name = "shop"
plugin = "postgres"

[task.database]
host = "{host}"
port = {port}
user = "{user}"
name = "shop_target"

[task.source]
name = "shop"

[[task.step]]
{step}
"#,
            host = self.pg.host(),
            port = self.pg.port(),
            user = self.pg.user(),
        );
        let path = self.dir.path().join("guard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn copy_and_transform_are_guarded_and_production_says_what_is_production() {
    let env = setup();
    let marker = "SELECT count(*) FROM pg_tables WHERE tablename = 'guard_marker'";
    // Named production: a copy and a transform are refused before anything runs.
    for op in ["copy", "transform"] {
        let config = env.one_step_config("production", "", op);
        env.run_task(&config, "shop", &[]).expect_fail(
            &[exit::USAGE],
            &[
                "refusing to write into production",
                "\"production\" counts as production",
                &format!("step 1 ({op})"),
                "--allow-production-write",
                "production = false",
            ],
            &format!("a {op} into production"),
        );
        assert!(
            !env.pg.database_exists("shop_target").unwrap(),
            "nothing ran"
        );
    }
    // `production = false` overrides the name: preprod may be written.
    let config = env.one_step_config("preprod", "production = false", "copy");
    env.run_task(&config, "shop", &[])
        .expect_ok("a copy into preprod marked production = false");
    assert_eq!(
        env.pg.row_count("shop_target", "customers").unwrap(),
        env.pg.row_count("shop", "customers").unwrap()
    );
    let config = env.one_step_config("preprod", "production = false", "transform");
    env.run_task(&config, "shop", &[])
        .expect_ok("a transform in preprod marked production = false");
    assert_eq!(env.count("shop_target", marker), 1);
    // `production = true` overrides the name the other way.
    let oid = env.pg.database_oid("shop_target").unwrap();
    let config = env.one_step_config("staging", "production = true", "copy");
    let out = env.run_task(&config, "shop", &[]);
    out.expect_fail(
        &[exit::USAGE],
        &[
            "\"staging\" is marked production",
            "step 1 (copy) copies into it",
            "--allow-production-write",
        ],
        "a copy into staging marked production = true",
    );
    assert!(!out.stderr.contains("production = false"), "{out}");
    assert_eq!(
        env.pg.database_oid("shop_target").unwrap(),
        oid,
        "the target was not replaced"
    );
    assert_eq!(env.count("shop_target", marker), 1);
    // The override lets it through.
    env.run_task(&config, "shop", &["--allow-production-write"])
        .expect_ok("a copy into production with the override");
    assert_eq!(env.count("shop_target", marker), 0, "the copy replaced it");

    // Ad hoc: the same guard from --environment and --production.
    let copy = env
        .pg
        .step("copy", "adhoc_target")
        .opt("--source-database", "shop");
    copy.clone()
        .opt("--environment", "production")
        .run(&env.host)
        .expect_fail(
            &[exit::USAGE],
            &[
                "refusing to write into production",
                "this is a copy",
                "--allow-production-write",
                "--production false",
            ],
            "ad-hoc copy into production",
        );
    env.pg
        .step("transform", "shop_target")
        .opt("--script", env.dir.path().join("marker.sql").display())
        .opt("--environment", "staging")
        .opt("--production", "true")
        .run(&env.host)
        .expect_fail(
            &[exit::USAGE],
            &["\"staging\" is marked production", "this is a transform"],
            "ad-hoc transform into staging marked production",
        );
    assert_eq!(
        env.count("shop_target", marker),
        0,
        "the transform did not run"
    );
    assert!(!env.pg.database_exists("adhoc_target").unwrap());
    copy.opt("--environment", "preprod")
        .opt("--production", "false")
        .run(&env.host)
        .expect_ok("ad-hoc copy into preprod marked not production");
    assert!(env.pg.database_exists("adhoc_target").unwrap());
}

#[test]
fn alert_classes_from_the_config_render_rules_that_promtool_accepts() {
    let host = Host::built();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("staging.toml");
    std::fs::write(
        &config,
        r#"
[environment]
name = "staging"
store = "backups"

[alerts]
failed_severity = "page"
runtime_classes = { "20m" = "20m", "6h" = "6h" }
schedule_classes = { nightly = "26h", monthly = "32days" }

[[task]]
name = "shop"
plugin = "postgres"
schedule = "0 3 1 * *"
schedule_class = "monthly"
database = { name = "shop" }
[[task.step]]
op = "backup"
"#,
    )
    .unwrap();
    let rules = dir.path().join("rules.yml");
    host.run(&[
        "config",
        "alerts",
        &config.display().to_string(),
        "-o",
        &rules.display().to_string(),
    ])
    .expect_ok("config alerts");
    let text = std::fs::read_to_string(&rules).unwrap();
    for expected in [
        "runtime_class=\"20m\"",
        "runtime_class=\"6h\"",
        "schedule_class=\"monthly\"",
        "2764800", // 32 days in seconds
        "severity: \"page\"",
    ] {
        assert!(text.contains(expected), "{expected} not in\n{text}");
    }
    assert!(!text.contains("runtime_class=\"13h\""), "{text}");
    let promtool = envsync_tests::pushgateway::promtool_program()
        .expect("promtool: run scripts/setup.sh (apt-get install prometheus)");
    let out = envsync_tests::process::run(
        {
            let mut cmd = std::process::Command::new(promtool);
            cmd.arg("check").arg("rules").arg(&rules);
            cmd
        },
        None,
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.success(), "promtool check rules:\n{out}");
}
