//! Drop-in datastores: a plugin is a `.wasm` file in the plugin folder and
//! nothing else. The SQLite plugin (built on the plugin SDK alone) is copied
//! into an empty folder and runs a backup → local folder store → restore
//! round trip, refuses wrong and damaged artifacts without touching the
//! target, runs transforms in one transaction and copies databases; the host
//! never mentions SQLite; a plugin built against an unknown contract version
//! is refused with a message naming the versions the host supports.
//!
//! The databases are made and read with the `sqlite3` program. The binaries
//! under test come from `./scripts/build.sh` (see `envsync_tests::paths`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use envsync_host::runtime::SUPPORTED_CONTRACTS;
use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::paths;
use envsync_tests::process::{self, Output};
use envsync_tests::store::{self, LocalStore};

/// The instance (key folder) of backups without `--db-host`.
const INSTANCE: &str = "localhost";
/// The extension of stored artifacts: the plugin's, plus the host's zstd.
const EXT: &str = "sqlite.sql.zst";

/// Tables with an AUTOINCREMENT key and a foreign key, an index, a unique
/// constraint, a view, a trigger that writes, BLOBs (random, with NUL bytes,
/// empty), NULLs, reals, and text with quotes, newlines and non-ASCII.
const SAMPLE: &str = "
PRAGMA foreign_keys=ON;
CREATE TABLE customers(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT UNIQUE,
  avatar BLOB,
  balance REAL
);
CREATE TABLE orders(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  total NUMERIC,
  note TEXT
);
CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT NOT NULL, payload BLOB);
CREATE INDEX orders_by_customer ON orders(customer_id, total);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE TRIGGER audit_orders AFTER INSERT ON orders BEGIN
  INSERT INTO audit(what, payload) VALUES ('order ' || NEW.id, zeroblob(4));
END;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO customers
  SELECT i, 'Kundé ' || i || ' 🧹 it''s' || char(10) || 'two lines',
         'c' || i || '@example.com', randomblob(24), i * 1.25 FROM n;
UPDATE customers SET avatar = x'00ff00fe' WHERE id = 1;
UPDATE customers SET avatar = x'' WHERE id = 2;
UPDATE customers SET avatar = NULL, email = NULL WHERE id = 3;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
INSERT INTO orders(customer_id, total, note)
  SELECT (i % 300) + 1, i * 0.75, CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || i END FROM n;
";

struct Env {
    host: Host,
    /// The plugin folder: sqlite.wasm and nothing else.
    _plugins: tempfile::TempDir,
    /// The database files (the plugin's `directory` parameter).
    data: tempfile::TempDir,
    store: LocalStore,
}

/// The built sqlite plugin.
fn sqlite_wasm() -> PathBuf {
    let path = paths::target_dir().join("plugins").join("sqlite.wasm");
    assert!(
        path.is_file(),
        "{} missing: run ./scripts/build.sh first",
        path.display()
    );
    path
}

/// A host whose plugin folder holds only a copy of sqlite.wasm, an empty
/// data folder with `shop.db` made from [`SAMPLE`], and an empty store.
fn setup() -> Env {
    let built = Host::built();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(sqlite_wasm(), plugins.path().join("sqlite.wasm")).unwrap();
    let env = Env {
        host: built.with_plugin_dir(plugins.path()),
        _plugins: plugins,
        data: tempfile::tempdir().unwrap(),
        store: LocalStore::new().unwrap(),
    };
    sqlite3(&env.db("shop.db"), SAMPLE);
    env
}

/// Runs `sql` with the sqlite3 program on `db` (created if missing) and
/// returns what it printed.
#[track_caller]
fn sqlite3(db: &Path, sql: &str) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.args(["-bail", "-batch", "-init", "/dev/null"]).arg(db);
    let out = process::run(cmd, Some(sql.as_bytes().to_vec()), Duration::from_secs(60))
        .expect("run sqlite3 (installed by scripts/setup.sh)");
    assert!(out.success(), "sqlite3 {} failed\n{out}", db.display());
    out.stdout
}

/// `sqlite3 DB .dump`: everything the database holds, as SQL.
#[track_caller]
fn dump(db: &Path) -> String {
    let dump = sqlite3(db, ".dump\n");
    assert!(
        dump.ends_with("COMMIT;\n"),
        "incomplete dump of {}",
        db.display()
    );
    dump
}

impl Env {
    fn db(&self, name: &str) -> PathBuf {
        self.data.path().join(name)
    }

    fn step(&self, op: &str, database: &str) -> Step {
        Step::new("sqlite", op)
            .opt("--database", database)
            .param("directory", self.data.path().display())
    }

    fn backup_step(&self, database: &str) -> Step {
        self.step("backup", database)
            .opt("--store", self.store.path_arg())
    }

    /// Backs `database` up, checks the pointer, key and manifest, returns the key.
    #[track_caller]
    fn backup(&self, database: &str) -> String {
        self.backup_step(database)
            .run(&self.host)
            .expect_ok(&format!("backup of {database}"));
        let key = self
            .store
            .pointer(INSTANCE, database)
            .unwrap_or_else(|| panic!("no pointer: {:#?}", self.store.files()));
        store::check_key_layout(&key, INSTANCE, database, EXT).unwrap();
        self.store
            .verify_manifest(&key, "sqlite")
            .unwrap_or_else(|e| panic!("{e:#}"));
        key
    }

    fn restore_step(&self, from: &str, target: &str) -> Step {
        self.step("restore", target)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", from)
    }

    /// The files in the data folder, sorted: no scratch file may be left.
    fn data_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[track_caller]
    fn assert_data_files(&self, expected: &[&str]) {
        assert_eq!(
            self.data_files(),
            expected,
            "the data folder should hold exactly these files (no scratch file left)"
        );
    }

    /// Runs `step` expecting failure, and checks that `target` is
    /// byte-identical afterwards.
    #[track_caller]
    fn expect_unchanged(
        &self,
        step: Step,
        target: &str,
        codes: &[i32],
        phrases: &[&str],
        what: &str,
    ) -> Output {
        let before = std::fs::read(self.db(target)).unwrap();
        let out = step.run(&self.host);
        out.expect_fail(codes, phrases, what);
        let after = std::fs::read(self.db(target)).unwrap();
        assert!(before == after, "{what}: {target} changed\n{out}");
        out
    }
}

// 1 ---------------------------------------------------------------------------

#[test]
fn a_plugin_folder_with_sqlite_wasm_is_all_it_takes_and_a_round_trip_keeps_every_object() {
    let env = setup();

    let listed = env.host.run(&["plugins", "list", "--json"]);
    listed.expect_ok("plugins list");
    let json = listed.json();
    let names: Vec<&str> = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sqlite"], "{json:#}");
    assert_eq!(json["broken"].as_array().unwrap().len(), 0, "{json:#}");
    let inspect = env.host.run(&["plugins", "inspect", "sqlite", "--json"]);
    inspect.expect_ok("plugins inspect sqlite");
    let info = inspect.json();
    assert_eq!(
        info["programs"],
        serde_json::json!(["sqlite3", "mv", "rm"]),
        "{info:#}"
    );
    assert_eq!(info["artifact"]["format"], "sqlite-sql", "{info:#}");
    let params: Vec<&str> = info["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"directory"), "{info:#}");

    let original = dump(&env.db("shop.db"));
    for needle in [
        "CREATE INDEX orders_by_customer",
        "CREATE TRIGGER audit_orders",
        "CREATE VIEW big_orders",
        "X'00ff00fe'",
        "sqlite_sequence",
    ] {
        assert!(original.contains(needle), "the sample lacks {needle}");
    }

    let key = env.backup("shop.db");
    let manifest = env.store.manifest(&key).unwrap();
    assert_eq!(manifest["format"], "sqlite-sql", "{manifest:#}");
    assert_eq!(manifest["compression"], "zstd", "{manifest:#}");

    // Into a new file.
    env.restore_step("shop.db", "restored.db")
        .run(&env.host)
        .expect_ok("restore into a new file");
    assert_eq!(
        dump(&env.db("restored.db")),
        original,
        "restored vs original"
    );
    assert_eq!(
        sqlite3(&env.db("restored.db"), "PRAGMA integrity_check;\n"),
        "ok\n"
    );

    // Over an existing database that holds something else.
    sqlite3(
        &env.db("restored.db"),
        "DELETE FROM orders; DROP VIEW big_orders; CREATE TABLE extra(x); INSERT INTO extra VALUES (1);",
    );
    env.restore_step("shop.db", "restored.db")
        .run(&env.host)
        .expect_ok("restore over an existing database");
    assert_eq!(
        dump(&env.db("restored.db")),
        original,
        "restored again vs original"
    );
    env.assert_data_files(&["restored.db", "shop.db"]);

    // The source was only read.
    assert_eq!(dump(&env.db("shop.db")), original);
}

// 2 ---------------------------------------------------------------------------

#[test]
fn wrong_and_damaged_artifacts_leave_the_target_byte_identical() {
    let env = setup();
    // Stored as written, so the test can make bad artifacts from it.
    env.backup_step("shop.db")
        .opt("--compression", "none")
        .run(&env.host)
        .expect_ok("backup");
    let good_key = env.store.pointer(INSTANCE, "shop.db").unwrap();
    let good = std::fs::read(env.store.artifact_path(&good_key)).unwrap();
    assert!(good.len() > 16 * 1024, "the dump is large enough to cut");
    sqlite3(&env.db("target.db"), SAMPLE);
    sqlite3(
        &env.db("target.db"),
        "UPDATE customers SET name = 'target';",
    );
    let text = String::from_utf8(good.clone()).unwrap();
    let middle = text[..text.len() / 2].rfind('\n').unwrap() + 1;

    let mysql = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n\
                 /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
        .repeat(100);
    // (what, artifact, exit codes, phrases the error has)
    type Case = (
        &'static str,
        Vec<u8>,
        &'static [i32],
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "a MariaDB dump",
            mysql.into_bytes(),
            &[exit::ARTIFACT_REJECTED],
            &["--plugin mysql", "target.db was not changed"],
        ),
        (
            "an SQLite database file",
            std::fs::read(env.db("shop.db")).unwrap(),
            &[exit::ARTIFACT_REJECTED],
            &["database file, not a dump"],
        ),
        (
            "a dump cut in the middle",
            good[..middle].to_vec(),
            &[exit::ARTIFACT_REJECTED],
            &["truncated"],
        ),
        (
            "a dump with a failing statement",
            format!(
                "{}INSERT INTO no_such_table VALUES (1);\n{}",
                &text[..middle],
                &text[middle..]
            )
            .into_bytes(),
            &[exit::STEP_FAILED],
            &["no_such_table", "left unchanged"],
        ),
    ];
    for (day, (what, bytes, codes, phrases)) in cases.into_iter().enumerate() {
        let key = good_key.replacen(
            &good_key[INSTANCE.len() + 1..INSTANCE.len() + 11],
            &format!("2001-01-{:02}", day + 1),
            1,
        );
        env.store.put_artifact(&key, &bytes, &good_key).unwrap();
        let name = key.rsplit('/').next().unwrap();
        env.expect_unchanged(
            env.restore_step("shop.db", "target.db")
                .opt("--artifact", name),
            "target.db",
            codes,
            phrases,
            what,
        );
        env.assert_data_files(&["shop.db", "target.db"]);
    }

    // Bytes changed after the backup (a hex digit of a BLOB, so the SQL
    // still loads): the manifest's checksum catches it before the swap.
    let damaged_key = good_key.replacen(
        &good_key[INSTANCE.len() + 1..INSTANCE.len() + 11],
        "2001-02-01",
        1,
    );
    env.store
        .put_artifact(&damaged_key, &good, &good_key)
        .unwrap();
    let mut damaged = good.clone();
    let at = middle + text[middle..].find("X'").unwrap() + 2;
    damaged[at] = if damaged[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(env.store.artifact_path(&damaged_key), &damaged).unwrap();
    env.expect_unchanged(
        env.restore_step("shop.db", "target.db")
            .opt("--artifact", damaged_key.rsplit('/').next().unwrap()),
        "target.db",
        &[exit::ARTIFACT_REJECTED],
        &["checksum", "left unchanged"],
        "damaged bytes",
    );
    env.assert_data_files(&["shop.db", "target.db"]);

    // A file that is not a database is never replaced.
    std::fs::write(env.db("notes.db"), "not a database\n").unwrap();
    env.expect_unchanged(
        env.restore_step("shop.db", "notes.db"),
        "notes.db",
        &[exit::USAGE],
        &["not an SQLite database"],
        "a target that is not a database",
    );
    env.assert_data_files(&["notes.db", "shop.db", "target.db"]);

    // The good artifact still restores.
    env.restore_step("shop.db", "target.db")
        .opt("--artifact", good_key.rsplit('/').next().unwrap())
        .run(&env.host)
        .expect_ok("restore of the good artifact");
    assert_eq!(dump(&env.db("target.db")), dump(&env.db("shop.db")));
}

// 3 ---------------------------------------------------------------------------

#[test]
fn transform_commits_a_good_script_and_a_failing_script_changes_nothing() {
    let env = setup();
    let scripts = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        let path = scripts.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };

    let failing = [
        (
            "a failing second statement",
            "UPDATE customers SET email = NULL;\nSELECT * FROM does_not_exist;\nDELETE FROM orders;\n",
            "does_not_exist",
        ),
        (
            "a .quit in the middle",
            "UPDATE customers SET email = NULL;\n.quit\nDELETE FROM orders;\n",
            ".quit",
        ),
        (
            "a shell command",
            "UPDATE customers SET email = NULL;\n.shell touch /tmp/envsync-sqlite-should-not-exist\n",
            "safe mode",
        ),
        (
            "an ATTACH",
            "ATTACH '/tmp/envsync-sqlite-attached.db' AS other;\nUPDATE customers SET email = NULL;\n",
            "ATTACH",
        ),
        (
            "its own BEGIN",
            "BEGIN;\nUPDATE customers SET email = NULL;\nCOMMIT;\n",
            "transaction",
        ),
        (
            "a constraint violation at the end",
            "UPDATE customers SET email = NULL;\nUPDATE customers SET name = NULL WHERE id = 5;\n",
            "NOT NULL",
        ),
        (
            "an unterminated last statement",
            "UPDATE customers SET email = NULL;\nUPDATE customers SET name = 'x",
            "rolled back",
        ),
    ];
    for (what, text, phrase) in failing {
        let path = script("broken.sql", text);
        env.expect_unchanged(
            env.step("transform", "shop.db").opt("--script", &path),
            "shop.db",
            &[exit::STEP_FAILED],
            &[phrase, "rolled back", "unchanged"],
            what,
        );
    }
    assert!(!Path::new("/tmp/envsync-sqlite-should-not-exist").exists());
    assert!(!Path::new("/tmp/envsync-sqlite-attached.db").exists());
    env.assert_data_files(&["shop.db"]);

    let good = script(
        "sanitise.sql",
        "-- Remove personal data. 🧹\n\
         UPDATE customers SET email = 'customer' || id || '@example.invalid', avatar = NULL;\n\
         DELETE FROM audit WHERE id > 10;\n\
         INSERT INTO orders(customer_id, total) VALUES (1, 1000)",
    );
    env.step("transform", "shop.db")
        .opt("--script", &good)
        .run(&env.host)
        .expect_ok("transform with a good script");
    let db = env.db("shop.db");
    assert_eq!(
        sqlite3(
            &db,
            "SELECT count(*) FROM customers WHERE email NOT LIKE '%@example.invalid' OR avatar IS NOT NULL;"
        ),
        "0\n"
    );
    // Ten audit rows kept, plus the one the trigger wrote for the new order.
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM audit;"), "11\n");
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM orders;"), "401\n");

    // A database that does not exist is not created.
    env.step("transform", "missing.db")
        .opt("--script", &good)
        .run(&env.host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["unable to open"],
            "transform of a missing database",
        );
    env.assert_data_files(&["shop.db"]);
}

// 4 ---------------------------------------------------------------------------

#[test]
fn copy_creates_and_replaces_the_target() {
    let env = setup();
    let copy = |target: &str| {
        env.step("copy", target)
            .opt("--source-database", "shop.db")
            .run(&env.host)
    };
    copy("copy.db").expect_ok("copy into a new file");
    assert_eq!(dump(&env.db("copy.db")), dump(&env.db("shop.db")));

    sqlite3(
        &env.db("shop.db"),
        "INSERT INTO orders(customer_id, total) VALUES (7, 7);",
    );
    sqlite3(
        &env.db("copy.db"),
        "PRAGMA journal_mode=WAL; CREATE TABLE extra(x);",
    );
    copy("copy.db").expect_ok("copy over an existing database in WAL mode");
    assert_eq!(dump(&env.db("copy.db")), dump(&env.db("shop.db")));
    assert_eq!(
        sqlite3(&env.db("copy.db"), "PRAGMA journal_mode;"),
        "wal\n",
        "the target keeps its journal mode"
    );
    env.assert_data_files(&["copy.db", "shop.db"]);

    // A missing source fails and leaves the target as it was.
    env.expect_unchanged(
        env.step("copy", "copy.db")
            .opt("--source-database", "missing.db"),
        "copy.db",
        &[exit::STEP_FAILED],
        &["unable to open", "left unchanged"],
        "copy from a missing source",
    );
    env.assert_data_files(&["copy.db", "shop.db"]);
}

// 5 ---------------------------------------------------------------------------

#[test]
fn no_host_code_mentions_sqlite() {
    let host = paths::workspace_root().join("host");
    let mut files = vec![host.join("Cargo.toml")];
    let mut dirs = vec![host.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.len() > 10,
        "host sources not found under {}",
        host.display()
    );
    let mut hits = Vec::new();
    // Programs' confinement policies are data the host ships for every
    // program plugins commonly run (programs.toml, docs/security.md), the
    // sqlite3 shell among them; no host code knows the engine.
    files.retain(|f| !f.ends_with("capabilities/programs.toml"));
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for (n, line) in text.lines().enumerate() {
            if line.to_lowercase().contains("sqlite") {
                hits.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the host must not know about SQLite (it is a drop-in plugin), but mentions it:\n{}",
        hits.join("\n")
    );
}

// 6 ---------------------------------------------------------------------------

#[test]
fn a_plugin_built_for_an_unknown_contract_version_is_refused_naming_the_supported_ones() {
    let future = paths::target_dir()
        .join("test-plugins")
        .join("future-contract.wasm");
    assert!(
        future.is_file(),
        "{} missing: run ./scripts/build.sh first",
        future.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&future, dir.path().join("future.wasm")).unwrap();
    std::fs::copy(sqlite_wasm(), dir.path().join("sqlite.wasm")).unwrap();
    let host = Host::built().with_plugin_dir(dir.path());

    let out = host.run(&["plugins", "list", "--json"]);
    out.expect_ok("plugins list");
    let json = out.json();
    let names: Vec<&str> = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sqlite"], "the other plugin still loads: {json:#}");
    let broken = json["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 1, "{json:#}");
    assert!(broken[0]["file"].as_str().unwrap().ends_with("future.wasm"));
    let reason = broken[0]["error"].as_str().unwrap();
    assert!(reason.contains("envsync:plugin@0.4.0"), "{reason}");
    assert!(!SUPPORTED_CONTRACTS.is_empty());
    for version in SUPPORTED_CONTRACTS {
        assert!(
            reason.contains(&format!("envsync:plugin@{version}")),
            "the refusal should name supported version {version}: {reason}"
        );
    }

    // Asking for a plugin shows the refusal too.
    host.run(&["plugins", "inspect", "future"]).expect_fail(
        &[exit::PLUGIN],
        &["future.wasm", "envsync:plugin@0.4.0", "supports"],
        "inspect a plugin that is not there",
    );
}
