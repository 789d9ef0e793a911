//! Sanitising in the stream, end to end: sanitised PostgreSQL and MariaDB
//! backups through the first-party `sanitise` sanitiser restore with no
//! original personal value left, joins and unique constraints intact, row
//! filters applied and masks identical between runs; `sanitise check` and
//! strict mode; the residual-PII scan; hostile third-party sanitisers
//! (fixtures in tests/fixtures/hostile-sanitiser) stopped with a clear
//! error while the host carries on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use envsync_host::jobs::chain::{self, NoObserver, StepResult};
use envsync_host::jobs::config::{self, CheckOptions};
use envsync_host::runtime::Runtime;
use envsync_host::runtime::compile_cache::CompileCache;
use envsync_host::runtime::registry::Registry;
use envsync_tests::host_cli::{Expect, Host, exit};
use envsync_tests::mariadb::MariaDb;
use envsync_tests::paths::{fixture, workspace_root};
use envsync_tests::plugin_folder::{SANITISERS, copy_plugins, test_plugin};
use envsync_tests::postgres::PgCluster;
use envsync_tests::store::LocalStore;

const INSTANCE: &str = "127.0.0.1";

/// Values of the fixture that must never reach a restored copy (checked as
/// substrings of every value of every table).
const PERSONAL_MARKERS: &[&str] = &["realmail.test", "High Street, Leeds", "7911 "];

/// A folder with the rules, a salt and the config.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture("sanitise/rules.toml"),
            dir.path().join("rules.toml"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("salt.key"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `env.toml` with a backup task `name` of `db` on `conn` (TOML lines
    /// for `[task.database]`), sanitised with `rules` (`sanitise_extra`
    /// lines in `[task.sanitise]`).
    fn config(
        &self,
        store: &LocalStore,
        plugin: &str,
        conn: &str,
        tasks: &[(&str, &str, &str)],
    ) -> PathBuf {
        let mut text = format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n",
            store.path_arg()
        );
        for (name, rules, extra) in tasks {
            text.push_str(&format!(
                "\n[[task]]\nname = \"{name}\"\nplugin = \"{plugin}\"\n[task.database]\n{conn}\n\
                 [task.sanitise]\nsanitiser = \"{sanitiser}\"\nrules = \"{rules}\"\nsalt_file = \"salt.key\"\n\
                 allowed_email_domains = [\"example.com\"]\n{extra}\n[[task.step]]\nop = \"backup\"\n",
                sanitiser = if rules.starts_with("hostile") { "hostile" } else { "sanitise" },
            ));
        }
        let path = self.path("env.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A throwaway PostgreSQL with the fixture loaded into `shop`.
fn pg_shop() -> PgCluster {
    let pg = PgCluster::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("sanitise/postgres.sql"))
        .unwrap();
    pg
}

/// The `[task.database]` lines of database `name` on a server.
fn database_lines(host: &str, port: u16, user: &str, name: &str) -> String {
    format!("host = \"{host}\"\nport = {port}\nuser = \"{user}\"\nname = \"{name}\"")
}

fn host_with_sanitisers() -> Host {
    let host = Host::built();
    // The plugin folder: the built plugins plus the hostile test sanitiser in
    // `sanitisers/`, as `hostile.wasm` (the name it describes itself by).
    // Laid out once per test process; the tests then only read it.
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = workspace_root().join("target/test-plugin-dir-sanitise");
        let _ = std::fs::remove_dir_all(&dir);
        copy_plugins(host.plugin_dir(), &dir).unwrap();
        let hostile = test_plugin("hostile-sanitiser");
        std::fs::copy(&hostile, dir.join(SANITISERS).join("hostile.wasm")).unwrap();
        dir
    });
    host.with_plugin_dir(dir)
}

fn run_task(host: &Host, config: &Path, task: &str) -> envsync_tests::process::Output {
    host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        task,
    ])
}

/// Every value of every table of a PostgreSQL database, one per line.
fn pg_values(pg: &PgCluster, db: &str) -> Vec<String> {
    let tables = pg
        .psql(db, "SELECT string_agg(quote_ident(tablename), ' ') FROM pg_tables WHERE schemaname = 'public'")
        .unwrap();
    let mut values = Vec::new();
    for table in tables.split_whitespace() {
        let rows = pg
            .psql(db, &format!("SELECT row_to_json(t)::text FROM {table} t"))
            .unwrap();
        for row in rows.lines() {
            let v: serde_json::Value = serde_json::from_str(row).unwrap();
            collect(&v, &mut values);
        }
    }
    values
}

/// The scalar leaves of a JSON value (JSON columns come as text or objects).
fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => m.values().for_each(|x| collect(x, out)),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        serde_json::Value::String(s) => {
            if let Ok(inner @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) =
                serde_json::from_str::<serde_json::Value>(s)
            {
                collect(&inner, out);
            }
            out.push(s.clone());
        }
        other => out.push(other.to_string()),
    }
}

/// Fails listing the personal values found in `values`.
fn assert_no_personal_data(values: &[String], originals: &BTreeSet<String>, what: &str) {
    let leaked: Vec<&String> = values
        .iter()
        .filter(|v| originals.contains(*v) || PERSONAL_MARKERS.iter().any(|m| v.contains(m)))
        .take(10)
        .collect();
    assert!(
        leaked.is_empty(),
        "{what}: personal values survived: {leaked:#?}"
    );
}

fn pg_originals(pg: &PgCluster, db: &str) -> BTreeSet<String> {
    let text = pg
        .psql(
            db,
            "SELECT email FROM users UNION ALL SELECT name FROM users UNION ALL SELECT phone FROM users \
             UNION ALL SELECT address FROM users UNION ALL SELECT note FROM orders WHERE note IS NOT NULL",
        )
        .unwrap();
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_sanitised_postgres_backup_restores_without_personal_data() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop");
    let config = files.config(
        &store,
        "postgres",
        &conn,
        &[("shop", "rules.toml", "strict = true")],
    );

    let mut masked = Vec::new();
    for copy in ["shop_a", "shop_b"] {
        let out = run_task(&host, &config, "shop");
        out.expect_ok("sanitised backup of shop");
        assert!(out.stdout.contains("sanitised"), "{out}");
        assert!(out.stdout.contains("residual personal data: none"), "{out}");
        pg.step("restore", copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "shop")
            .run(&host)
            .expect_ok("restore of the sanitised backup");
        masked.push(copy);
    }
    let originals = pg_originals(&pg, "shop");
    let count = |db: &str, sql: &str| -> u64 { pg.psql(db, sql).unwrap().parse().unwrap() };
    for db in &masked {
        assert_no_personal_data(&pg_values(&pg, db), &originals, db);
        // Row filters: old events dropped, sessions gone, the rest all there.
        assert_eq!(count(db, "SELECT count(*) FROM users"), 3000);
        assert_eq!(count(db, "SELECT count(*) FROM orders"), 5000);
        assert_eq!(count(db, "SELECT count(*) FROM events"), 1000);
        assert_eq!(count(db, "SELECT count(*) FROM sessions"), 0);
        // Joins survive: the same e-mail masks the same in both tables.
        assert_eq!(
            count(
                db,
                "SELECT count(*) FROM orders o JOIN users u ON u.email = o.customer_email AND u.id = o.user_id"
            ),
            5000
        );
        assert_eq!(count(db, "SELECT count(DISTINCT email) FROM users"), 3000);
        assert_eq!(
            count(
                db,
                "SELECT count(*) FROM users WHERE profile->'phone' <> 'null'::jsonb"
            ),
            0
        );
        assert_eq!(
            count(
                db,
                "SELECT count(*) FROM users WHERE (profile->>'newsletter') IS NULL"
            ),
            0
        );
        // A kept value with every COPY escape is unchanged.
        assert_eq!(
            pg.psql(db, "SELECT kind FROM events WHERE id = 1").unwrap(),
            "tab\there \"quote\" back\\slash\nnew line 'single'"
        );
    }
    // The same masks in both runs.
    let digest = |db: &str| {
        pg.psql(
            db,
            "SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u",
        )
        .unwrap()
    };
    assert_eq!(digest("shop_a"), digest("shop_b"));
}

#[test]
fn an_ad_hoc_sanitised_backup_is_the_same_as_the_configured_one() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let files = Files::new();
    // The configured task, as above.
    let configured = LocalStore::new().unwrap();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop");
    let config = files.config(
        &configured,
        "postgres",
        &conn,
        &[("shop", "rules.toml", "strict = true")],
    );
    run_task(&host, &config, "shop").expect_ok("configured sanitised backup");
    // The same step ad hoc: the flags stand for [task.sanitise].
    let ad_hoc = LocalStore::new().unwrap();
    let out = pg
        .step("backup", "shop")
        .opt("--store", ad_hoc.path_arg())
        .opt("--sanitiser", "sanitise")
        .opt("--rules", files.path("rules.toml").display())
        .opt("--salt-file", files.path("salt.key").display())
        .arg("--strict")
        .opt("--allowed-email-domain", "example.com")
        .run(&host);
    out.expect_ok("ad-hoc sanitised backup");
    assert!(out.stdout.contains("residual personal data: none"), "{out}");
    for (store, copy) in [(&configured, "shop_configured"), (&ad_hoc, "shop_ad_hoc")] {
        pg.step("restore", copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "shop")
            .run(&host)
            .expect_ok("restore of a sanitised backup");
    }
    let originals = pg_originals(&pg, "shop");
    assert_no_personal_data(&pg_values(&pg, "shop_ad_hoc"), &originals, "ad hoc");
    // Same rules, same salt: the same masked rows, whichever way it was asked.
    pg.fingerprint("shop_ad_hoc").unwrap().assert_same(
        &pg.fingerprint("shop_configured").unwrap(),
        "ad hoc vs configured",
    );

    // Ad hoc, strict refuses an uncovered column before dumping, as configured.
    pg.psql(
        "shop",
        "ALTER TABLE users ADD COLUMN passport text DEFAULT 'X1'",
    )
    .unwrap();
    let out = pg
        .step("backup", "shop")
        .opt("--store", ad_hoc.path_arg())
        .opt("--sanitiser", "sanitise")
        .opt("--rules", files.path("rules.toml").display())
        .opt("--salt-file", files.path("salt.key").display())
        .arg("--strict")
        .run(&host);
    out.expect_fail(
        &[exit::USAGE],
        &["strict sanitising", "users.passport", "nothing was dumped"],
        "a strict ad-hoc backup with an uncovered column",
    );
    // A restore cannot sanitise: refused before anything runs.
    pg.step("restore", "shop_refused")
        .opt("--store", ad_hoc.path_arg())
        .opt("--from-database", "shop")
        .opt("--sanitiser", "sanitise")
        .opt("--rules", files.path("rules.toml").display())
        .opt("--salt-file", files.path("salt.key").display())
        .run(&host)
        .expect_fail(
            &[exit::USAGE],
            &["--sanitiser belongs to backup and copy steps"],
            "an ad-hoc sanitised restore",
        );
    assert!(!pg.database_exists("shop_refused").unwrap());
}

#[test]
fn sanitise_check_reports_a_new_column_and_strict_mode_refuses_to_dump() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop");
    let config = files.config(
        &store,
        "postgres",
        &conn,
        &[("shop", "rules.toml", "strict = true")],
    );
    let c = config.display().to_string();
    let check = host.run(&["sanitise", "check", "--config", &c, "--task", "shop"]);
    check.expect_ok("sanitise check with every column covered");
    assert!(check.stdout.contains("0 of "), "{check}");

    pg.psql(
        "shop",
        "ALTER TABLE users ADD COLUMN national_insurance text DEFAULT 'QQ123456C'",
    )
    .unwrap();
    let check = host.run(&["sanitise", "check", "--config", &c, "--task", "shop"]);
    check.expect_fail(
        &[exit::STEP_FAILED],
        &["not covered"],
        "sanitise check with a new column",
    );
    assert!(check.stdout.contains("users.national_insurance"), "{check}");

    let out = run_task(&host, &config, "shop");
    out.expect_fail(
        &[exit::USAGE],
        &[
            "strict sanitising",
            "users.national_insurance",
            "nothing was dumped",
        ],
        "a strict sanitised backup with an uncovered column",
    );
    assert_eq!(store.pointer(INSTANCE, "shop"), None);
    assert!(
        store.visible_files().is_empty(),
        "{:#?}",
        store.visible_files()
    );
}

#[test]
fn the_residual_scan_fails_a_strict_step_and_reports_otherwise() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    // Rules that keep the e-mails.
    let rules = std::fs::read_to_string(files.path("rules.toml"))
        .unwrap()
        .replacen("email = \"fake_email\"", "email = \"keep\"", 1);
    std::fs::write(files.path("leaky.toml"), rules).unwrap();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop");
    let config = files.config(
        &store,
        "postgres",
        &conn,
        &[
            ("strict", "leaky.toml", "strict = true"),
            ("lenient", "leaky.toml", ""),
        ],
    );
    let out = run_task(&host, &config, "strict");
    out.expect_fail(
        &[exit::STEP_FAILED],
        &[
            "residual-PII scan",
            "3000 e-mail addresses",
            "nothing was published",
        ],
        "a strict backup that leaks e-mails",
    );
    assert_eq!(store.pointer(INSTANCE, "shop"), None);
    assert!(
        store.visible_files().is_empty(),
        "{:#?}",
        store.visible_files()
    );

    let out = run_task(&host, &config, "lenient");
    out.expect_ok("a lenient backup that leaks e-mails");
    assert!(
        out.stdout
            .contains("residual personal data: 3000 e-mail addresses"),
        "{out}"
    );
    assert!(store.pointer(INSTANCE, "shop").is_some());
}

/// A throwaway MariaDB with the fixture loaded into `shop`.
fn mariadb_shop() -> MariaDb {
    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    db.load_sql_file("shop", &fixture("sanitise/mysql.sql"))
        .unwrap();
    db
}

/// How many rows of MariaDB database `copy` still hold a personal value of
/// the fixture ("0" when none).
fn mariadb_leaks(db: &MariaDb, copy: &str) -> String {
    db.sql(
        Some(copy),
        "SELECT (SELECT count(*) FROM users WHERE CONCAT_WS('|', email, name, phone, address, profile) LIKE '%realmail%' \
             OR CONCAT_WS('|', email, name, phone, address, profile) LIKE '%High Street, Leeds%' \
             OR CONCAT_WS('|', phone, profile) LIKE '%7911 %' OR name LIKE '% Smith %' OR name LIKE '% Jones %') \
         + (SELECT count(*) FROM orders WHERE CONCAT_WS('|', customer_email, note) LIKE '%realmail%' \
             OR note LIKE '%High Street%')",
    )
    .unwrap()
}

#[test]
fn a_sanitised_mariadb_backup_restores_without_personal_data() {
    let host = host_with_sanitisers();
    let db = mariadb_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let conn = database_lines(db.host(), db.port(), db.user(), "shop");
    let config = files.config(
        &store,
        "mysql",
        &conn,
        &[("shop", "rules.toml", "strict = true")],
    );
    let mut digests = Vec::new();
    for copy in ["shop_a", "shop_b"] {
        let out = run_task(&host, &config, "shop");
        out.expect_ok("sanitised backup of shop");
        assert!(out.stdout.contains("residual personal data: none"), "{out}");
        db.step("restore", copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "shop")
            .run(&host)
            .expect_ok("restore of the sanitised MariaDB backup");
        let q = |sql: &str| db.sql(Some(copy), sql).unwrap();
        assert_eq!(q("SELECT count(*) FROM users"), "3000");
        assert_eq!(q("SELECT count(*) FROM orders"), "5000");
        assert_eq!(q("SELECT count(*) FROM events"), "1000");
        assert_eq!(q("SELECT count(*) FROM sessions"), "0");
        assert_eq!(
            q(
                "SELECT count(*) FROM orders o JOIN users u ON u.email = o.customer_email AND u.id = o.user_id"
            ),
            "5000"
        );
        assert_eq!(q("SELECT count(DISTINCT email) FROM users"), "3000");
        assert_eq!(
            mariadb_leaks(&db, copy),
            "0",
            "personal values survived in {copy}"
        );
        // A kept value with quotes, backslashes, tabs and newlines is unchanged
        // (the client escapes tab, newline and backslash in its output).
        assert_eq!(
            q("SELECT kind FROM events WHERE id = 1"),
            "tab\\there \"quote\" back\\\\slash\\nnew line 'single'"
        );
        digests.push(q("SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, email, name, phone, address, profile) ORDER BY id SEPARATOR ',')) FROM users"));
    }
    assert_eq!(digests[0], digests[1], "the masks differ between runs");
}

#[test]
fn hostile_sanitisers_are_stopped_with_a_clear_error_and_publish_nothing() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let modes: &[(&str, &[&str])] = &[
        ("open-file", &["sanitiser hostile"]),
        ("socket", &["sanitiser hostile"]),
        ("panic", &["sanitiser hostile", "crashed"]),
        ("loop", &["sanitiser hostile", "took longer than 2s"]),
        ("alloc", &["sanitiser hostile", "memory cap"]),
        ("reshape", &["sanitiser hostile", "never reshaped"]),
    ];
    let mut tasks = Vec::new();
    for (mode, _) in modes {
        std::fs::write(
            files.path(&format!("hostile-{mode}.toml")),
            format!("mode = \"{mode}\"\n"),
        )
        .unwrap();
        tasks.push((format!("h-{mode}"), format!("hostile-{mode}.toml")));
    }
    tasks.push(("good".into(), "rules.toml".into()));
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop");
    let task_refs: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|(n, r)| {
            (
                n.as_str(),
                r.as_str(),
                "call_timeout = \"2s\"\nmemory_cap_mib = 64",
            )
        })
        .collect();
    let config = files.config(&store, "postgres", &conn, &task_refs);
    // One host process for all of them: each hostile sanitiser is stopped
    // and the next task runs in the same runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let runtime = Runtime::new(CompileCache::new(None)).unwrap();
        let registry = Registry::open(host.plugin_dir());
        let config = config::load(&config, &CheckOptions::default()).unwrap();
        let stop = Default::default();
        for (task, (mode, phrases)) in config.tasks.iter().zip(modes.iter()) {
            let report = chain::run_task(
                &runtime,
                &registry,
                &config,
                task,
                &Default::default(),
                &NoObserver,
                &stop,
            )
            .await
            .unwrap();
            let error = match &report.steps[0].result {
                StepResult::Failed { error, .. } => format!("{error:#}"),
                other => panic!("{mode}: the step did not fail: {other:?}"),
            };
            for phrase in *phrases {
                assert!(error.contains(phrase), "{mode}: {phrase:?} not in: {error}");
            }
            assert_eq!(
                store.pointer(INSTANCE, "shop"),
                None,
                "{mode}: the pointer moved"
            );
            assert!(
                store.visible_files().is_empty(),
                "{mode}: {:#?}",
                store.visible_files()
            );
        }
        let good = config.tasks.last().unwrap();
        let report = chain::run_task(
            &runtime,
            &registry,
            &config,
            good,
            &Default::default(),
            &NoObserver,
            &stop,
        )
        .await
        .unwrap();
        assert!(report.succeeded(), "{}", report.human());
    });
    assert!(store.pointer(INSTANCE, "shop").is_some());
}

#[test]
fn a_hostile_sanitiser_sees_no_environment_and_a_stopped_clock() {
    let host = host_with_sanitisers();
    let pg = PgCluster::start().unwrap();
    pg.create_database("notes").unwrap();
    pg.psql(
        "notes",
        "CREATE TABLE notes (t text); INSERT INTO notes VALUES ('hello'), ('world');",
    )
    .unwrap();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "notes");
    for mode in ["env", "clock"] {
        std::fs::write(
            files.path(&format!("hostile-{mode}.toml")),
            format!("mode = \"{mode}\"\n"),
        )
        .unwrap();
    }
    let config = files.config(
        &store,
        "postgres",
        &conn,
        &[
            ("env", "hostile-env.toml", ""),
            ("clock", "hostile-clock.toml", ""),
        ],
    );
    // The sanitiser writes what it saw into every value; the host (and the
    // test process, whose environment the host inherits) has plenty.
    assert!(std::env::var_os("PATH").is_some());
    for (mode, expected) in [("env", ""), ("clock", "0")] {
        run_task(&host, &config, mode)
            .expect_ok(&format!("backup through the hostile sanitiser ({mode})"));
        let copy = format!("notes_{mode}");
        pg.step("restore", &copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "notes")
            .run(&host)
            .expect_ok("restore");
        let seen = pg
            .psql(&copy, "SELECT string_agg(DISTINCT t, ',') FROM notes")
            .unwrap();
        assert_eq!(seen, expected, "{mode}: the sanitiser saw {seen:?}");
    }
}

#[test]
fn a_sanitised_postgres_copy_fills_the_target_without_personal_data() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let conn = database_lines(pg.host(), pg.port(), pg.user(), "shop_staging");
    // A copy task: the source is [task.source], the step op is copy.
    let config = files.config(
        &store,
        "postgres",
        &conn,
        &[("copy", "rules.toml", "strict = true")],
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("op = \"backup\"", "op = \"copy\"")
        .replace(
            "[task.sanitise]",
            "[task.source]\nname = \"shop\"\n\n[task.sanitise]",
        );
    std::fs::write(&config, text).unwrap();
    let out = run_task(&host, &config, "copy");
    out.expect_ok("sanitised copy of shop into shop_staging");
    assert!(out.stdout.contains("residual personal data: none"), "{out}");
    let originals = pg_originals(&pg, "shop");
    assert_no_personal_data(&pg_values(&pg, "shop_staging"), &originals, "shop_staging");
    let count = |sql: &str| -> u64 { pg.psql("shop_staging", sql).unwrap().parse().unwrap() };
    assert_eq!(count("SELECT count(*) FROM users"), 3000);
    assert_eq!(count("SELECT count(*) FROM events"), 1000);
    assert_eq!(
        count("SELECT count(*) FROM orders o JOIN users u ON u.email = o.customer_email"),
        5000
    );
    // Nothing was stored: a copy has no artifact.
    assert!(
        store.visible_files().is_empty(),
        "{:#?}",
        store.visible_files()
    );
}

/// A stored file, decompressed (`zstd -d`).
fn zstd_decoded(path: &Path) -> Vec<u8> {
    let decoded = std::process::Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(path)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "zstd -d {}", path.display());
    decoded.stdout
}

/// Every chunk file of a stored artifact, decompressed (`zstd -d`).
fn decoded_chunks(store: &LocalStore, key: &str) -> Vec<(String, Vec<u8>)> {
    let manifest = store.manifest(key).unwrap();
    let mut out = Vec::new();
    for chunk in manifest["chunks"].as_array().expect("chunks") {
        let name = chunk["name"].as_str().unwrap().to_string();
        let path = store.root().join(format!("{key}.chunks/{name}"));
        out.push((name, zstd_decoded(&path)));
    }
    out
}

/// The main stream of a stored artifact, decompressed as its manifest says.
fn decoded_artifact(store: &LocalStore, key: &str) -> Vec<u8> {
    let path = store.artifact_path(key);
    match store.manifest(key).unwrap()["compression"].as_str() {
        Some("zstd") => zstd_decoded(&path),
        Some("none") => std::fs::read(&path).unwrap(),
        other => panic!("artifact {key}: unexpected compression {other:?}"),
    }
}

/// With `--jobs` a sanitised backup is chunked: the schema in chunks of
/// its own, the rows in `rows-*` chunks sanitised by one sanitiser
/// instance per job, the artifact a plan. None of the originals is in any
/// chunk; restored with several sessions it is the same database as the
/// single-stream sanitised backup restores to (same rules, same salt).
#[test]
fn a_sanitised_backup_with_jobs_is_sanitised_in_parallel_into_chunks() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    // Enough events for several batches (8,192 rows each), so that one
    // table's rows are sanitised by several instances at once.
    pg.psql(
        "shop",
        "INSERT INTO events SELECT i, 1 + i % 3000, 'page ' || i, now() - interval '2 days' \
         FROM generate_series(2001, 22000) AS i",
    )
    .unwrap();
    let files = Files::new();
    let sanitised_backup = |store: &LocalStore, jobs: Option<&str>| {
        let mut step = pg
            .step("backup", "shop")
            .opt("--store", store.path_arg())
            .opt("--sanitiser", "sanitise")
            .opt("--rules", files.path("rules.toml").display())
            .opt("--salt-file", files.path("salt.key").display())
            .arg("--strict")
            .opt("--allowed-email-domain", "example.com");
        if let Some(jobs) = jobs {
            step = step.opt("--jobs", jobs);
        }
        let out = step.run(&host);
        out.expect_ok("sanitised backup");
        assert!(out.stdout.contains("residual personal data: none"), "{out}");
        out
    };
    let one = LocalStore::new().unwrap();
    sanitised_backup(&one, None);
    let parallel = LocalStore::new().unwrap();
    let out = sanitised_backup(&parallel, Some("3"));
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains("with 3 sanitiser instance(s) at once"),
        "{out}"
    );
    // Every row went through the sanitiser once, whichever instance had
    // it: the merged summary counts them all (3,000 users, 5,000 orders,
    // 22,000 events, 500 sessions).
    assert!(out.stdout.contains("sanitised 30500 rows"), "{out}");

    let key = parallel.pointer(INSTANCE, "shop").expect("a pointer");
    let chunks = decoded_chunks(&parallel, &key);
    let names: Vec<&str> = chunks.iter().map(|(n, _)| n.as_str()).collect();
    for section in ["pre-data", "post-data", "sequences"] {
        assert!(names.contains(&section), "{names:?}");
    }
    // One chunk per table and instance that had some of its rows: the
    // events' three batches went round all three instances.
    let row_chunks = names.iter().filter(|n| n.starts_with("rows-")).count();
    assert!(row_chunks >= 6, "the rows spread over chunks: {names:?}");
    let events_chunks = chunks
        .iter()
        .filter(|(_, b)| b.starts_with(b"COPY \"public\".\"events\""))
        .count();
    assert_eq!(events_chunks, 3, "{names:?}");
    let originals = pg_originals(&pg, "shop");
    for (name, bytes) in &chunks {
        let text = String::from_utf8_lossy(bytes);
        let leaked: Vec<&String> = originals
            .iter()
            .filter(|o| o.len() > 3 && text.contains(o.as_str()))
            .take(5)
            .collect();
        assert!(
            leaked.is_empty(),
            "chunk {name} holds originals: {leaked:?}"
        );
        for marker in PERSONAL_MARKERS {
            assert!(!text.contains(marker), "chunk {name} holds {marker:?}");
        }
    }
    // The schema chunks hold no rows: only the host writes COPY data.
    for (name, bytes) in &chunks {
        if !name.starts_with("rows-") {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains("FROM stdin;"), "chunk {name} holds rows");
        }
    }
    // The plan names each row chunk's table, as the host reported it: the
    // one its COPY loads.
    let plan = String::from_utf8(decoded_artifact(&parallel, &key)).unwrap();
    for (name, bytes) in chunks.iter().filter(|(n, _)| n.starts_with("rows-")) {
        let line = plan
            .lines()
            .find(|l| l.starts_with(&format!("data\t{name}\t")))
            .unwrap_or_else(|| panic!("the plan names no table for {name}:\n{plan}"));
        let (schema, table) = line.rsplit('\t').next().unwrap().split_once('.').unwrap();
        let copy = format!("COPY \"{schema}\".\"{table}\" ");
        assert!(bytes.starts_with(copy.as_bytes()), "{name} is not {line:?}");
    }

    for (store, copy, jobs) in [(&one, "shop_one", "1"), (&parallel, "shop_par", "3")] {
        let out = pg
            .step("restore", copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "shop")
            .opt("--jobs", jobs)
            .run(&host);
        out.expect_ok("restore of a sanitised backup");
        if jobs == "3" {
            // Each table's indexes start once its chunks are in, while the
            // other tables still load.
            let log = format!("{}{}", out.stdout, out.stderr);
            assert!(
                log.contains("indexes and constraints were started while the data loaded"),
                "{out}"
            );
        }
    }
    assert_no_personal_data(&pg_values(&pg, "shop_par"), &originals, "parallel");
    // Tables, indexes, constraints and sequences alike.
    pg.fingerprint("shop_par").unwrap().assert_same(
        &pg.fingerprint("shop_one").unwrap(),
        "chunked vs one stream",
    );
    // `backups export` of both (a sanitised plan's SQL chunks, a plain
    // script passed through) loads with plain psql into the same database.
    for (store, db) in [(&one, "shop_one_export"), (&parallel, "shop_par_export")] {
        let script = files.path(&format!("{db}.sql"));
        host.run(&[
            "backups",
            "export",
            "--store",
            &store.path_arg(),
            "--plugin",
            "postgres",
            "--instance",
            INSTANCE,
            "--database",
            "shop",
            "--output",
            script.to_str().unwrap(),
        ])
        .expect_ok("export of a sanitised backup");
        pg.create_database(db).unwrap();
        let mut psql = pg.client("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", db, "-f"])
            .arg(&script);
        let out =
            envsync_tests::process::run(psql, None, std::time::Duration::from_secs(300)).unwrap();
        assert!(out.success(), "psql could not load {db}:\n{}", out.stderr);
        pg.fingerprint(db).unwrap().assert_same(
            &pg.fingerprint("shop_one").unwrap(),
            "the exported sanitised backup",
        );
    }
}

/// A chunked sanitised backup fails as a single-stream one does, and
/// leaves nothing behind: a worker's sanitiser crashing, and the strict
/// residual scan adding up what every instance found.
#[test]
fn a_failing_parallel_sanitised_backup_publishes_nothing() {
    let host = host_with_sanitisers();
    let pg = pg_shop();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let leaky = std::fs::read_to_string(files.path("rules.toml"))
        .unwrap()
        .replacen("email = \"fake_email\"", "email = \"keep\"", 1);
    std::fs::write(files.path("leaky.toml"), leaky).unwrap();
    std::fs::write(files.path("hostile-panic.toml"), "mode = \"panic\"\n").unwrap();
    let cases: &[(&str, &str, i32, &[&str])] = &[
        (
            "sanitise",
            "leaky.toml",
            exit::STEP_FAILED,
            &[
                "residual-PII scan",
                "3000 e-mail addresses",
                "nothing was published",
            ],
        ),
        (
            "hostile",
            "hostile-panic.toml",
            exit::SANDBOX,
            &["sanitiser hostile", "crashed"],
        ),
    ];
    for (sanitiser, rules, code, phrases) in cases {
        let out = pg
            .step("backup", "shop")
            .opt("--store", store.path_arg())
            .opt("--sanitiser", sanitiser)
            .opt("--rules", files.path(rules).display())
            .opt("--salt-file", files.path("salt.key").display())
            .arg("--strict")
            .opt("--allowed-email-domain", "example.com")
            .opt("--jobs", "2")
            .run(&host);
        out.expect_fail(&[*code], phrases, &format!("{sanitiser} with {rules}"));
        assert_eq!(store.pointer(INSTANCE, "shop"), None, "{rules}");
        assert!(
            store.visible_files().is_empty(),
            "{rules}: {:#?}",
            store.visible_files()
        );
    }
}

/// The MariaDB fixture with 20,000 more recent events: several batches
/// (4,096 rows each) of one table, so its rows are sanitised by several
/// instances at once.
fn mariadb_shop_with_many_events() -> MariaDb {
    let db = mariadb_shop();
    db.sql(
        Some("shop"),
        "SET SESSION max_recursive_iterations = 100000;\n\
         INSERT INTO events \
         WITH RECURSIVE seq(i) AS (SELECT 2001 UNION ALL SELECT i + 1 FROM seq WHERE i < 22000) \
         SELECT i, 1 + i % 3000, CONCAT('page ', i), NOW() - INTERVAL 2 DAY FROM seq;",
    )
    .unwrap();
    db
}

/// The personal values of the MariaDB fixture, as the client prints them.
fn mariadb_originals(db: &MariaDb) -> BTreeSet<String> {
    let text = db
        .sql(
            Some("shop"),
            "SELECT email FROM users UNION ALL SELECT name FROM users UNION ALL SELECT phone FROM users \
             UNION ALL SELECT address FROM users UNION ALL SELECT note FROM orders WHERE note IS NOT NULL",
        )
        .unwrap();
    text.lines().map(str::to_string).collect()
}

/// The tables a MySQL row chunk's INSERTs name.
fn inserted_tables(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("INSERT INTO `"))
        .filter_map(|l| l.split_once("` (").map(|(table, _)| table))
        .collect()
}

/// MariaDB's side of `a_sanitised_backup_with_jobs_is_sanitised_in_parallel_into_chunks`:
/// with `--jobs` the schema and the triggers are chunks of their own, the
/// rows `rows-*` chunks of whole INSERTs of one table each, sanitised by
/// one instance per job, and the artifact a chunked plan. None of the
/// originals is in any chunk; restored with several sessions (and
/// exported for a plain `mariadb` load) it is the same database as the
/// single-stream sanitised backup restores to (same rules, same salt).
#[test]
fn a_sanitised_mariadb_backup_with_jobs_is_sanitised_in_parallel_into_chunks() {
    let host = host_with_sanitisers();
    let db = mariadb_shop_with_many_events();
    let files = Files::new();
    let sanitised_backup = |store: &LocalStore, jobs: Option<&str>| {
        let mut step = db
            .step("backup", "shop")
            .opt("--store", store.path_arg())
            .opt("--sanitiser", "sanitise")
            .opt("--rules", files.path("rules.toml").display())
            .opt("--salt-file", files.path("salt.key").display())
            .arg("--strict")
            .opt("--allowed-email-domain", "example.com");
        if let Some(jobs) = jobs {
            step = step.opt("--jobs", jobs);
        }
        let out = step.run(&host);
        out.expect_ok("sanitised backup");
        assert!(out.stdout.contains("residual personal data: none"), "{out}");
        out
    };
    let one = LocalStore::new().unwrap();
    sanitised_backup(&one, None);
    let parallel = LocalStore::new().unwrap();
    let out = sanitised_backup(&parallel, Some("3"));
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains("with 3 sanitiser instance(s) at once"),
        "{out}"
    );
    // Every row went through a sanitiser once: 3,000 users, 5,000 orders,
    // 22,000 events, 500 sessions.
    assert!(out.stdout.contains("sanitised 30500 rows"), "{out}");

    // Without jobs the artifact is today's one dump; with them, a plan.
    let one_key = one.pointer(INSTANCE, "shop").expect("a pointer");
    assert!(
        one.manifest(&one_key).unwrap().get("chunks").is_none(),
        "the single-stream backup has chunks"
    );
    assert!(!decoded_artifact(&one, &one_key).starts_with(b"ENVSYNC-MYSQL-CHUNKED"));
    let key = parallel.pointer(INSTANCE, "shop").expect("a pointer");
    let plan = String::from_utf8(decoded_artifact(&parallel, &key)).unwrap();
    assert!(
        plan.starts_with("ENVSYNC-MYSQL-CHUNKED 1\nid\tsanitised "),
        "{plan}"
    );
    let chunks = decoded_chunks(&parallel, &key);
    let names: Vec<&str> = chunks.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"schema") && names.contains(&"triggers"),
        "{names:?}"
    );
    let row_chunks: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("rows-"))
        .collect();
    assert!(
        row_chunks.len() >= 6,
        "the rows spread over chunks: {names:?}"
    );
    // The plan names every row chunk, in the order they were stored, with
    // the table and row count the host reported: `data <chunk> <table> <rows>`.
    let planned: Vec<Vec<&str>> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("data\t"))
        .map(|l| l.split('\t').collect())
        .collect();
    let planned_names: Vec<&str> = planned.iter().map(|f| f[0]).collect();
    assert_eq!(planned_names, row_chunks, "{plan}");
    for fields in &planned {
        let [name, table, rows] = fields[..] else {
            panic!("a data line without table and rows: {fields:?}\n{plan}");
        };
        let rows: u64 = rows.parse().unwrap();
        let bytes = &chunks.iter().find(|(n, _)| n == name).unwrap().1;
        let text = String::from_utf8_lossy(bytes);
        // A run the sanitiser emptied writes no INSERT.
        assert_eq!(
            rows > 0,
            text.contains(&format!("INSERT INTO `{table}`")),
            "{name} is not {fields:?}"
        );
    }

    let mut events_chunks = 0;
    for (name, bytes) in &chunks {
        let text = String::from_utf8_lossy(bytes);
        if !name.starts_with("rows-") {
            // Only the host writes rows.
            assert!(!text.contains("INSERT INTO"), "chunk {name} holds rows");
            continue;
        }
        // Whole INSERT statements of one table, nothing else.
        let tables = inserted_tables(&text);
        assert!(tables.len() <= 1, "chunk {name} mixes tables {tables:?}");
        assert!(
            text.starts_with("/*!40101 SET NAMES utf8mb4 */;\n")
                && (tables.is_empty() || text.ends_with(");\n")),
            "chunk {name} is not whole INSERTs:\n{}",
            text.chars().take(300).collect::<String>()
        );
        events_chunks += usize::from(tables.contains("events"));
    }
    // One chunk per instance that had some of the events' six batches.
    assert_eq!(events_chunks, 3, "{names:?}");
    let originals = mariadb_originals(&db);
    for (name, bytes) in &chunks {
        let text = String::from_utf8_lossy(bytes);
        let leaked: Vec<&String> = originals
            .iter()
            .filter(|o| o.len() > 3 && text.contains(o.as_str()))
            .take(5)
            .collect();
        assert!(
            leaked.is_empty(),
            "chunk {name} holds originals: {leaked:?}"
        );
        for marker in PERSONAL_MARKERS {
            assert!(!text.contains(marker), "chunk {name} holds {marker:?}");
        }
    }

    for (store, copy, jobs) in [(&one, "shop_one", "1"), (&parallel, "shop_par", "3")] {
        let out = db
            .step("restore", copy)
            .opt("--store", store.path_arg())
            .opt("--from-database", "shop")
            .opt("--jobs", jobs)
            .run(&host);
        out.expect_ok("restore of a sanitised backup");
        if copy == "shop_par" {
            let log = format!("{}{}", out.stdout, out.stderr);
            assert!(log.contains("with 3 session(s)"), "{out}");
            // The plan counts each row chunk's rows, as the host reported
            // them: the restore reports them as they load.
            let rows: u64 = ["users", "orders", "events", "sessions"]
                .iter()
                .map(|t| {
                    db.sql(Some("shop_one"), &format!("SELECT count(*) FROM {t}"))
                        .unwrap()
                        .trim()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            assert!(log.contains(&format!("{rows} rows loaded")), "{out}");
        }
    }
    assert_eq!(mariadb_leaks(&db, "shop_par"), "0");
    assert_eq!(
        db.sql(Some("shop_par"), "SELECT count(*) FROM events")
            .unwrap(),
        "21000"
    );
    let reference = db.fingerprint("shop_one").unwrap();
    db.fingerprint("shop_par")
        .unwrap()
        .assert_same(&reference, "chunked vs one stream");
    // `backups export` of either loads with a plain `mariadb` client into
    // the same database.
    let exported = |store: &LocalStore, copy: &str, client_flags: &[&str]| {
        let script = files.path(&format!("{copy}.sql"));
        host.run(&[
            "backups",
            "export",
            "--store",
            &store.path_arg(),
            "--plugin",
            "mysql",
            "--instance",
            INSTANCE,
            "--database",
            "shop",
            "--output",
            script.to_str().unwrap(),
        ])
        .expect_ok("export of a sanitised backup");
        db.create_database(copy).unwrap();
        let mut client = db.client();
        client.arg(format!("--database={copy}")).args(client_flags);
        let dump = std::fs::read(&script).unwrap();
        let out =
            envsync_tests::process::run(client, Some(dump), std::time::Duration::from_secs(300))
                .unwrap();
        assert!(out.success(), "mariadb < {}:\n{out}", script.display());
        db.fingerprint(copy)
            .unwrap()
            .assert_same(&reference, "the exported sanitised backup");
    };
    exported(&parallel, "shop_par_export", &[]);
    // The single stream's rows come after the schema dump's trailer: the
    // export turns the checks off before its first statement.
    exported(&one, "shop_one_export", &[]);
}

/// A chunked sanitised MariaDB backup fails as a single-stream one does
/// and leaves nothing behind: neither a manifest nor any chunk.
#[test]
fn a_failing_parallel_sanitised_mariadb_backup_publishes_nothing() {
    let host = host_with_sanitisers();
    let db = mariadb_shop_with_many_events();
    let store = LocalStore::new().unwrap();
    let files = Files::new();
    let leaky = std::fs::read_to_string(files.path("rules.toml"))
        .unwrap()
        .replacen("email = \"fake_email\"", "email = \"keep\"", 1);
    std::fs::write(files.path("leaky.toml"), leaky).unwrap();
    std::fs::write(files.path("hostile-panic.toml"), "mode = \"panic\"\n").unwrap();
    let cases: &[(&str, &str, i32, &[&str])] = &[
        (
            "sanitise",
            "leaky.toml",
            exit::STEP_FAILED,
            &[
                "residual-PII scan",
                "3000 e-mail addresses",
                "nothing was published",
            ],
        ),
        (
            "hostile",
            "hostile-panic.toml",
            exit::SANDBOX,
            &["sanitiser hostile", "crashed"],
        ),
    ];
    for (sanitiser, rules, code, phrases) in cases {
        let out = db
            .step("backup", "shop")
            .opt("--store", store.path_arg())
            .opt("--sanitiser", sanitiser)
            .opt("--rules", files.path(rules).display())
            .opt("--salt-file", files.path("salt.key").display())
            .arg("--strict")
            .opt("--allowed-email-domain", "example.com")
            .opt("--jobs", "3")
            .run(&host);
        out.expect_fail(&[*code], phrases, &format!("{sanitiser} with {rules}"));
        assert_eq!(store.pointer(INSTANCE, "shop"), None, "{rules}");
        let files = store.files();
        assert!(
            !files
                .iter()
                .any(|f| f.ends_with(".manifest.json") || f.contains("rows-")),
            "{rules}: {files:#?}"
        );
        assert!(
            store.visible_files().is_empty(),
            "{rules}: {:#?}",
            store.visible_files()
        );
    }
}
