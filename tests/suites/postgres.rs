//! PostgreSQL end to end: `envsync-host` with the postgres plugin against a
//! throwaway PostgreSQL 15 cluster and a local folder store.
//!
//! Each test starts its own cluster and store. The binaries under test come
//! from `./scripts/build.sh` (see `envsync_tests::paths`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use envsync_tests::host_cli::{Expect, Host, Step, exit, objects_with};
use envsync_tests::paths::fixture;
use envsync_tests::postgres::{HoldMode, PgCluster};
use envsync_tests::process::{Output, Running};
use envsync_tests::procs::{self, Frozen};
use envsync_tests::store::{self, LocalStore};

/// The instance (key folder) of backups: the default is the `--db-host` value.
const INSTANCE: &str = "127.0.0.1";

struct Env {
    host: Host,
    pg: PgCluster,
    store: LocalStore,
}

/// Host (checked first, to fail fast when not built), cluster, store, and the
/// sample loaded into `shop`.
fn setup() -> Env {
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    Env {
        host,
        pg,
        store: LocalStore::new().unwrap(),
    }
}

impl Env {
    fn backup_step(&self, db: &str) -> Step {
        self.pg
            .step("backup", db)
            .opt("--store", self.store.path_arg())
    }

    /// Backs `db` up, checks the pointer and manifest, returns the new key.
    #[track_caller]
    fn backup(&self, db: &str) -> String {
        self.backup_step(db)
            .run(&self.host)
            .expect_ok(&format!("backup of {db}"));
        let key = self.store.pointer(INSTANCE, db).unwrap_or_else(|| {
            panic!(
                "no pointer after the backup of {db}: {:#?}",
                self.store.files()
            )
        });
        store::check_key_layout(&key, INSTANCE, db, "pgdump").unwrap();
        self.store
            .verify_manifest(&key, "postgres")
            .unwrap_or_else(|e| panic!("{e:#}"));
        key
    }

    /// `--op restore --database target` from the store (latest of `from`).
    fn restore_step(&self, from: &str, target: &str) -> Step {
        self.pg
            .step("restore", target)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", from)
    }

    #[track_caller]
    fn assert_databases(&self, expected: &[&str]) {
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(
            self.pg.databases().unwrap(),
            expected,
            "the cluster should hold exactly these databases (no scratch or old copies left)"
        );
    }

    /// Keys listed by `backups list --json` (optionally with more flags).
    fn listed_keys(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["backups", "list", "--store"];
        let root = self.store.path_arg();
        args.push(&root);
        args.extend_from_slice(extra);
        args.push("--json");
        let out = self.host.run(&args);
        out.expect_ok("backups list --json");
        let json = out.json();
        let mut keys: Vec<String> = objects_with(&json, "key")
            .iter()
            .map(|o| {
                o["key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("key is not a string: {o}"))
                    .to_string()
            })
            .collect();
        keys.sort();
        keys
    }
}

/// True if stderr (lower-cased) contains any of `phrases`.
fn mentions_any(out: &Output, phrases: &[&str]) -> bool {
    let stderr = envsync_tests::host_cli::strip_ansi(&out.stderr).to_lowercase();
    phrases.iter().any(|p| stderr.contains(&p.to_lowercase()))
}

// 1 ---------------------------------------------------------------------------

#[test]
fn backup_then_restore_round_trip_and_restore_over_existing_database() {
    let env = setup();
    let source = env.pg.fingerprint("shop").unwrap();

    let key = env.backup("shop");
    let artifact = std::fs::read(env.store.artifact_path(&key)).unwrap();
    assert!(
        artifact.starts_with(b"PGDMP"),
        "the artifact is not a pg_dump custom-format archive"
    );
    let manifest = env.store.manifest(&key).unwrap();
    assert_eq!(manifest["size"].as_u64(), Some(artifact.len() as u64));
    let mut expected = vec![
        key.clone(),
        format!("{key}.manifest.json"),
        format!("{INSTANCE}/latest-shop.txt"),
    ];
    expected.sort();
    assert_eq!(
        env.store.visible_files(),
        expected,
        "a backup leaves the artifact, its manifest and the pointer"
    );

    // Into a new database.
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("restore into a new database");
    source.assert_same(
        &env.pg.fingerprint("shop_copy").unwrap(),
        "shop vs its restored copy",
    );
    env.assert_databases(&["shop", "shop_copy"]);

    // Over an existing, changed database (the swap), through a file:// URL,
    // with the owner reset.
    env.pg
        .psql(
            "shop_copy",
            "DELETE FROM order_items WHERE order_id = 42; \
             UPDATE customers SET name = 'changed' WHERE id = 7; \
             CREATE TABLE extra (x int); \
             SELECT setval('invoice_number_seq', 5);",
        )
        .unwrap();
    assert!(
        !source
            .differences(&env.pg.fingerprint("shop_copy").unwrap())
            .is_empty()
    );
    env.pg.psql("postgres", "CREATE ROLE app LOGIN").unwrap();
    let oid_before = env.pg.database_oid("shop_copy").unwrap();
    env.pg
        .step("restore", "shop_copy")
        .opt("--store", env.store.url())
        .opt("--from-database", "shop")
        .param("owner", "app")
        .run(&env.host)
        .expect_ok("restore over an existing database");
    source.assert_same(
        &env.pg.fingerprint("shop_copy").unwrap(),
        "shop vs the copy restored over a changed database",
    );
    assert_ne!(
        env.pg.database_oid("shop_copy").unwrap(),
        oid_before,
        "the restored database replaces the old one"
    );
    assert_eq!(env.pg.database_owner("shop_copy").unwrap(), "app");
    env.assert_databases(&["shop", "shop_copy"]);
    // The source and the store are untouched by restores.
    source.assert_same(&env.pg.fingerprint("shop").unwrap(), "shop after restores");
    assert_eq!(
        env.store.pointer(INSTANCE, "shop").as_deref(),
        Some(key.as_str())
    );
}

// 2 ---------------------------------------------------------------------------

#[test]
fn restore_terminates_sessions_connected_to_the_target() {
    let env = setup();
    let source = env.pg.fingerprint("shop").unwrap();
    env.backup("shop");
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("first restore");
    env.pg
        .psql(
            "shop_copy",
            "DELETE FROM customers WHERE id > 1900 AND id NOT IN (SELECT customer_id FROM orders)",
        )
        .unwrap();

    let mut sleeping = env.pg.hold_session("shop_copy", HoldMode::Sleep).unwrap();
    let mut idle = env
        .pg
        .hold_session(
            "shop_copy",
            HoldMode::IdleInTransaction("SELECT count(*) FROM customers".into()),
        )
        .unwrap();
    assert_eq!(env.pg.connections_to("shop_copy").unwrap(), 2);

    let started = Instant::now();
    env.restore_step("shop", "shop_copy")
        .param("swap-retries", 3)
        .run(&env.host)
        .expect_ok("restore while two sessions are connected to the target");
    let took = started.elapsed();

    assert!(
        sleeping.was_terminated(Duration::from_secs(10)),
        "the session running pg_sleep on the target was not terminated (stderr: {})",
        sleeping.stderr()
    );
    assert!(
        idle.was_terminated(Duration::from_secs(10)),
        "the session idle in a transaction on the target was not terminated (stderr: {})",
        idle.stderr()
    );
    source.assert_same(
        &env.pg.fingerprint("shop_copy").unwrap(),
        "shop vs the copy restored while sessions were connected",
    );
    env.assert_databases(&["shop", "shop_copy"]);
    assert!(took < Duration::from_secs(60), "the restore took {took:?}");
}

// 3 ---------------------------------------------------------------------------

struct BadArtifact {
    what: &'static str,
    key: String,
    bytes: Vec<u8>,
    /// Alter the manifest's sha256 after writing a consistent one.
    break_checksum: bool,
    codes: &'static [i32],
    /// stderr must mention at least one of these.
    phrases: &'static [&'static str],
}

#[test]
fn bad_artifacts_are_refused_and_leave_the_target_untouched() {
    let env = setup();
    let valid_key = env.backup("shop");
    let valid = std::fs::read(env.store.artifact_path(&valid_key)).unwrap();
    let shop = env.pg.fingerprint("shop").unwrap();

    // The live target differs from what the artifacts hold, so that any
    // replacement would show.
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("restore of the live target");
    env.pg
        .psql(
            "shop_copy",
            "INSERT INTO products (sku, title, price) VALUES ('LIVE-ONLY', 'only in the live target', 1); \
             DELETE FROM order_items WHERE order_id < 100;",
        )
        .unwrap();

    let key = |n: u32| format!("{INSTANCE}/2001-01-{n:02}T000000Z-shop.pgdump");
    let mut corrupt = valid.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 512] {
        *b ^= 0xA5;
    }
    let mysql = b"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n\
        -- Host: localhost    Database: shop\n\
        -- ------------------------------------------------------\n\
        /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
        DROP TABLE IF EXISTS `customers`;\nCREATE TABLE `customers` (`id` int NOT NULL);\n"
        .repeat(50);
    let plain_sql = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
        DROP TABLE IF EXISTS public.customers;\nCREATE TABLE public.customers (id integer);\n"
        .repeat(50);
    let cases = vec![
        BadArtifact {
            what: "corrupt (bytes flipped in the middle, manifest consistent)",
            key: key(1),
            bytes: corrupt,
            break_checksum: false,
            codes: &[exit::STEP_FAILED],
            phrases: &["pg_restore"],
        },
        BadArtifact {
            what: "truncated to half (manifest consistent)",
            key: key(2),
            bytes: valid[..valid.len() / 2].to_vec(),
            break_checksum: false,
            codes: &[exit::STEP_FAILED],
            phrases: &[
                "pg_restore",
                "truncat",
                "end of file",
                "incomplete",
                "format",
            ],
        },
        BadArtifact {
            what: "truncated to its first bytes",
            key: key(3),
            bytes: valid[..3].to_vec(),
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &[
                "pg_restore",
                "truncat",
                "end of file",
                "incomplete",
                "format",
                "short",
            ],
        },
        BadArtifact {
            what: "wrong engine (a MySQL dump)",
            key: key(4),
            bytes: mysql,
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["format", "mysql"],
        },
        BadArtifact {
            what: "wrong format (a plain SQL dump)",
            key: key(5),
            bytes: plain_sql,
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["format"],
        },
        BadArtifact {
            what: "checksum mismatch (valid artifact, manifest sha256 altered)",
            key: key(6),
            bytes: valid.clone(),
            break_checksum: true,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["checksum"],
        },
    ];

    for case in cases {
        env.store
            .put_artifact(&case.key, &case.bytes, &valid_key)
            .unwrap();
        if case.break_checksum {
            let path = env.store.manifest_path(&case.key);
            let mut m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let sha = m["sha256"].as_str().unwrap().to_string();
            let flipped = if sha.starts_with('0') { "1" } else { "0" };
            m["sha256"] = format!("{flipped}{}", &sha[1..]).into();
            std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        }
        let live = env.pg.fingerprint("shop_copy").unwrap();
        let live_oid = env.pg.database_oid("shop_copy").unwrap();

        let out = env
            .pg
            .step("restore", "shop_copy")
            .opt("--store", env.store.path_arg())
            .opt("--artifact", &case.key)
            .run(&env.host);
        eprintln!("--- {} ---\n{out}", case.what);
        assert!(
            out.code().is_some_and(|c| case.codes.contains(&c)),
            "{}: expected exit code {:?}\n{out}",
            case.what,
            case.codes
        );
        assert!(
            mentions_any(&out, case.phrases),
            "{}: stderr should mention one of {:?}\n{out}",
            case.what,
            case.phrases
        );

        assert_eq!(
            env.pg.database_oid("shop_copy").unwrap(),
            live_oid,
            "{}: the live target was replaced",
            case.what
        );
        live.assert_same(
            &env.pg.fingerprint("shop_copy").unwrap(),
            &format!("{}: the live target before vs after", case.what),
        );
        env.assert_databases(&["shop", "shop_copy"]);
    }

    // The valid artifact, named explicitly, still restores.
    env.pg
        .step("restore", "shop_copy")
        .opt("--store", env.store.path_arg())
        .opt("--artifact", &valid_key)
        .run(&env.host)
        .expect_ok("restore of the valid artifact by key");
    shop.assert_same(
        &env.pg.fingerprint("shop_copy").unwrap(),
        "shop vs the copy restored from the valid artifact",
    );
    env.assert_databases(&["shop", "shop_copy"]);
}

// 4 ---------------------------------------------------------------------------

#[test]
fn transform_applies_a_script_and_a_failing_script_changes_nothing() {
    let env = setup();
    let before = env.pg.fingerprint("shop").unwrap();
    let scripts = tempfile::tempdir().unwrap();

    let good = scripts.path().join("sanitise.sql");
    std::fs::write(
        &good,
        "-- Remove personal data.\n\
         UPDATE customers SET email = 'customer' || id || '@example.invalid', name = 'Customer ' || id, avatar = NULL;\n\
         DELETE FROM audit.events WHERE action = 'insert';\n",
    )
    .unwrap();
    env.pg
        .step("transform", "shop")
        .opt("--script", good.display())
        .run(&env.host)
        .expect_ok("transform with a good script");
    let after = env.pg.fingerprint("shop").unwrap();
    assert_eq!(after.schema, before.schema, "the script changed no schema");
    let changed: BTreeSet<&str> = after
        .tables
        .iter()
        .filter(|(name, data)| before.tables.get(*name) != Some(*data))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from(["audit.events", "public.customers"]),
        "exactly the tables the script touches change"
    );
    assert_eq!(
        env.pg
            .psql(
                "shop",
                "SELECT count(*) FROM customers WHERE email NOT LIKE '%@example.invalid' OR avatar IS NOT NULL"
            )
            .unwrap(),
        "0"
    );
    assert_eq!(
        after.tables["public.customers"].rows,
        before.tables["public.customers"].rows
    );
    assert_eq!(
        after.tables["audit.events"].rows,
        before.tables["audit.events"].rows - 5000
    );

    // Second statement fails after a first that changed data: all rolled back,
    // the third never runs.
    let bad = scripts.path().join("broken.sql");
    std::fs::write(
        &bad,
        "UPDATE products SET price = price + 1;\n\
         SELECT * FROM does_not_exist;\n\
         DELETE FROM order_items;\n",
    )
    .unwrap();
    env.pg
        .step("transform", "shop")
        .opt("--script", bad.display())
        .run(&env.host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["does_not_exist"],
            "transform with a failing second statement",
        );
    after.assert_same(
        &env.pg.fingerprint("shop").unwrap(),
        "shop before vs after the failing transform",
    );
    env.assert_databases(&["shop"]);
}

// 5 ---------------------------------------------------------------------------

#[test]
fn copy_creates_and_replaces_the_target() {
    let env = setup();
    let source = env.pg.fingerprint("shop").unwrap();

    env.pg
        .step("copy", "shop_staging")
        .opt("--source-database", "shop")
        .run(&env.host)
        .expect_ok("copy into a new database");
    source.assert_same(
        &env.pg.fingerprint("shop_staging").unwrap(),
        "shop vs its copy",
    );
    env.assert_databases(&["shop", "shop_staging"]);

    env.pg
        .psql(
            "shop_staging",
            "TRUNCATE order_items; UPDATE products SET stock = 0; DROP VIEW customer_order_summary;",
        )
        .unwrap();
    let mut session = env
        .pg
        .hold_session("shop_staging", HoldMode::Sleep)
        .unwrap();
    let oid_before = env.pg.database_oid("shop_staging").unwrap();
    env.pg
        .step("copy", "shop_staging")
        .opt("--source-database", "shop")
        .opt("--source-host", env.pg.host())
        .opt("--source-port", env.pg.port())
        .opt("--source-user", env.pg.user())
        .run(&env.host)
        .expect_ok("copy over an existing, changed database with a session on it");
    assert!(session.was_terminated(Duration::from_secs(10)));
    source.assert_same(
        &env.pg.fingerprint("shop_staging").unwrap(),
        "shop vs the copy made over an existing database",
    );
    assert_ne!(env.pg.database_oid("shop_staging").unwrap(), oid_before);
    source.assert_same(
        &env.pg.fingerprint("shop").unwrap(),
        "the source after copies",
    );
    env.assert_databases(&["shop", "shop_staging"]);
    assert!(env.store.files().is_empty(), "copy does not use the store");
}

// 6 ---------------------------------------------------------------------------

/// Adds a database big enough that its dump takes a while: ~300k rows of
/// hex text (about 40 MB raw), generated by the server.
fn create_big_database(pg: &PgCluster, name: &str) {
    pg.create_database(name).unwrap();
    pg.psql(
        name,
        "CREATE TABLE big (id integer NOT NULL, a text NOT NULL, b text);\n\
         INSERT INTO big SELECT i, md5(i::text) || md5((i * 31)::text) || md5((i * 17)::text), \
                CASE WHEN i % 10 = 0 THEN NULL ELSE md5((i * 7)::text) END \
         FROM generate_series(1, 300000) AS i;\n\
         CREATE TABLE small (k text PRIMARY KEY, v jsonb);\n\
         INSERT INTO small VALUES ('a', '{\"x\": 1}'), ('b', NULL);",
    )
    .unwrap();
}

/// Starts a backup of `db` in the background and returns once its `pg_dump`
/// is frozen (SIGSTOP) half-way: a new file has appeared in the store and
/// grown past 256 KiB. The dump is let run in short bursts so it cannot finish
/// before the test sees the partial upload, however fast the machine is.
/// Returns the running host, the frozen pg_dump and the partial file.
fn backup_frozen_half_way(env: &Env, db: &str) -> (Running, Frozen, String) {
    let before: BTreeSet<String> = env.store.files().into_iter().collect();
    let mut running = env.backup_step(db).spawn(&env.host).unwrap();
    let host_pid = running.pid() as i32;
    let dump = procs::wait_for_descendant(host_pid, "pg_dump", Duration::from_secs(300), || {
        running.has_exited().unwrap_or(true)
    });
    let Some(dump) = dump else {
        let out = running.wait_timeout(Duration::from_secs(10));
        panic!("the backup never started pg_dump\n{out}");
    };
    let frozen = Frozen::freeze(dump, "pg_dump");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first_seen: Option<u64> = None;
    loop {
        let growing = env
            .store
            .files()
            .into_iter()
            .filter(|f| !before.contains(f))
            .filter_map(|f| {
                let len = std::fs::metadata(env.store.root().join(&f)).ok()?.len();
                Some((len, f))
            })
            .max();
        if let Some((len, file)) = growing {
            match first_seen {
                Some(first) if len > first && len >= 256 * 1024 => {
                    return (running, frozen, file);
                }
                None if len > 0 => first_seen = Some(len),
                _ => {}
            }
        }
        assert!(
            procs::is_alive(dump),
            "pg_dump finished before the test could stop it half-way; files: {:#?}",
            env.store.files()
        );
        assert!(
            Instant::now() < deadline,
            "no partial artifact grew in the store while pg_dump ran; files: {:#?}",
            env.store.files()
        );
        procs::signal(dump, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(4));
        procs::signal(dump, libc::SIGSTOP);
        // Let the host write out what it has read.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_pg_dump_half_way_leaves_the_pointer_unchanged() {
    let env = setup();
    create_big_database(&env.pg, "bigdb_dumpkill");
    let first = env.backup("bigdb_dumpkill");
    let visible_before = env.store.visible_files();
    store::wait_for_next_second();

    let (mut running, dump, partial) = backup_frozen_half_way(&env, "bigdb_dumpkill");
    assert!(
        store::is_hidden(&partial),
        "the unfinished upload {partial:?} is not hidden"
    );
    dump.kill();
    let out = running.wait_timeout(Duration::from_secs(60));
    out.expect_fail(
        &[exit::STEP_FAILED],
        &["pg_dump"],
        "backup whose pg_dump was killed",
    );

    assert_eq!(
        env.store.pointer(INSTANCE, "bigdb_dumpkill").as_deref(),
        Some(first.as_str()),
        "the pointer moved"
    );
    assert_eq!(
        env.store.visible_files(),
        visible_before,
        "a failed backup left a visible artifact or manifest (hidden leftovers: {:#?})",
        env.store.hidden_files()
    );
    assert_eq!(env.listed_keys(&[]), vec![first.clone()]);
}

#[test]
fn killing_the_host_half_way_leaves_the_pointer_unchanged_and_the_next_backup_works() {
    // The pg_dump orphaned by killing the host becomes our child and is reaped.
    procs::become_subreaper();
    let env = setup();
    create_big_database(&env.pg, "bigdb_hostkill");
    let first = env.backup("bigdb_hostkill");
    let visible_before = env.store.visible_files();
    store::wait_for_next_second();

    let (mut running, dump, _partial) = backup_frozen_half_way(&env, "bigdb_hostkill");
    let host_pid = running.pid() as i32;
    let mut stray = procs::descendants_of(host_pid);
    if !stray.contains(&dump.pid()) {
        stray.push(dump.pid());
    }
    running.signal(libc::SIGKILL);
    let out = running.wait_timeout(Duration::from_secs(30));
    assert!(!out.success(), "the killed host reported success\n{out}");
    for pid in stray {
        procs::signal(pid, libc::SIGKILL);
        procs::signal(pid, libc::SIGCONT);
        procs::reap(pid, Duration::from_secs(10));
    }

    assert_eq!(
        env.store.pointer(INSTANCE, "bigdb_hostkill").as_deref(),
        Some(first.as_str()),
        "the pointer moved"
    );
    assert_eq!(
        env.store.visible_files(),
        visible_before,
        "a killed backup left a visible artifact or manifest (hidden leftovers: {:#?})",
        env.store.hidden_files()
    );
    assert_eq!(env.listed_keys(&[]), vec![first.clone()]);

    // The leftovers of the killed run do not get in the way.
    store::wait_for_next_second();
    let second = env.backup("bigdb_hostkill");
    assert_ne!(second, first, "the pointer did not move");
    assert_eq!(env.listed_keys(&[]), vec![first, second.clone()]);

    // And it is a complete backup.
    env.pg
        .step("restore", "bigdb_restored")
        .opt("--store", env.store.path_arg())
        .opt("--from-database", "bigdb_hostkill")
        .run(&env.host)
        .expect_ok("restore of the backup made after the kill");
    env.pg.fingerprint("bigdb_hostkill").unwrap().assert_same(
        &env.pg.fingerprint("bigdb_restored").unwrap(),
        "the big database vs its restored copy",
    );
}

// 7 ---------------------------------------------------------------------------

#[test]
fn backups_list_and_which_backup_a_restore_picks() {
    let env = setup();
    let state_a = env.pg.fingerprint("shop").unwrap();
    let first = env.backup("shop");

    env.pg
        .psql(
            "shop",
            "UPDATE products SET stock = 0 WHERE id <= 10; SELECT setval('invoice_number_seq', 500000);",
        )
        .unwrap();
    let state_b = env.pg.fingerprint("shop").unwrap();
    assert!(!state_a.differences(&state_b).is_empty());
    store::wait_for_next_second();
    let second = env.backup("shop");
    assert!(second > first, "keys sort by time: {first} then {second}");

    // JSON listing: every artifact with key, size and sha256.
    let out = env.host.run(&[
        "backups",
        "list",
        "--store",
        &env.store.path_arg(),
        "--json",
    ]);
    out.expect_ok("backups list --json");
    let json = out.json();
    let entries = objects_with(&json, "key");
    let keys: BTreeSet<&str> = entries.iter().filter_map(|e| e["key"].as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([first.as_str(), second.as_str()]),
        "{out}"
    );
    for entry in &entries {
        let key = entry["key"].as_str().unwrap();
        let path = env.store.artifact_path(key);
        assert_eq!(
            entry["size"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len()),
            "size of {key}: {entry}"
        );
        // Top level, or in the manifest the entry carries.
        let sha = entry["sha256"]
            .as_str()
            .or_else(|| entry["manifest"]["sha256"].as_str());
        assert_eq!(
            sha,
            Some(store::sha256_file(&path).unwrap().as_str()),
            "sha256 of {key}: {entry}"
        );
    }

    // Filters and the human listing.
    assert_eq!(
        env.listed_keys(&["--instance", INSTANCE, "--database", "shop"]),
        vec![first.clone(), second.clone()]
    );
    assert!(env.listed_keys(&["--database", "nothing"]).is_empty());
    assert!(env.listed_keys(&["--instance", "elsewhere"]).is_empty());
    let human = env
        .host
        .run(&["backups", "list", "--store", &env.store.path_arg()]);
    human.expect_ok("backups list");
    assert!(
        human.stdout.contains(&first) && human.stdout.contains(&second),
        "{human}"
    );

    // A backup under another instance name.
    store::wait_for_next_second();
    env.backup_step("shop")
        .opt("--instance", "prod-a")
        .run(&env.host)
        .expect_ok("backup with --instance");
    let other = env
        .store
        .pointer("prod-a", "shop")
        .expect("pointer of prod-a");
    store::check_key_layout(&other, "prod-a", "shop", "pgdump").unwrap();
    assert_eq!(
        env.listed_keys(&["--instance", "prod-a"]),
        vec![other.clone()]
    );

    // Restore picks: the pointer, else an explicit key, else the newest key.
    env.restore_step("shop", "copy_latest")
        .run(&env.host)
        .expect_ok("restore of the latest backup");
    state_b.assert_same(
        &env.pg.fingerprint("copy_latest").unwrap(),
        "the latest backup",
    );
    env.pg
        .step("restore", "copy_first")
        .opt("--store", env.store.path_arg())
        .opt("--artifact", &first)
        .run(&env.host)
        .expect_ok("restore of an explicit key");
    state_a.assert_same(
        &env.pg.fingerprint("copy_first").unwrap(),
        "the first backup",
    );
    env.pg
        .step("restore", "copy_prod_a")
        .opt("--store", env.store.path_arg())
        .opt("--from-instance", "prod-a")
        .opt("--from-database", "shop")
        .run(&env.host)
        .expect_ok("restore with --from-instance");
    state_b.assert_same(
        &env.pg.fingerprint("copy_prod_a").unwrap(),
        "the backup under prod-a",
    );
    std::fs::remove_file(env.store.pointer_path(INSTANCE, "shop")).unwrap();
    env.restore_step("shop", "copy_newest")
        .run(&env.host)
        .expect_ok("restore without a pointer (newest key)");
    state_b.assert_same(
        &env.pg.fingerprint("copy_newest").unwrap(),
        "the newest backup by name",
    );

    // Nothing to restore.
    env.restore_step("nothing", "copy_nothing")
        .run(&env.host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["nothing"],
            "restore when there is no backup",
        );
    assert!(!env.pg.database_exists("copy_nothing").unwrap());
}

#[test]
fn plugins_list_and_inspect_show_postgres_and_its_programs() {
    let host = Host::built();
    let out = host.run(&["plugins", "list", "--json"]);
    out.expect_ok("plugins list --json");
    let json = out.json();
    let postgres = objects_with(&json, "name")
        .into_iter()
        .find(|o| o["name"] == "postgres")
        .unwrap_or_else(|| panic!("postgres is not listed\n{out}"));
    let text = postgres.to_string();
    for needle in [
        "pg_dump",
        "pg_restore",
        "psql",
        "backup",
        "restore",
        "transform",
        "copy",
        ".wasm",
    ] {
        assert!(
            text.contains(needle),
            "postgres entry lacks {needle}: {text}"
        );
    }
    assert!(
        postgres["version"].as_str().is_some_and(|v| !v.is_empty()),
        "no version: {text}"
    );

    let human = host.run(&["plugins", "list"]);
    human.expect_ok("plugins list");
    assert!(
        human.stdout.contains("postgres") && human.stdout.contains("pg_dump"),
        "{human}"
    );

    let inspect = host.run(&["plugins", "inspect", "postgres", "--json"]);
    inspect.expect_ok("plugins inspect postgres --json");
    let text = inspect.json().to_string();
    assert!(
        text.contains("postgres") && text.contains("pg_restore"),
        "{inspect}"
    );
    host.run(&["plugins", "inspect", "postgres"])
        .expect_ok("plugins inspect postgres");
}

#[test]
fn unknown_plugins_and_bad_usage_have_their_exit_codes() {
    let host = Host::built();
    host.run(&["plugins", "inspect", "no-such-plugin"])
        .expect_fail(
            &[exit::PLUGIN],
            &["no-such-plugin"],
            "inspect of an unknown plugin",
        );
    let store = LocalStore::new().unwrap();
    Step::new("no-such-plugin", "backup")
        .opt("--database", "shop")
        .opt("--db-host", "127.0.0.1")
        .opt("--db-port", 1)
        .opt("--db-user", "postgres")
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_fail(
            &[exit::PLUGIN],
            &["no-such-plugin"],
            "run with an unknown plugin",
        );
    Step::new("postgres", "frobnicate")
        .opt("--database", "shop")
        .run(&host)
        .expect_fail(&[exit::USAGE], &["frobnicate"], "run with an unknown op");
    // The same error as JSON log lines, for machines.
    let out = host.run(&[
        "--log-format",
        "json",
        "plugins",
        "inspect",
        "no-such-plugin",
    ]);
    out.expect_fail(
        &[exit::PLUGIN],
        &["no-such-plugin"],
        "inspect of an unknown plugin, JSON logs",
    );
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "a log line is not JSON: {line:?}\n{out}"
        );
    }
    host.run(&["no-such-command"]).expect_fail(
        &[exit::USAGE],
        &["no-such-command"],
        "unknown command",
    );
}

#[test]
fn a_broken_plugin_file_is_reported_and_hides_no_other() {
    let host = Host::built();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(host.plugin_dir()).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, dir.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("broken.wasm"),
        b"\0asm\x0d\0\x01\0 not a component",
    )
    .unwrap();
    let host = host.with_plugin_dir(dir.path());

    let out = host.run(&["plugins", "list"]);
    assert!(
        out.stdout.contains("postgres"),
        "the broken file hid the postgres plugin\n{out}"
    );
    assert!(
        out.stdout.contains("broken") || out.stderr.contains("broken"),
        "the broken file is not reported\n{out}"
    );
    host.run(&["plugins", "inspect", "postgres"])
        .expect_ok("inspect postgres beside a broken file");
}

// Credentials -------------------------------------------------------------------

/// The password reaches pg_dump through the host (flag file, ENVSYNC_DB_PASSWORD
/// or the standard PGPASSWORD), never through the plugin: it appears nowhere in
/// what the host and plugin log, even at trace level.
#[test]
fn credentials_are_injected_by_the_host_and_never_logged() {
    let env = setup();
    let password = "pa55-wörd with spaces & 'quotes'";
    env.pg.require_password("backup_agent", password).unwrap();
    let step = || {
        Step::new("postgres", "backup")
            .opt("--database", "shop")
            .opt("--db-host", env.pg.host())
            .opt("--db-port", env.pg.port())
            .opt("--db-user", "backup_agent")
            .opt("--store", env.store.path_arg())
            .arg("-vv")
    };

    // Without a password the server refuses pg_dump, and the message says so.
    step().run(&env.host).expect_fail(
        &[exit::STEP_FAILED],
        &["pg_dump", "password"],
        "no password",
    );

    let secret_file = env
        .store
        .root()
        .join("..")
        .join(format!("pw-{}", std::process::id()));
    std::fs::write(&secret_file, format!("{password}\n")).unwrap();
    let with_file = step()
        .opt("--db-password-file", secret_file.display())
        .run(&env.host);
    std::fs::remove_file(&secret_file).unwrap();
    with_file.expect_ok("password from --db-password-file");

    let mut cmd = env.host.command(step().args());
    cmd.env("ENVSYNC_DB_PASSWORD", password);
    let with_env = env.host.run_command(cmd);
    with_env.expect_ok("password from ENVSYNC_DB_PASSWORD");

    let mut cmd = env.host.command(step().args());
    cmd.env("PGPASSWORD", password);
    let with_pgpassword = env.host.run_command(cmd);
    with_pgpassword.expect_ok("password from PGPASSWORD (passed through)");

    for out in [&with_file, &with_env, &with_pgpassword] {
        assert!(
            !out.stderr.contains(password) && !out.stdout.contains(password),
            "the password leaked into the output:\n{out}"
        );
    }
}

// 12 --------------------------------------------------------------------------

#[test]
fn plain_dumps_restore_through_psql_and_their_meta_commands_never_run() {
    let env = setup();
    let shop = env.pg.fingerprint("shop").unwrap();
    // A stored backup whose manifest the plain artifacts borrow.
    let template = env.backup("shop");
    let dump = envsync_tests::process::run(
        {
            let mut cmd = env.pg.client("pg_dump");
            cmd.args(["-Fp", "--no-owner", "shop"]);
            cmd
        },
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(dump.success(), "pg_dump -Fp failed: {}", dump.stderr);
    let plain = dump.stdout;
    assert!(
        plain.contains("\\restrict "),
        "pg_dump 15.14+ restricts meta-commands"
    );

    // A plain dump (what a sanitised backup stores) restores like an archive.
    let key = format!("{INSTANCE}/2001-02-01T000000Z-shop.sql");
    env.store
        .put_artifact(&key, plain.as_bytes(), &template)
        .unwrap();
    env.pg
        .step("restore", "shop_plain")
        .opt("--store", env.store.path_arg())
        .opt("--artifact", &key)
        .run(&env.host)
        .expect_ok("restore of a plain dump");
    shop.assert_same(
        &env.pg.fingerprint("shop_plain").unwrap(),
        "shop vs its plain dump restored",
    );
    env.assert_databases(&["shop", "shop_plain"]);

    // A tampered artifact that would run a shell command through psql.
    let marker = env.pg.dir().join("meta-command-ran");
    let evil = format!("\\! touch {}\n", marker.display());
    let cut = plain.find("SET ").unwrap();
    let tampered = format!("{}{evil}{}{evil}", &plain[..cut], &plain[cut..]);
    let key = format!("{INSTANCE}/2001-02-02T000000Z-shop.sql");
    env.store
        .put_artifact(&key, tampered.as_bytes(), &template)
        .unwrap();
    let oid = env.pg.database_oid("shop_plain").unwrap();
    let out = env
        .pg
        .step("restore", "shop_plain")
        .opt("--store", env.store.path_arg())
        .opt("--artifact", &key)
        .run(&env.host);
    assert_eq!(out.code(), Some(exit::STEP_FAILED), "{out}");
    assert!(mentions_any(&out, &["restricted"]), "{out}");
    assert!(!marker.exists(), "the artifact's \\! command ran\n{out}");
    assert_eq!(env.pg.database_oid("shop_plain").unwrap(), oid);
    shop.assert_same(
        &env.pg.fingerprint("shop_plain").unwrap(),
        "the target after the refused artifact",
    );
    env.assert_databases(&["shop", "shop_plain"]);
}
