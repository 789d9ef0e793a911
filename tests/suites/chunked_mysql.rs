//! Chunked MySQL/MariaDB artifacts (docs/decisions/0022): a backup with
//! `--jobs` cut into per-table INSERT chunks, parallel restore, resume
//! after a killed host and after a restarted server, damaged chunks,
//! today's single-stream artifacts and one consistent snapshot, against a
//! throwaway MariaDB server and a folder store.
//!
//! The source has foreign keys, secondary indexes, a partitioned table, a
//! trigger (loaded after the rows, so it must not fire on them), a view, a
//! table without a primary key (a chunk loaded twice would show as
//! duplicate rows in the fingerprint), utf8mb4 text and binary values.
//! `chunk-mib=1` makes a few MiB of rows into dozens of chunks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envsync_tests::faulty_proxy::FaultyProxy;
use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::mariadb::{Fingerprint, MariaDb};
use envsync_tests::process::Running;
use envsync_tests::procs;
use envsync_tests::store::LocalStore;

const INSTANCE: &str = "127.0.0.1";
const SOURCE: &str = "src";
const LIVE: &str = "live";
const SCRATCH: &str = "live-envsync-restore";
const BIG_ROWS: u64 = 60_000;

const SCHEMA: &str = "
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE,
                        name VARCHAR(100)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL,
                     placed_at TIMESTAMP NOT NULL, total DECIMAL(12,2) NOT NULL, note TEXT,
                     digest VARBINARY(16), KEY orders_placed (placed_at),
                     CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id))
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE events (at DATETIME NOT NULL, kind VARCHAR(20) NOT NULL, payload TEXT,
                     KEY events_kind (kind)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE measurements (id BIGINT NOT NULL, taken DATE NOT NULL, value DOUBLE,
                           PRIMARY KEY (id, taken)) ENGINE=InnoDB
    PARTITION BY RANGE (YEAR(taken)) (PARTITION p2025 VALUES LESS THAN (2026),
                                      PARTITION p2026 VALUES LESS THAN (2027));
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
    INSERT INTO audit (order_id) VALUES (NEW.id);
CREATE VIEW customer_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
";

fn data() -> String {
    format!(
        "INSERT INTO customers (email, name) SELECT CONCAT('c', seq, '@example.com'),
                CONCAT('Näme ', seq, ' 😀') FROM seq_1_to_2000;
         INSERT INTO orders SELECT seq, 1 + seq % 2000,
                TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq MINUTE, (seq % 997) / 7,
                IF(seq % 5 = 0, NULL, CONCAT(MD5(seq), '\\ttab\\\\ \\n ''q''')),
                UNHEX(MD5(seq)) FROM seq_1_to_{BIG_ROWS};
         INSERT INTO events SELECT TIMESTAMP '2026-02-01 00:00:00' + INTERVAL seq SECOND,
                CONCAT('kind', seq % 13), CONCAT('{{\"i\":', seq, ',\"h\":\"', MD5(seq), '\"}}')
                FROM seq_1_to_{BIG_ROWS};
         INSERT INTO measurements SELECT seq, DATE '2025-06-01' + INTERVAL (seq % 400) DAY, seq * 1.5
                FROM seq_1_to_20000;"
    )
}

struct Env {
    host: Host,
    db: MariaDb,
    store: LocalStore,
    source: Fingerprint,
}

fn setup() -> Env {
    procs::become_subreaper();
    let host = Host::built();
    let db = MariaDb::start().expect("start a throwaway MariaDB server");
    db.create_database(SOURCE).unwrap();
    db.sql(Some(SOURCE), SCHEMA).unwrap();
    db.sql(Some(SOURCE), &data()).unwrap();
    let source = db.fingerprint(SOURCE).unwrap();
    Env {
        host,
        db,
        store: LocalStore::new().unwrap(),
        source,
    }
}

impl Env {
    /// A chunked backup of the source with `jobs`; its manifest.
    fn backup(&self, jobs: u32) -> serde_json::Value {
        let out = self
            .db
            .step("backup", SOURCE)
            .opt("--store", self.store.path_arg())
            .opt("--jobs", jobs)
            .param("chunk-mib", 1)
            .run(&self.host);
        out.expect_ok(&format!("chunked backup with --jobs {jobs}"));
        if jobs > 1 {
            // The rows came from parallel dumps under the global read lock.
            let line = out
                .stderr
                .lines()
                .find(|l| l.contains("data dump sessions share one snapshot"))
                .unwrap_or_else(|| panic!("no parallel data dumps:\n{}", out.stderr));
            eprintln!("--jobs {jobs}: {line}");
        }
        self.latest_manifest()
    }

    fn latest_manifest(&self) -> serde_json::Value {
        let key = self.store.pointer(INSTANCE, SOURCE).expect("a pointer");
        let path = self.store.root().join(format!("{key}.manifest.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn restore_step(&self, jobs: u32) -> Step {
        self.db
            .step("restore", LIVE)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", SOURCE)
            .opt("--jobs", jobs)
    }

    /// Each connection through the proxy held to 2 MiB/s, as a remote
    /// server's sessions are each bound by their own thread: a 1 MiB chunk
    /// takes about half a second, so a restore can be watched or killed.
    fn throttle(&self) -> FaultyProxy {
        FaultyProxy::throttled_tcp((Ipv4Addr::LOCALHOST, self.db.port()).into(), 2 << 20)
            .expect("a throttling proxy")
    }

    fn restore_through(&self, proxy: &FaultyProxy, jobs: u32) -> Running {
        self.restore_step_through(proxy, jobs)
            .spawn(&self.host)
            .unwrap()
    }

    fn restore_step_through(&self, proxy: &FaultyProxy, jobs: u32) -> Step {
        Step::new("mysql", "restore")
            .opt("--database", LIVE)
            .opt("--db-host", "127.0.0.1")
            .opt("--db-port", proxy.port())
            .opt("--db-user", self.db.user())
            .opt("--store", self.store.path_arg())
            .opt("--from-database", SOURCE)
            .opt("--jobs", jobs)
    }

    fn count(&self, sql: &str) -> u64 {
        let out = self.db.sql(None, sql).unwrap();
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {out:?} from {sql}"))
    }

    /// Rows in the source's base tables.
    fn source_rows(&self) -> u64 {
        self.count(&format!(
            "SELECT (SELECT COUNT(*) FROM {SOURCE}.customers) + (SELECT COUNT(*) FROM {SOURCE}.orders) \
             + (SELECT COUNT(*) FROM {SOURCE}.events) + (SELECT COUNT(*) FROM {SOURCE}.measurements) \
             + (SELECT COUNT(*) FROM {SOURCE}.audit)"
        ))
    }

    /// The data chunks the scratch database records as committed.
    fn committed(&self) -> BTreeSet<String> {
        self.db
            .sql(
                Some(SCRATCH),
                "SELECT name FROM `envsync-restore-loaded` WHERE name LIKE 'data-%'",
            )
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `running` has committed at least `wanted` data chunks.
    fn wait_for_committed(&self, running: &mut Running, wanted: u64) {
        running
            .wait_until(
                &format!("{wanted} data chunks were committed"),
                Duration::from_secs(120),
                || self.committed().len() as u64 >= wanted,
            )
            .expect("a restore to interrupt");
    }

    /// Waits until no session is left on the scratch database (a killed
    /// host's loaders die with it).
    fn wait_for_loaders_to_end(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{SCRATCH}'"
        )) > 0
        {
            assert!(Instant::now() < deadline, "loaders outlived the host");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A live target with different content, and its fingerprint.
    fn reset_live(&self) -> Fingerprint {
        if self.db.database_exists(LIVE).unwrap() {
            self.db.drop_database(LIVE).unwrap();
        }
        self.db.create_database(LIVE).unwrap();
        self.db
            .sql(
                Some(LIVE),
                "CREATE TABLE keep (v TEXT); INSERT INTO keep VALUES ('live data');",
            )
            .unwrap();
        self.db.fingerprint(LIVE).unwrap()
    }
}

fn data_chunks(manifest: &serde_json::Value) -> Vec<String> {
    manifest["chunks"]
        .as_array()
        .expect("a chunked manifest lists its chunks")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .filter(|n| n.starts_with("data-"))
        .collect()
}

#[test]
fn round_trips_at_jobs_1_2_and_4_are_identical() {
    let env = setup();
    for jobs in [1, 2, 4] {
        let manifest = env.backup(jobs);
        let chunks = data_chunks(&manifest);
        assert!(
            chunks.len() >= 8,
            "expected several data chunks: {chunks:?}"
        );
        env.reset_live();
        let out = env.restore_step(jobs).run(&env.host);
        out.expect_ok(&format!("restore with --jobs {jobs}"));
        // The rows the backup counted into the plan, reported as loaded.
        let log = format!("{}{}", out.stdout, out.stderr);
        let rows = format!("{} rows loaded", env.source_rows());
        assert!(log.contains(&rows), "expected {rows:?} in:\n{log}");
        env.db
            .fingerprint(LIVE)
            .unwrap()
            .assert_same(&env.source, &format!("restore at --jobs {jobs}"));
        assert!(!env.db.database_exists(SCRATCH).unwrap());
    }
    // The trigger came after the rows: it fired for none of them (the
    // source's audit rows, one per order, are restored once).
    assert_eq!(env.count("SELECT COUNT(*) FROM live.audit"), BIG_ROWS);
}

#[test]
fn a_parallel_restore_runs_n_load_sessions_at_once() {
    let env = setup();
    env.backup(2);
    env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    let sessions = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{SCRATCH}' \
         AND INFO LIKE 'INSERT INTO%'"
    );
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.has_exited().unwrap() && Instant::now() < deadline {
        most = most.max(env.count(&sessions));
        std::thread::sleep(Duration::from_millis(5));
    }
    running
        .wait_timeout(Duration::from_secs(120))
        .expect_ok("parallel restore");
    assert_eq!(
        most, 2,
        "the server should show 2 concurrent INSERT sessions"
    );
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "parallel restore");
}

#[test]
fn a_killed_restore_resumes_and_loads_no_chunk_twice() {
    let env = setup();
    let manifest = env.backup(2);
    let all = data_chunks(&manifest);
    let live = env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    let wanted = (all.len() * 7 / 10) as u64;
    env.wait_for_committed(&mut running, wanted);
    running.signal(libc::SIGKILL);
    running.wait_timeout(Duration::from_secs(10));
    // The loaders die with the host; their open transactions roll back.
    env.wait_for_loaders_to_end();
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the kill");
    let committed = env.committed();
    assert!(committed.len() as u64 >= wanted);

    let out = env.restore_step(2).run(&env.host);
    out.expect_ok("rerun of the killed restore");
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains(&format!(
            "resuming: {} of {} data chunks were already loaded and are skipped",
            committed.len(),
            all.len()
        )),
        "the rerun should skip the {} committed chunks:\n{log}",
        committed.len()
    );
    assert!(
        log.contains(&format!(
            "loading {} data chunk(s)",
            all.len() - committed.len()
        )),
        "the rerun should load only the rest:\n{log}"
    );
    // The chunks loaded before the kill count too.
    let rows = format!("{} rows loaded", env.source_rows());
    assert!(log.contains(&rows), "expected {rows:?} in:\n{log}");
    // `events` has no key: a chunk loaded twice would show as duplicates.
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the resumed restore");
    assert!(!env.db.database_exists(SCRATCH).unwrap());
}

/// The server restarts as after a crash (SIGKILL, InnoDB recovery) while a
/// parallel restore loads: the run fails saying the scratch database is
/// kept, the live target is intact, and the rerun resumes from what the
/// server had committed, loading no chunk twice. The harness server flushes
/// its redo log once a second, so the last commits before the kill may be
/// lost: each chunk and its bookkeeping row are one transaction, so they
/// are lost together and the rerun loads that chunk again.
#[test]
fn a_server_restart_mid_restore_is_resumed_by_the_rerun() {
    let mut env = setup();
    let manifest = env.backup(2);
    let all = data_chunks(&manifest);
    let live = env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    env.wait_for_committed(&mut running, (all.len() * 3 / 10) as u64);
    // The chunks seen committed so far surely survive the crash; those
    // committed while the log is flushed may or may not.
    let seen = env.committed();
    env.db
        .wait_log_flushed(Duration::from_secs(10))
        .expect("the redo log flushed");
    env.db.restart().expect("restart the server");
    running.wait_timeout(Duration::from_secs(120)).expect_fail(
        &[exit::STEP_FAILED],
        &["keeping scratch database", SCRATCH, "resumes there"],
        "a restore whose server restarted",
    );
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the restart");
    // InnoDB's recovery says what it rolled back: the loads the crash cut.
    for line in env.db.log().lines().filter(|l| l.contains("rolled back")) {
        eprintln!("server: {line}");
    }
    // What survived the crash is what the rerun must skip.
    let committed = env.committed();
    eprintln!(
        "data chunks committed: {} of {} seen before the restart, {} after the recovery",
        seen.len(),
        all.len(),
        committed.len()
    );
    assert!(
        committed.is_superset(&seen) && committed.len() < all.len(),
        "expected the {} chunks seen before the restart, and not all {}, committed after it: \
         {committed:?}",
        seen.len(),
        all.len()
    );

    let out = env.restore_step(2).run(&env.host);
    out.expect_ok("rerun after the restart");
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains(&format!(
            "resuming: {} of {} data chunks were already loaded and are skipped",
            committed.len(),
            all.len()
        )),
        "the rerun should skip the {} committed chunks:\n{log}",
        committed.len()
    );
    assert!(
        log.contains(&format!(
            "loading {} data chunk(s)",
            all.len() - committed.len()
        )),
        "the rerun should load only the rest:\n{log}"
    );
    // `events` has no key: a chunk loaded twice would show here.
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the restore resumed after the restart");
    assert!(!env.db.database_exists(SCRATCH).unwrap());
}

/// Secondary keys and foreign keys are taken out while the rows load and
/// built after them (`deferred_keys`), and a rerun puts back only those a
/// table does not have yet. The state of a run killed after one table's
/// keys were back is made by hand (that window is a single ALTER, too
/// short to hit with a kill): `customers` gets its key back in the
/// scratch database before the rerun.
#[test]
fn keys_are_built_after_the_rows_and_a_rerun_adds_only_the_missing_ones() {
    let env = setup();
    let all = data_chunks(&env.backup(2));
    let live = env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    env.wait_for_committed(&mut running, (all.len() / 3) as u64);
    let keys_now = env
        .db
        .sql(
            None,
            &format!(
                "SELECT CONCAT(TABLE_NAME, '.', INDEX_NAME) FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = '{SCRATCH}' AND INDEX_NAME <> 'PRIMARY' \
                 AND TABLE_NAME NOT LIKE 'envsync-%' ORDER BY 1"
            ),
        )
        .unwrap();
    let foreign_keys_now = env.count(&format!(
        "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = '{SCRATCH}'"
    ));
    let recorded = env
        .db
        .sql(
            Some(SCRATCH),
            "SELECT CONCAT(tbl, ' ', kind, ' ', name) FROM `envsync-restore-keys` ORDER BY 1",
        )
        .unwrap();
    running.signal(libc::SIGKILL);
    running.wait_timeout(Duration::from_secs(10));
    // customers' AUTO_INCREMENT key is its primary key: its unique key on
    // email can go. audit and measurements have nothing but a primary key.
    assert_eq!(
        keys_now.trim(),
        "",
        "while rows load, the tables should have no secondary keys"
    );
    assert_eq!(foreign_keys_now, 0, "nor foreign keys while rows load");
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        [
            "customers key email",
            "events key events_kind",
            "orders foreign-key orders_customer",
            "orders key orders_customer",
            "orders key orders_placed",
        ],
        "the keys taken out should be recorded in the scratch database"
    );
    env.wait_for_loaders_to_end();
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the kill");
    env.db
        .sql(
            Some(SCRATCH),
            "ALTER TABLE customers ADD UNIQUE KEY `email` (`email`)",
        )
        .unwrap();

    let out = env.restore_step(2).run(&env.host);
    out.expect_ok("rerun of the killed restore");
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains("building the keys of 2 table(s)"),
        "the rerun should build the keys of orders and events only:\n{log}"
    );
    // SHOW CREATE TABLE of every table is part of the fingerprint: the keys
    // are back as the source defines them, in its order.
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the resumed restore");
    assert!(!env.db.database_exists(SCRATCH).unwrap());
}

#[test]
fn a_damaged_chunk_is_refused_before_the_swap() {
    let env = setup();
    let manifest = env.backup(2);
    let key = manifest["key"].as_str().unwrap();
    let chunk = &data_chunks(&manifest)[3];
    let path = env.store.root().join(format!("{key}.chunks/{chunk}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let live = env.reset_live();
    env.restore_step(2).run(&env.host).expect_fail(
        &[exit::ARTIFACT_REJECTED],
        &[chunk.as_str()],
        "restore of an artifact with a damaged chunk",
    );
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the refused restore");
    assert!(!env.db.database_exists(SCRATCH).unwrap());
}

#[test]
fn a_single_stream_artifact_still_restores_with_jobs() {
    let env = setup();
    env.db
        .step("backup", SOURCE)
        .opt("--store", env.store.path_arg())
        .run(&env.host)
        .expect_ok("single-stream backup");
    let manifest = env.latest_manifest();
    assert!(manifest.get("chunks").is_none(), "{manifest:#}");
    env.reset_live();
    env.restore_step(4)
        .run(&env.host)
        .expect_ok("restore of a single-stream artifact with --jobs 4");
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "single-stream restore");
}

/// A writer keeps moving amounts between two tables, one transaction per
/// move, while the chunked backup runs: the restored total is the
/// invariant total, so every chunk comes from one snapshot.
#[test]
fn a_chunked_backup_is_one_consistent_snapshot() {
    let env = setup();
    env.db
        .sql(
            Some(SOURCE),
            "CREATE TABLE left_side (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB;
             CREATE TABLE right_side (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB;
             INSERT INTO left_side SELECT seq, 1000 FROM seq_1_to_1000;
             INSERT INTO right_side SELECT seq, 1000 FROM seq_1_to_1000;",
        )
        .unwrap();
    let total = "SELECT (SELECT SUM(v) FROM left_side) + (SELECT SUM(v) FROM right_side)";
    let stop = AtomicBool::new(false);
    let moves = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = 1 + i % 1000;
                env.db
                    .sql(
                        Some(SOURCE),
                        &format!(
                            "START TRANSACTION; UPDATE left_side SET v = v - 7 WHERE id = {id};
                             UPDATE right_side SET v = v + 7 WHERE id = {id}; COMMIT;"
                        ),
                    )
                    .unwrap();
                moves.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Let the writer get going, then back up while it writes.
        while moves.load(Ordering::Relaxed) < 5 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = moves.load(Ordering::Relaxed);
        env.backup(2);
        let during = moves.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        assert!(during > 0, "the writer made no move during the backup");
    });
    env.reset_live();
    env.restore_step(2).run(&env.host).expect_ok("restore");
    assert_eq!(env.count(&format!("USE {LIVE}; {total}")), 2_000_000);
    let left: u64 = env.count(&format!("SELECT SUM(v) FROM {LIVE}.left_side"));
    assert_ne!(left, 1_000_000, "the backup should have caught moves");
}

/// Through the per-connection throttle (a remote server's sessions are each
/// bound by their own thread), 4 sessions restore faster than 1 (the
/// figures are printed; the schema, triggers and swap stay serial); and a restore with 8 sessions keeps the host within 150 MiB.
#[test]
fn four_sessions_beat_one_and_eight_stay_in_bounded_memory() {
    let env = setup();
    env.backup(4);
    let proxy = env.throttle();
    let mut took = Vec::new();
    for jobs in [1, 4] {
        env.reset_live();
        let started = Instant::now();
        env.restore_step_through(&proxy, jobs)
            .run(&env.host)
            .expect_ok(&format!("throttled restore at --jobs {jobs}"));
        took.push(started.elapsed());
        env.db
            .fingerprint(LIVE)
            .unwrap()
            .assert_same(&env.source, &format!("throttled restore at --jobs {jobs}"));
    }
    eprintln!(
        "restore through a 2 MiB/s-per-connection proxy: --jobs 1 {:.1} s, --jobs 4 {:.1} s \
         ({:.2}x)",
        took[0].as_secs_f64(),
        took[1].as_secs_f64(),
        took[1].as_secs_f64() / took[0].as_secs_f64()
    );
    assert!(
        took[1].as_secs_f64() <= 0.9 * took[0].as_secs_f64(),
        "--jobs 4 took {:?}, --jobs 1 {:?}",
        took[1],
        took[0]
    );
    env.reset_live();
    let out = env
        .restore_step(8)
        .opt("--log-format", "json")
        .run(&env.host);
    out.expect_ok("restore with --jobs 8");
    let peak = out.json()["host_peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no host_peak_rss_bytes in the JSON summary\n{out}"));
    eprintln!("host peak RSS, restore at --jobs 8: {} MiB", peak >> 20);
    assert!(peak <= 150 << 20, "peak RSS {} MiB", peak >> 20);
    env.db
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "restore at --jobs 8");
}

/// `backups export` of MariaDB artifacts, chunked or not, is one dump the
/// plain `mariadb` client loads into a new database: the same fingerprint
/// as the source (tables, triggers, views, routines and rows).
#[test]
fn exports_load_with_the_plain_client() {
    let env = setup();
    let dir = tempfile::tempdir().unwrap();
    for (jobs, name) in [(Some(2), "exported_chunked"), (None, "exported_one")] {
        let mut step = env
            .db
            .step("backup", SOURCE)
            .opt("--store", env.store.path_arg());
        if let Some(jobs) = jobs {
            step = step.opt("--jobs", jobs).param("chunk-mib", 1);
        }
        step.run(&env.host).expect_ok("backup");
        let script = dir.path().join(format!("{name}.sql"));
        let store = env.store.path_arg();
        env.host
            .run(&[
                "backups",
                "export",
                "--store",
                &store,
                "--plugin",
                "mysql",
                "--instance",
                INSTANCE,
                "--database",
                SOURCE,
                "--output",
                script.to_str().unwrap(),
            ])
            .expect_ok("export");
        env.db.create_database(name).unwrap();
        let mut client = env.db.client();
        client.arg(format!("--database={name}"));
        let dump = std::fs::read(&script).unwrap();
        let out =
            envsync_tests::process::run(client, Some(dump), std::time::Duration::from_secs(300))
                .unwrap();
        assert!(out.success(), "mariadb < {}:\n{out}", script.display());
        env.db
            .fingerprint(name)
            .unwrap()
            .assert_same(&env.source, name);
    }
}
