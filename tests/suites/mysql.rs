//! MySQL/MariaDB end to end: `envsync-host` with the mysql plugin against a
//! throwaway MariaDB server and a local folder store.
//!
//! Each test starts its own server and store. The binaries under test come
//! from `./scripts/build.sh` (see `envsync_tests::paths`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envsync_tests::host_cli::{Expect, Host, Step, exit, objects_with, strip_ansi};
use envsync_tests::mariadb::{Answer, Fingerprint, MariaDb};
use envsync_tests::paths::fixture;
use envsync_tests::process::Output;
use envsync_tests::store::{self, LocalStore};

/// The instance (key folder) of backups: the default is the `--db-host` value.
const INSTANCE: &str = "127.0.0.1";

struct Env {
    host: Host,
    db: MariaDb,
    store: LocalStore,
}

/// Host (checked first, to fail fast when not built), server, store, and the
/// sample loaded into `shop`.
fn setup() -> Env {
    let host = Host::built();
    let db = MariaDb::start().expect("start a throwaway MariaDB server");
    db.create_database("shop").unwrap();
    db.load_sql_file("shop", &fixture("mysql/sample.sql"))
        .unwrap();
    Env {
        host,
        db,
        store: LocalStore::new().unwrap(),
    }
}

impl Env {
    fn backup_step(&self, db: &str) -> Step {
        self.db
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
        let manifest = self
            .store
            .verify_manifest(&key, "mysql")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let ext = format!("sql{}", Codec::of(&manifest).suffix());
        store::check_key_layout(&key, INSTANCE, db, &ext).unwrap();
        key
    }

    /// The dump the plugin wrote as artifact `key` (the stored bytes,
    /// decompressed if the host compressed them).
    fn dump_of(&self, key: &str) -> Vec<u8> {
        let stored = std::fs::read(self.store.artifact_path(key)).unwrap();
        Codec::of(&self.store.manifest(key).unwrap()).decode(&stored)
    }

    /// Stores `dump` as an artifact named like `template` but dated
    /// 2001-01-`day`, stored the way the host stored `template` (compressed
    /// alike), with a consistent manifest. Returns its key.
    fn put_dump(&self, day: usize, dump: &[u8], template: &str) -> String {
        let codec = Codec::of(&self.store.manifest(template).unwrap());
        let key = format!(
            "{INSTANCE}/2001-01-{day:02}T000000Z-shop.sql{}",
            codec.suffix()
        );
        self.store
            .put_artifact(&key, &codec.encode(dump), template)
            .unwrap();
        key
    }

    /// `--op restore --database target` from the store (latest of `from`).
    fn restore_step(&self, from: &str, target: &str) -> Step {
        self.db
            .step("restore", target)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", from)
    }

    #[track_caller]
    fn fingerprint(&self, db: &str) -> Fingerprint {
        self.db
            .fingerprint(db)
            .unwrap_or_else(|e| panic!("fingerprint of {db}: {e:#}"))
    }

    #[track_caller]
    fn sql(&self, db: &str, sql: &str) -> String {
        self.db
            .sql(Some(db), sql)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The server holds exactly these databases: no scratch or old copy left.
    #[track_caller]
    fn assert_databases(&self, expected: &[&str]) {
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(
            self.db.databases().unwrap(),
            expected,
            "the server should hold exactly these databases (no scratch or old copies left)"
        );
    }

    /// InnoDB ids of the sample's InnoDB tables in `db`: all change when the
    /// tables are swapped.
    fn table_ids(&self, db: &str) -> Vec<Option<u64>> {
        [
            "customers",
            "products",
            "orders",
            "order_items",
            "audit_log",
        ]
        .iter()
        .map(|t| self.db.table_id(db, t).unwrap())
        .collect()
    }
}

/// The host's compression of a stored artifact, as its manifest records it;
/// the suite compresses and decompresses with the `zstd` and `gzip` tools.
enum Codec {
    None,
    Zstd,
    Gzip,
}

impl Codec {
    fn of(manifest: &serde_json::Value) -> Codec {
        match manifest["compression"].as_str().unwrap_or("none") {
            "none" | "" => Codec::None,
            "zstd" => Codec::Zstd,
            "gzip" => Codec::Gzip,
            other => panic!("unknown compression {other:?} in {manifest:#}"),
        }
    }

    /// What the host appends to the key's extension.
    fn suffix(&self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
        }
    }

    fn encode(&self, plain: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => plain.to_vec(),
            Codec::Zstd => filter("zstd", &["-q", "-c"], plain),
            Codec::Gzip => filter("gzip", &["-c"], plain),
        }
    }

    fn decode(&self, stored: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => stored.to_vec(),
            Codec::Zstd => filter("zstd", &["-q", "-d", "-c"], stored),
            Codec::Gzip => filter("gzip", &["-d", "-c"], stored),
        }
    }
}

/// `program args` with `input` on stdin; its stdout.
fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{program} {args:?} failed");
    out.stdout
}

/// True if stderr (lower-cased) contains any of `phrases`.
fn mentions_any(out: &Output, phrases: &[&str]) -> bool {
    let stderr = strip_ansi(&out.stderr).to_lowercase();
    phrases.iter().any(|p| stderr.contains(&p.to_lowercase()))
}

/// Changes to a restored copy of the sample touching every kind of object:
/// rows, a counter, a trigger, a view, a routine, an event, a table the
/// backup lacks, and a view standing where the backup has a table.
const CHANGES: &str = "\
    DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE customer_id = 42);\n\
    DELETE FROM orders WHERE customer_id = 42;\n\
    UPDATE customers SET name = 'changed', avatar = NULL WHERE id = 7;\n\
    INSERT INTO customers (email, name, created_at) VALUES ('new@example.com', 'new', NOW());\n\
    ALTER TABLE products AUTO_INCREMENT = 100000;\n\
    DROP TRIGGER products_title_trim;\n\
    CREATE TRIGGER customers_extra BEFORE INSERT ON customers FOR EACH ROW SET NEW.country = 'XX';\n\
    CREATE OR REPLACE VIEW big_spenders AS SELECT customer_id FROM customer_order_summary;\n\
    CREATE VIEW only_here AS SELECT 1 AS one;\n\
    DROP FUNCTION order_total;\n\
    CREATE PROCEDURE only_here_too() SELECT 2;\n\
    CREATE EVENT only_here_event ON SCHEDULE EVERY 1 HOUR DISABLE DO SELECT 1;\n\
    CREATE TABLE extra (x int PRIMARY KEY, y int, FOREIGN KEY (y) REFERENCES extra (x));\n\
    CREATE TRIGGER extra_bi BEFORE INSERT ON extra FOR EACH ROW SET NEW.y = NULL;\n\
    DROP TABLE `legacy notes-é`;\n\
    CREATE VIEW `legacy notes-é` AS SELECT 'a' AS k, 'view' AS `select`;\n";

// 1 ---------------------------------------------------------------------------

#[test]
fn backup_then_restore_round_trip_and_restore_over_an_existing_database() {
    let env = setup();
    let source = env.fingerprint("shop");
    assert!(
        source.objects.len() >= 13 && source.tables.len() == 6,
        "the sample is not fully there:\n{source}"
    );

    let key = env.backup("shop");
    let stored = std::fs::read(env.store.artifact_path(&key)).unwrap();
    let dump = env.dump_of(&key);
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.starts_with("/*M!999999\\- enable the sandbox mode */") || text.starts_with("-- M"),
        "the artifact is not a mariadb-dump dump: {:?}",
        &text[..80.min(text.len())]
    );
    assert!(
        !text.contains("\nCREATE DATABASE") && !text.contains("\nUSE "),
        "the dump names its database, so it could not load under another name"
    );
    let manifest = env.store.manifest(&key).unwrap();
    assert_eq!(manifest["size"].as_u64(), Some(stored.len() as u64));
    assert_eq!(
        manifest["format"].as_str(),
        Some("mysql-sql"),
        "{manifest:#}"
    );
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
    source.assert_same(&env.fingerprint("shop_copy"), "shop vs its restored copy");
    env.assert_databases(&["shop", "shop_copy"]);
    // The AUTO_INCREMENT counters came along (they are in SHOW CREATE TABLE,
    // and the next row proves it).
    let counter = |db: &str| {
        env.sql(
            db,
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'customers'",
        )
    };
    let next_id = counter("shop");
    assert!(next_id.parse::<u64>().unwrap() > 1995, "{next_id}");
    assert_eq!(counter("shop_copy"), next_id);

    // Over an existing, changed database (the swap), through a file:// URL.
    env.sql("shop_copy", CHANGES);
    assert!(!source.differences(&env.fingerprint("shop_copy")).is_empty());
    let ids_before = env.table_ids("shop_copy");
    env.db
        .step("restore", "shop_copy")
        .opt("--store", env.store.url())
        .opt("--from-database", "shop")
        .run(&env.host)
        .expect_ok("restore over an existing database");
    source.assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy restored over a changed database",
    );
    let ids_after = env.table_ids("shop_copy");
    assert!(
        ids_before.iter().zip(&ids_after).all(|(a, b)| a != b),
        "every table is replaced: {ids_before:?} vs {ids_after:?}"
    );
    env.assert_databases(&["shop", "shop_copy"]);
    let inserted = env.sql(
        "shop_copy",
        "INSERT INTO customers (email, name, created_at) VALUES ('x@example.com', 'x', NOW()); \
         SELECT LAST_INSERT_ID();",
    );
    assert_eq!(inserted, next_id, "the restored counter gives the next id");

    // Under a name that needs quoting everywhere.
    let odd = "we`ird-é db";
    env.restore_step("shop", odd)
        .run(&env.host)
        .expect_ok("restore into a database whose name needs quoting");
    source.assert_same(&env.fingerprint(odd), "shop vs the oddly named copy");
    env.restore_step("shop", odd)
        .run(&env.host)
        .expect_ok("restore over the oddly named database");
    source.assert_same(&env.fingerprint(odd), "shop vs the oddly named copy, again");
    env.assert_databases(&["shop", "shop_copy", odd]);

    // The source and the store are untouched by restores.
    source.assert_same(&env.fingerprint("shop"), "shop after restores");
    assert_eq!(
        env.store.pointer(INSTANCE, "shop").as_deref(),
        Some(key.as_str())
    );
}

// 2 ---------------------------------------------------------------------------

/// One query over several tables and a view: its answer tells which copy of
/// the database it saw, and a half-swapped database would give a third one.
const READER_QUERY: &str = "SELECT (SELECT COUNT(*) FROM customers), \
    (SELECT SUM(stock) FROM products), (SELECT COUNT(*) FROM order_items), \
    (SELECT SUM(orders) FROM customer_order_summary), (SELECT COUNT(*) FROM big)";

#[test]
fn restore_keeps_readers_working_until_the_swap_and_after() {
    let env = setup();
    // A bigger table, so loading the scratch database takes a while.
    env.sql(
        "shop",
        "CREATE TABLE big (id int PRIMARY KEY, a varchar(100), b varchar(100)) ENGINE=InnoDB;\n\
         INSERT INTO big SELECT seq, MD5(seq), IF(seq % 10 = 0, NULL, SHA1(seq)) FROM seq_1_to_150000;",
    );
    env.backup("shop");
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("first restore");
    env.sql(
        "shop_copy",
        "DELETE FROM order_items WHERE order_id < 100; UPDATE products SET stock = 0 WHERE id <= 10; \
         DELETE FROM big WHERE id > 140000;",
    );
    let mut probe = env.db.session("shop_copy").unwrap();
    let old = probe.query(READER_QUERY, Duration::from_secs(30)).unwrap();
    drop(probe);
    let mut probe = env.db.session("shop").unwrap();
    let new = probe.query(READER_QUERY, Duration::from_secs(30)).unwrap();
    drop(probe);
    assert!(matches!(old, Answer::Row(_)) && matches!(new, Answer::Row(_)));
    assert_ne!(old, new);

    // A client reads the live database in a loop on one connection, from
    // before the restore starts until after it ended.
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = env.db.session("shop_copy").unwrap();
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = vec![];
            let mut after_stop = 0;
            while after_stop < 20 {
                if stop.load(Ordering::Relaxed) {
                    after_stop += 1;
                }
                let started = Instant::now();
                let answer = reader
                    .query(READER_QUERY, Duration::from_secs(60))
                    .unwrap_or_else(|e| Answer::Error(format!("{e:#}")));
                answers.push((answer, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(200));
            let stderr = reader.stderr();
            (answers, stderr)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out = env.restore_step("shop", "shop_copy").run(&env.host);
    stop.store(true, Ordering::Relaxed);
    let (answers, stderr) = reading.join().unwrap();
    out.expect_ok("restore while a client reads the target");

    // Every answer is complete: the old database's or the new one's, never
    // an error and never a mix; old ones first, then only new ones.
    let errors: Vec<&Answer> = answers
        .iter()
        .map(|(a, _)| a)
        .filter(|a| matches!(a, Answer::Error(_)))
        .collect();
    assert!(
        errors.is_empty() && stderr.is_empty(),
        "the reader got errors: {errors:#?} {stderr:#?}"
    );
    let kinds: Vec<char> = answers
        .iter()
        .map(|(a, _)| {
            if *a == old {
                'o'
            } else if *a == new {
                'n'
            } else {
                panic!("an answer from neither copy: {a:?} (old {old:?}, new {new:?})")
            }
        })
        .collect();
    let switch = kinds.iter().position(|k| *k == 'n').unwrap_or(kinds.len());
    assert!(
        kinds[switch..].iter().all(|k| *k == 'n'),
        "the reader saw the old database again after the new one: {kinds:?}"
    );
    assert!(
        switch >= 5 && kinds.len() - switch >= 20,
        "too few answers before ({switch}) or after ({}) the swap",
        kinds.len() - switch
    );
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(6),
        "a reader query waited {slowest:?} (more than the swap's lock timeout)"
    );
    eprintln!(
        "{} answers from the old database, {} from the new one; slowest {slowest:?}",
        switch,
        kinds.len() - switch
    );
    env.fingerprint("shop").assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy swapped in under a reader",
    );
    env.assert_databases(&["shop", "shop_copy"]);
}

// 3 ---------------------------------------------------------------------------

#[test]
fn a_swap_blocked_by_an_open_transaction_gives_up_and_leaves_the_target_intact() {
    let env = setup();
    env.backup("shop");
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("first restore");
    env.sql("shop_copy", CHANGES);
    let live = env.fingerprint("shop_copy");
    let ids = env.table_ids("shop_copy");

    // An open transaction that read a table holds its metadata lock until it
    // ends: RENAME TABLE cannot take the table from under it.
    let mut holder = env.db.session("shop_copy").unwrap();
    holder.send("BEGIN;\n").unwrap();
    let held = holder
        .query("SELECT COUNT(*) FROM order_items", Duration::from_secs(30))
        .unwrap();
    assert!(matches!(held, Answer::Row(_)), "{held:?}");

    let started = Instant::now();
    env.restore_step("shop", "shop_copy")
        .param("swap-lock-timeout", 1)
        .param("swap-retries", 2)
        .param("swap-retry-delay-ms", 200)
        .run(&env.host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["open transaction", "left unchanged"],
            "restore while a transaction holds a table of the target",
        );
    assert!(started.elapsed() < Duration::from_secs(60));
    let still = holder
        .query("SELECT COUNT(*) FROM order_items", Duration::from_secs(30))
        .unwrap();
    assert_eq!(still, held, "the open transaction's view changed");
    holder.send("COMMIT;\n").unwrap();
    holder.close();
    // The swap session dropped the triggers of the target's tables before
    // its RENAME failed: they are back, in order, with everything else.
    live.assert_same(
        &env.fingerprint("shop_copy"),
        "the live target before vs after the failed swap",
    );
    assert_eq!(env.table_ids("shop_copy"), ids, "a table was replaced");
    env.assert_databases(&["shop", "shop_copy"]);

    // Once the transaction ended, the restore goes through.
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("restore once the transaction ended");
    env.fingerprint("shop")
        .assert_same(&env.fingerprint("shop_copy"), "shop vs the copy");
    env.assert_databases(&["shop", "shop_copy"]);
}

// 4 ---------------------------------------------------------------------------

struct BadArtifact {
    what: &'static str,
    bytes: Vec<u8>,
    /// Alter the manifest's sha256 after writing a consistent one.
    break_checksum: bool,
    codes: &'static [i32],
    /// stderr must mention at least one of these.
    phrases: &'static [&'static str],
}

/// The position just after the first complete statement that ends past the
/// middle of `dump` (a `;` at the end of a line).
fn statement_end_after_middle(dump: &[u8]) -> usize {
    let mid = dump.len() / 2;
    mid + dump[mid..]
        .windows(2)
        .position(|w| w == b";\n")
        .expect("a statement ends after the middle")
        + 2
}

#[test]
fn bad_artifacts_are_refused_and_leave_the_target_untouched() {
    let env = setup();
    let valid_key = env.backup("shop");
    let valid = env.dump_of(&valid_key);
    let shop = env.fingerprint("shop");

    // The live target differs from what the artifacts hold, so that any
    // replacement would show.
    env.restore_step("shop", "shop_copy")
        .run(&env.host)
        .expect_ok("restore of the live target");
    env.sql("shop_copy", CHANGES);

    let mut corrupt = valid.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 512] {
        *b ^= 0xA5;
    }
    let databases = env
        .db
        .dump(&[
            "--databases",
            "shop",
            "--single-transaction",
            "--skip-triggers",
        ])
        .unwrap();
    let mut pg_custom = b"PGDMP\x01\x0e\x00\x04\x08\x01\x00\x01\x00\x00\x00\x00".to_vec();
    pg_custom.extend(std::iter::repeat_n(0x5Au8, 8000));
    let pg_plain = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
        DROP TABLE IF EXISTS public.customers;\nCREATE TABLE public.customers (id integer);\n"
        .repeat(100);
    let cases = vec![
        BadArtifact {
            what: "corrupt (bytes flipped in the middle, manifest consistent)",
            bytes: corrupt,
            break_checksum: false,
            codes: &[exit::STEP_FAILED],
            phrases: &["mariadb exited"],
        },
        BadArtifact {
            what: "truncated to half (manifest consistent)",
            bytes: valid[..valid.len() / 2].to_vec(),
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["truncated"],
        },
        BadArtifact {
            what: "truncated right after a complete statement (manifest consistent)",
            bytes: valid[..statement_end_after_middle(&valid)].to_vec(),
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["truncated"],
        },
        BadArtifact {
            what: "truncated inside its header",
            bytes: valid[..700].to_vec(),
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["truncated"],
        },
        BadArtifact {
            what: "truncated to its first bytes",
            bytes: valid[..3].to_vec(),
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["truncated"],
        },
        BadArtifact {
            what: "a dump made with --databases",
            bytes: databases,
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["--databases"],
        },
        BadArtifact {
            what: "wrong engine (a PostgreSQL custom-format archive)",
            bytes: pg_custom,
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["postgresql"],
        },
        BadArtifact {
            what: "wrong engine (a PostgreSQL plain SQL dump)",
            bytes: pg_plain,
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["postgresql"],
        },
        BadArtifact {
            what: "empty",
            bytes: vec![],
            break_checksum: false,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["empty"],
        },
        BadArtifact {
            what: "checksum mismatch (valid artifact, manifest sha256 altered)",
            bytes: valid.clone(),
            break_checksum: true,
            codes: &[exit::ARTIFACT_REJECTED],
            phrases: &["checksum"],
        },
    ];

    for (n, case) in cases.into_iter().enumerate() {
        let key = env.put_dump(n + 1, &case.bytes, &valid_key);
        if case.break_checksum {
            let path = env.store.manifest_path(&key);
            let mut m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let sha = m["sha256"].as_str().unwrap().to_string();
            let flipped = if sha.starts_with('0') { "1" } else { "0" };
            m["sha256"] = format!("{flipped}{}", &sha[1..]).into();
            std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        }
        let live = env.fingerprint("shop_copy");
        let ids = env.table_ids("shop_copy");

        let out = env
            .db
            .step("restore", "shop_copy")
            .opt("--store", env.store.path_arg())
            .opt("--artifact", &key)
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
        assert!(
            mentions_any(&out, &["unchanged", "was not changed"]),
            "{}: stderr should say the target is unchanged\n{out}",
            case.what
        );
        assert_eq!(
            env.table_ids("shop_copy"),
            ids,
            "{}: a table of the live target was replaced",
            case.what
        );
        live.assert_same(
            &env.fingerprint("shop_copy"),
            &format!("{}: the live target before vs after", case.what),
        );
        env.assert_databases(&["shop", "shop_copy"]);
    }

    // The valid artifact, named explicitly, still restores.
    env.db
        .step("restore", "shop_copy")
        .opt("--store", env.store.path_arg())
        .opt("--artifact", &valid_key)
        .run(&env.host)
        .expect_ok("restore of the valid artifact by key");
    shop.assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy restored from the valid artifact",
    );
    env.assert_databases(&["shop", "shop_copy"]);
}

// 5 ---------------------------------------------------------------------------

#[test]
fn transform_applies_a_script_and_a_failing_script_changes_nothing() {
    let env = setup();
    let before = env.fingerprint("shop");
    let scripts = tempfile::tempdir().unwrap();

    let good = scripts.path().join("sanitise.sql");
    std::fs::write(
        &good,
        "-- Remove personal data. 🧹\n\
         UPDATE customers SET email = CONCAT('customer', id, '@example.invalid'), \
             name = CONCAT('Kundé ', id), avatar = NULL, profile = NULL;\n\
         DELETE FROM audit_log WHERE action = 'insert' AND row_id > 100;\n\
         DELIMITER //\n\
         UPDATE products SET description = NULL WHERE description LIKE '%;%'//\n\
         DELIMITER ;\n",
    )
    .unwrap();
    env.db
        .step("transform", "shop")
        .opt("--script", good.display())
        .run(&env.host)
        .expect_ok("transform with a good script");
    let after = env.fingerprint("shop");
    assert_eq!(
        after.objects, before.objects,
        "the script changed no object"
    );
    let changed: BTreeSet<&str> = after
        .tables
        .iter()
        .filter(|(name, data)| before.tables.get(*name) != Some(*data))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from(["audit_log", "customers"]),
        "exactly the tables the script touches change"
    );
    assert_eq!(
        env.sql(
            "shop",
            "SELECT COUNT(*) FROM customers WHERE email NOT LIKE '%@example.invalid' \
             OR avatar IS NOT NULL OR name NOT LIKE 'Kundé %'"
        ),
        "0"
    );
    assert_eq!(after.tables["audit_log"].rows, 100);

    // The second statement fails after a first that changed data: all is
    // rolled back, the third never runs.
    let failing = [
        (
            "a failing second statement",
            "UPDATE products SET price = price + 1;\n\
             SELECT * FROM does_not_exist;\n\
             DELETE FROM order_items;\n",
            "does_not_exist",
        ),
        (
            // `quit` would end the client quietly, before the COMMIT: it is
            // an SQL error instead.
            "a client command in the script",
            "UPDATE products SET price = price + 1;\n\
             quit\n\
             DELETE FROM order_items;\n",
            "quit",
        ),
        (
            "a shell command in the script",
            "UPDATE products SET price = price + 1;\n\
             \\! touch /tmp/envsync-should-not-exist\n",
            "command",
        ),
    ];
    for (what, script, phrase) in failing {
        let path = scripts.path().join("broken.sql");
        std::fs::write(&path, script).unwrap();
        env.db
            .step("transform", "shop")
            .opt("--script", path.display())
            .run(&env.host)
            .expect_fail(&[exit::STEP_FAILED], &[phrase, "rolled back"], what);
        // The rows are as they were; AUTO_INCREMENT counters the rolled-back
        // statements advanced (the audit trigger's inserts) stay advanced.
        after.without_counters().assert_same(
            &env.fingerprint("shop").without_counters(),
            &format!("shop before vs after a transform with {what}"),
        );
    }
    assert!(!std::path::Path::new("/tmp/envsync-should-not-exist").exists());
    env.assert_databases(&["shop"]);
}

// 6 ---------------------------------------------------------------------------

#[test]
fn copy_creates_and_replaces_the_target() {
    let env = setup();
    let source = env.fingerprint("shop");

    env.db
        .step("copy", "shop_staging")
        .opt("--source-database", "shop")
        .run(&env.host)
        .expect_ok("copy into a new database");
    source.assert_same(&env.fingerprint("shop_staging"), "shop vs its copy");
    env.assert_databases(&["shop", "shop_staging"]);

    env.sql("shop_staging", CHANGES);
    let ids = env.table_ids("shop_staging");
    env.db
        .step("copy", "shop_staging")
        .opt("--source-database", "shop")
        .opt("--source-host", env.db.host())
        .opt("--source-port", env.db.port())
        .opt("--source-user", env.db.user())
        .run(&env.host)
        .expect_ok("copy over an existing, changed database");
    source.assert_same(
        &env.fingerprint("shop_staging"),
        "shop vs the copy made over an existing database",
    );
    assert_ne!(env.table_ids("shop_staging"), ids);
    source.assert_same(&env.fingerprint("shop"), "the source after copies");
    env.assert_databases(&["shop", "shop_staging"]);
    assert!(env.store.files().is_empty(), "copy does not use the store");

    // A failing dump stops the copy before the swap.
    env.sql(
        "shop_staging",
        "UPDATE products SET stock = -1 WHERE id = 1",
    );
    let live = env.fingerprint("shop_staging");
    env.db
        .step("copy", "shop_staging")
        .opt("--source-database", "no_such_database")
        .run(&env.host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["mariadb-dump", "no_such_database", "unchanged"],
            "copy from a database that does not exist",
        );
    live.assert_same(
        &env.fingerprint("shop_staging"),
        "the target after a failed copy",
    );
    env.assert_databases(&["shop", "shop_staging"]);
}

// 7 ---------------------------------------------------------------------------

#[test]
fn replace_mode_drops_and_reloads_the_target() {
    let env = setup();
    let source = env.fingerprint("shop");
    env.backup("shop");
    env.restore_step("shop", "shop_copy")
        .param("mode", "replace")
        .run(&env.host)
        .expect_ok("replace-mode restore into a new database");
    source.assert_same(&env.fingerprint("shop_copy"), "shop vs the replaced copy");

    env.sql("shop_copy", CHANGES);
    env.restore_step("shop", "shop_copy")
        .param("mode", "replace")
        .run(&env.host)
        .expect_ok("replace-mode restore over a changed database");
    source.assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy replaced over a changed database",
    );
    env.assert_databases(&["shop", "shop_copy"]);

    env.restore_step("shop", "shop_copy")
        .param("mode", "sideways")
        .run(&env.host)
        .expect_fail(
            &[exit::USAGE],
            &["mode", "swap", "replace"],
            "an unknown mode",
        );
}

// 8 ---------------------------------------------------------------------------

/// The password reaches the programs through the host (flag file,
/// ENVSYNC_DB_PASSWORD or the standard MYSQL_PWD), never through the plugin:
/// it appears nowhere in what the host and plugin log, even at trace level.
#[test]
fn credentials_are_injected_by_the_host_and_never_logged() {
    let env = setup();
    let password = "pa55-wörd with spaces & 'quotes' \"and\" $x";
    env.db.create_user("backup_agent", password).unwrap();
    let step = |op: &str, db: &str| {
        Step::new("mysql", op)
            .opt("--database", db)
            .opt("--db-host", env.db.host())
            .opt("--db-port", env.db.port())
            .opt("--db-user", "backup_agent")
            .opt("--store", env.store.path_arg())
            .arg("-vv")
    };

    // Without a password the server refuses, and the message says so.
    step("backup", "shop").run(&env.host).expect_fail(
        &[exit::STEP_FAILED],
        &["mariadb-dump", "access denied"],
        "no password",
    );

    let secret_file = env
        .store
        .root()
        .join("..")
        .join(format!("pw-{}", std::process::id()));
    std::fs::write(&secret_file, format!("{password}\n")).unwrap();
    let with_file = step("backup", "shop")
        .opt("--db-password-file", secret_file.display())
        .run(&env.host);
    std::fs::remove_file(&secret_file).unwrap();
    with_file.expect_ok("password from --db-password-file");

    let mut cmd = env.host.command(step("backup", "shop").args());
    cmd.env("ENVSYNC_DB_PASSWORD", password);
    let with_env = env.host.run_command(cmd);
    with_env.expect_ok("password from ENVSYNC_DB_PASSWORD");

    let mut cmd = env.host.command(step("backup", "shop").args());
    cmd.env("MYSQL_PWD", password);
    let with_mysql_pwd = env.host.run_command(cmd);
    with_mysql_pwd.expect_ok("password from MYSQL_PWD (passed through)");

    // The client side too: a restore as that user.
    let mut cmd = env.host.command(
        step("restore", "shop_copy")
            .opt("--from-database", "shop")
            .args(),
    );
    cmd.env("ENVSYNC_DB_PASSWORD", password);
    let restored = env.host.run_command(cmd);
    restored.expect_ok("restore with the password from ENVSYNC_DB_PASSWORD");
    env.fingerprint("shop").assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy restored as backup_agent",
    );

    for out in [&with_file, &with_env, &with_mysql_pwd, &restored] {
        assert!(
            !out.stderr.contains(password) && !out.stdout.contains(password),
            "the password leaked into the output:\n{out}"
        );
        assert!(
            !out.stderr.contains("pa55"),
            "part of the password leaked into the output:\n{out}"
        );
    }
}

// 9 ---------------------------------------------------------------------------

#[test]
fn mysql_program_names_flags_and_the_plugin_listing() {
    let env = setup();
    let source = env.fingerprint("shop");

    // Only MySQL's names allowed: the plugin falls back to them.
    let out = env
        .backup_step("shop")
        .opt("--allow-program", "mysqldump")
        .opt("--allow-program", "mysql")
        .run(&env.host);
    out.expect_ok("backup with only mysqldump allowed");
    assert!(mentions_any(&out, &["with mysqldump"]), "{out}");
    let out = env
        .restore_step("shop", "shop_copy")
        .opt("--allow-program", "mysqldump")
        .opt("--allow-program", "mysql")
        .run(&env.host);
    out.expect_ok("restore with only mysql allowed");
    assert!(
        mentions_any(&out, &["with mysql\n", "with mysql "]),
        "{out}"
    );
    source.assert_same(
        &env.fingerprint("shop_copy"),
        "shop vs the copy made with mysql",
    );

    // No dump program allowed: a clear refusal.
    env.backup_step("shop")
        .opt("--allow-program", "mariadb")
        .run(&env.host)
        .expect_fail(
            &[exit::SANDBOX],
            &["mariadb-dump", "mysqldump", "allow"],
            "backup with no dump program allowed",
        );

    // Extra dump flags: ordinary ones pass, ones that would break a restore
    // are refused before anything runs.
    store::wait_for_next_second();
    env.backup_step("shop")
        .param("dump-flags", "--skip-events --ignore-table=shop.audit_log")
        .run(&env.host)
        .expect_ok("backup with extra dump flags");
    let key = env.store.pointer(INSTANCE, "shop").unwrap();
    let dump = String::from_utf8(env.dump_of(&key)).unwrap();
    assert!(!dump.contains("CREATE TABLE `audit_log`") && !dump.contains("EVENT `purge_audit`"));
    for flags in [
        "--databases",
        "-uroot",
        "--result-file=/tmp/x.sql",
        "customers",
    ] {
        env.backup_step("shop")
            .param("dump-flags", flags)
            .run(&env.host)
            .expect_fail(&[exit::USAGE], &["dump-flags"], flags);
    }

    // The listing shows the plugin, its programs and its parameters.
    let out = env.host.run(&["plugins", "list", "--json"]);
    out.expect_ok("plugins list --json");
    let json = out.json();
    let mysql = objects_with(&json, "name")
        .into_iter()
        .find(|o| o["name"] == "mysql")
        .unwrap_or_else(|| panic!("mysql is not listed\n{out}"));
    let text = mysql.to_string();
    for needle in [
        "mariadb-dump",
        "mariadb",
        "mysqldump",
        "mysql",
        "backup",
        "copy",
    ] {
        assert!(text.contains(needle), "mysql entry lacks {needle}: {text}");
    }
    let inspect = env.host.run(&["plugins", "inspect", "mysql"]);
    inspect.expect_ok("plugins inspect mysql");
    for needle in ["MYSQL_PWD", "dump-flags", "mode", "swap-lock-timeout"] {
        assert!(inspect.stdout.contains(needle), "{needle}\n{inspect}");
    }
}
