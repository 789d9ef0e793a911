//! Chunked PostgreSQL artifacts (docs/decisions/0019): parallel backup and
//! restore with `--jobs`, resume after a killed host, damaged chunks, and
//! today's single-stream artifacts, against a throwaway PostgreSQL cluster
//! and a folder store.
//!
//! The source has a few thousand-row tables and two larger ones (one without
//! a key, so a chunk loaded twice would show as duplicate rows in the
//! fingerprint), secondary indexes, foreign keys, a partitioned table, a
//! generated column, a sequence and a materialized view. `chunk-mib=1`
//! splits the larger tables into block ranges, so a few MiB of data make
//! dozens of chunks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use envsync_tests::faulty_proxy::FaultyProxy;
use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::postgres::{Fingerprint, HoldMode, PgCluster};
use envsync_tests::process::Running;
use envsync_tests::procs;
use envsync_tests::s3::S3Server;
use envsync_tests::store::LocalStore;

const INSTANCE: &str = "127.0.0.1";
const SOURCE: &str = "src";
const LIVE: &str = "live";
const SCRATCH: &str = "live-restore";
/// Rows of each larger table: about 12 MiB of heap each.
const BIG_ROWS: u64 = 120_000;

const SCHEMA: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    placed_at timestamptz NOT NULL,
    total numeric(12, 2) NOT NULL,
    note text,
    total_cents bigint GENERATED ALWAYS AS ((total * 100)::bigint) STORED
);
CREATE INDEX orders_placed_at ON orders (placed_at);
CREATE INDEX orders_customer ON orders (customer_id, placed_at);
CREATE TABLE events (at timestamptz NOT NULL, kind text NOT NULL, payload jsonb);
CREATE INDEX events_kind ON events (kind);
CREATE TABLE measurements (id bigint NOT NULL, taken date NOT NULL, value double precision,
                           customer_id integer REFERENCES customers (id),
                           PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX measurements_value ON measurements (value);
CREATE TABLE order_notes (order_id bigint NOT NULL REFERENCES orders (id), body text);
CREATE SEQUENCE invoice_numbers START 1000;
CREATE MATERIALIZED VIEW customer_totals AS
    SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
";

fn data() -> String {
    format!(
        "INSERT INTO customers (email, name) SELECT 'c' || i || '@example.com', 'Name ' || i \
           FROM generate_series(1, 2000) AS i;
         INSERT INTO orders (id, customer_id, placed_at, total, note)
           SELECT i, 1 + i % 2000, timestamptz '2026-01-01 00:00+00' + i * interval '1 minute',
                  (i % 997) / 7.0, CASE WHEN i % 5 = 0 THEN NULL ELSE md5(i::text) || E'\\ttab\\\\' END
           FROM generate_series(1, {BIG_ROWS}) AS i;
         INSERT INTO events SELECT timestamptz '2026-02-01 00:00+00' + i * interval '1 second',
                  'kind' || i % 13, jsonb_build_object('i', i, 'h', md5(i::text))
           FROM generate_series(1, {BIG_ROWS}) AS i;
         INSERT INTO measurements SELECT i, date '2025-06-01' + (i % 400), i * 1.5, 1 + i % 2000
           FROM generate_series(1, 20000) AS i;
         INSERT INTO order_notes SELECT i, 'note ' || i FROM generate_series(1, 3000) AS i;
         SELECT setval('invoice_numbers', 4242);
         REFRESH MATERIALIZED VIEW customer_totals;"
    )
}

struct Env {
    host: Host,
    pg: PgCluster,
    store: LocalStore,
    source: Fingerprint,
}

fn setup() -> Env {
    procs::become_subreaper();
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database(SOURCE).unwrap();
    pg.psql(SOURCE, SCHEMA).unwrap();
    pg.psql(SOURCE, &data()).unwrap();
    pg.psql(SOURCE, "VACUUM ANALYZE").unwrap();
    let source = pg.fingerprint(SOURCE).unwrap();
    Env {
        host,
        pg,
        store: LocalStore::new().unwrap(),
        source,
    }
}

impl Env {
    /// A proxy to the server holding each connection to 2 MiB/s, as a
    /// remote server's sessions are each bound by their own backend: a
    /// chunk takes about half a second to load, so a restore lasts long
    /// enough to be watched (or interrupted) even on a loaded machine where
    /// local loads end in milliseconds.
    fn throttle(&self) -> FaultyProxy {
        FaultyProxy::throttled_tcp((Ipv4Addr::LOCALHOST, self.pg.port()).into(), 2 << 20)
            .expect("a throttling proxy")
    }

    /// A restore of the latest backup into the live database through
    /// `proxy` with `jobs` sessions, running.
    fn restore_through(&self, proxy: &FaultyProxy, jobs: u32) -> Running {
        Step::new("postgres", "restore")
            .opt("--database", LIVE)
            .opt("--db-host", "127.0.0.1")
            .opt("--db-port", proxy.port())
            .opt("--db-user", self.pg.user())
            .opt("--store", self.store.path_arg())
            .opt("--from-database", SOURCE)
            .opt("--jobs", jobs)
            .spawn(&self.host)
            .unwrap()
    }

    /// The data chunks the scratch database records as committed.
    fn committed(&self) -> BTreeSet<String> {
        self.pg
            .psql(
                SCRATCH,
                "SELECT name FROM envsync_restore.loaded WHERE name LIKE 'data-%'",
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

    /// A chunked backup of the source with `jobs` sessions; its manifest.
    fn backup(&self, jobs: u32) -> serde_json::Value {
        self.pg
            .step("backup", SOURCE)
            .opt("--store", self.store.path_arg())
            .opt("--jobs", jobs)
            .param("chunk-mib", 1)
            .run(&self.host)
            .expect_ok(&format!("chunked backup with --jobs {jobs}"));
        self.latest_manifest()
    }

    fn latest_manifest(&self) -> serde_json::Value {
        let key = self.store.pointer(INSTANCE, SOURCE).expect("a pointer");
        let path = self.store.root().join(format!("{key}.manifest.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn restore_step(&self, jobs: u32) -> Step {
        self.restore_from(&self.store.path_arg(), jobs)
    }

    fn restore_from(&self, store: &str, jobs: u32) -> Step {
        self.pg
            .step("restore", LIVE)
            .opt("--store", store)
            .opt("--from-database", SOURCE)
            .opt("--jobs", jobs)
    }

    fn count(&self, db: &str, sql: &str) -> u64 {
        let out = self.pg.psql(db, sql).unwrap();
        out.parse()
            .unwrap_or_else(|_| panic!("not a number: {out:?} from {sql}"))
    }

    /// A live target with different content, and its fingerprint.
    fn reset_live(&self) -> Fingerprint {
        if self.pg.database_exists(LIVE).unwrap() {
            self.pg.drop_database(LIVE).unwrap();
        }
        self.pg.create_database(LIVE).unwrap();
        self.pg
            .psql(
                LIVE,
                "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('live data');",
            )
            .unwrap();
        self.pg.fingerprint(LIVE).unwrap()
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
        // 2 larger tables of ~12 MiB in 1 MiB ranges, plus the small ones.
        assert!(
            chunks.len() >= 20,
            "expected block-range chunks: {chunks:?}"
        );
        env.reset_live();
        let out = env.restore_step(jobs).run(&env.host);
        out.expect_ok(&format!("restore with --jobs {jobs}"));
        // The larger tables load first; their indexes are built while the
        // small ones still load, and the result is the same.
        let log = format!("{}{}", out.stdout, out.stderr);
        let early = log
            .lines()
            .find_map(|l| {
                let (n, _) =
                    l.split_once(" indexes and constraints were started while the data loaded")?;
                n.rsplit(' ').next()?.parse::<u32>().ok()
            })
            .unwrap_or(0);
        assert!(
            early > 0,
            "no index was built while the data loaded (--jobs {jobs}):\n{log}"
        );
        // Every foreign key follows its tables into the lanes: the plain
        // ones (orders → customers, order_notes → orders) and the
        // partitioned table's (measurements → customers, once both
        // partitions are in); the fingerprint below shows them validated
        // (a NOT VALID one would differ).
        assert!(
            log.contains("3 foreign keys were started while the data loaded"),
            "the foreign keys waited for the data (--jobs {jobs}):\n{log}"
        );
        env.pg
            .fingerprint(LIVE)
            .unwrap()
            .assert_same(&env.source, &format!("restore at --jobs {jobs}"));
        assert!(!env.pg.database_exists(SCRATCH).unwrap());
    }
}

#[test]
fn a_parallel_restore_runs_n_load_sessions_at_once() {
    let env = setup();
    env.backup(2);
    env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    let sessions = "SELECT count(*) FROM pg_stat_activity \
                    WHERE application_name = 'envsync-restore' AND query LIKE 'COPY%'";
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.has_exited().unwrap() && Instant::now() < deadline {
        most = most.max(env.count("postgres", sessions));
        std::thread::sleep(Duration::from_millis(5));
    }
    running
        .wait_timeout(Duration::from_secs(120))
        .expect_ok("parallel restore");
    assert_eq!(most, 2, "the server should show 2 concurrent COPY sessions");
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "parallel restore");
}

/// Indexes of the source whose builds [`index_builds`] reads.
const BUILT_INDEXES: [&str; 4] = [
    "orders_placed_at",
    "orders_customer",
    "events_kind",
    "orders_pkey",
];

/// How the server built each of [`BUILT_INDEXES`] since its log was `from`
/// bytes long: at DEBUG1 it logs "building index … serially" or "… with
/// request for N parallel workers".
fn index_builds(env: &Env, from: usize) -> Vec<(&'static str, String)> {
    let log = env.pg.log();
    let log = log.get(from..).unwrap_or_default();
    BUILT_INDEXES
        .iter()
        .map(|index| {
            let start = format!("building index \"{index}\" on table ");
            let line = log
                .lines()
                .find(|l| l.contains(&start))
                .unwrap_or_else(|| panic!("the server log should show {index} being built"));
            (*index, line.to_string())
        })
        .collect()
}

/// Each index build of a parallel restore runs in its own session unless
/// the operator grants it server workers (`index-build-workers`): the
/// `--jobs` sessions are the restore's parallelism. The server is set to
/// offer workers to any build, so a serial build is the restore's choice.
#[test]
fn index_builds_use_server_workers_only_when_granted() {
    let env = setup();
    env.backup(2);
    env.pg
        .psql(
            "postgres",
            "ALTER SYSTEM SET log_min_messages = debug1;\n\
             ALTER SYSTEM SET min_parallel_table_scan_size = '8kB';\n\
             SELECT pg_reload_conf();",
        )
        .unwrap();
    let live = env.reset_live();

    env.restore_step(2)
        .param("index-build-workers", 5000)
        .run(&env.host)
        .expect_fail(
            &[exit::USAGE],
            &["index-build-workers is 5000", "at most 1024"],
            "a restore granting more workers than PostgreSQL allows",
        );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after a refused parameter");
    assert!(!env.pg.database_exists(SCRATCH).unwrap());

    // A restore granting `workers` (None: the default) into a fresh live
    // database; how the server built the indexes.
    let restore = |workers: Option<u32>| {
        env.reset_live();
        let from = env.pg.log().len();
        let what = format!("a parallel restore with index-build-workers = {workers:?}");
        let mut step = env.restore_step(2);
        if let Some(workers) = workers {
            step = step.param("index-build-workers", workers);
        }
        step.run(&env.host).expect_ok(&what);
        env.pg
            .fingerprint(LIVE)
            .unwrap()
            .assert_same(&env.source, &what);
        index_builds(&env, from)
    };
    for (index, line) in restore(None) {
        assert!(
            line.ends_with("serially"),
            "by default {index} should be built without server workers: {line}"
        );
    }
    for (index, line) in restore(Some(2)) {
        assert!(
            line.contains("with request for 2 parallel workers"),
            "with index-build-workers = 2, {index} should be built with 2 workers: {line}"
        );
    }
}

#[test]
fn a_killed_restore_resumes_and_loads_no_chunk_twice() {
    let env = setup();
    let manifest = env.backup(2);
    let all = data_chunks(&manifest);
    let live = env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    // Kill the host once most data chunks are committed.
    let wanted = (all.len() * 6 / 10) as u64;
    env.wait_for_committed(&mut running, wanted);
    running.signal(libc::SIGKILL);
    running.wait_timeout(Duration::from_secs(10));
    // The children die with the host: nothing keeps loading.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.count(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'envsync-restore'",
    ) > 0
    {
        assert!(Instant::now() < deadline, "loaders outlived the host");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the kill");
    let committed = env.committed();
    assert!(committed.len() as u64 >= wanted);
    // A backend building an index outlives its killed client until the
    // index is done, holding its lock; this session stands in for one. The
    // rerun ends it first rather than waiting for it (or failing the swap).
    let mut leftover = env
        .pg
        .hold_session(
            SCRATCH,
            HoldMode::IdleInTransaction("LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE".into()),
        )
        .expect("a session holding a lock on the scratch database");

    let out = env.restore_step(2).run(&env.host);
    out.expect_ok("rerun of the killed restore");
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains(&format!(
            "ended 1 session(s) the interrupted restore left on \"{SCRATCH}\""
        )),
        "the rerun should end the leftover session:\n{log}"
    );
    assert!(leftover.was_terminated(Duration::from_secs(10)));
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
            "loading {} data chunks",
            all.len() - committed.len()
        )),
        "the rerun should load only the rest:\n{log}"
    );
    // Identical to the source: a chunk loaded twice would show as duplicate
    // rows in `events` (no key) and fail the fingerprint.
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the resumed restore");
    assert!(!env.pg.database_exists(SCRATCH).unwrap());
}

/// The database server restarts (as after a crash: immediate shutdown,
/// recovery) while a parallel restore loads: the run fails saying the
/// scratch database is kept, the live target is intact, and the rerun
/// resumes from what the server had committed, loading no chunk twice.
#[test]
fn a_database_restart_mid_restore_is_resumed_by_the_rerun() {
    let mut env = setup();
    let manifest = env.backup(2);
    let all = data_chunks(&manifest);
    let live = env.reset_live();
    let proxy = env.throttle();
    let mut running = env.restore_through(&proxy, 2);
    env.wait_for_committed(&mut running, (all.len() * 3 / 10) as u64);
    env.pg.restart().expect("restart the server");
    running.wait_timeout(Duration::from_secs(120)).expect_fail(
        &[exit::STEP_FAILED],
        &["kept scratch database"],
        "a restore whose server restarted",
    );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the restart");
    // What survived the restart is what the rerun skips: each chunk's rows
    // and its bookkeeping row were one transaction.
    let committed = env.committed();
    assert!(!committed.is_empty() && committed.len() < all.len());

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
    // `events` has no key: a chunk loaded twice would show here.
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the restore resumed after the restart");
    assert!(!env.pg.database_exists(SCRATCH).unwrap());
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
        &[chunk.as_str(), "damaged"],
        "restore of an artifact with a damaged chunk",
    );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the refused restore");
    assert!(!env.pg.database_exists(SCRATCH).unwrap());
}

#[test]
fn a_single_stream_artifact_still_restores() {
    let env = setup();
    // Without --jobs the backup is one pg_dump stream, as before.
    env.pg
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
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "single-stream restore");
}

/// A chunked backup to S3 (s3s-fs) and a restore from it with 8 sessions:
/// every chunk is its own object beside the artifact, the round trip is
/// identical, and the host's peak RSS stays within 150 MiB.
#[test]
fn s3_round_trip_with_eight_jobs_in_bounded_memory() {
    let env = setup();
    let s3 = S3Server::start().expect("start a throwaway S3 server");
    s3.create_bucket("chunked").unwrap();
    let store = s3.store("chunked", "envsync");
    s3.run(
        &env.host,
        &env.pg
            .step("backup", SOURCE)
            .opt("--store", store.url())
            .opt("--jobs", 4)
            .param("chunk-mib", 1),
    )
    .expect_ok("chunked backup to S3");
    let key = store.pointer(INSTANCE, SOURCE).expect("a pointer");
    let chunk_objects: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{key}.chunks/data-")))
        .collect();
    assert!(chunk_objects.len() >= 20, "{:#?}", store.keys());
    env.reset_live();
    let out = s3.run(
        &env.host,
        &env.restore_from(&store.url(), 8)
            .opt("--log-format", "json"),
    );
    out.expect_ok("restore from S3 with --jobs 8");
    let peak = out.json()["host_peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no host_peak_rss_bytes in the JSON summary\n{out}"));
    eprintln!(
        "host peak RSS, restore from S3 at --jobs 8: {} MiB",
        peak >> 20
    );
    assert!(peak <= 150 << 20, "peak RSS {} MiB", peak >> 20);
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "restore from S3");
}

/// An uncompressed chunked backup of the source with one chunk of `events`
/// (JSON payloads) broken near its start, its length kept, so psql rejects
/// a row of it: the chunk's name and its broken text.
fn backup_with_a_broken_events_chunk(env: &Env) -> (String, String) {
    env.pg
        .step("backup", SOURCE)
        .opt("--store", env.store.path_arg())
        .opt("--jobs", 2)
        .opt("--compression", "none")
        .param("chunk-mib", 1)
        .run(&env.host)
        .expect_ok("uncompressed chunked backup");
    let manifest = env.latest_manifest();
    let key = manifest["key"].as_str().unwrap();
    let (chunk, path, text) = data_chunks(&manifest)
        .into_iter()
        .find_map(|chunk| {
            let path = env.store.root().join(format!("{key}.chunks/{chunk}"));
            let text = String::from_utf8(std::fs::read(&path).unwrap()).ok()?;
            text.contains("{\"h\": ").then_some((chunk, path, text))
        })
        .expect("a chunk of events in plain text");
    let broken = text.replacen("{\"h\": ", "{\"h\"! ", 1);
    assert_eq!(broken.len(), text.len());
    std::fs::write(&path, &broken).unwrap();
    (chunk, broken)
}

/// A damaged chunk that its loader chokes on before the end (psql rejects a
/// row) is still reported as damaged, not as psql's failure: the host reads
/// on and finds the checksum wrong.
#[test]
fn a_chunk_its_loader_rejects_midway_is_reported_as_damaged() {
    let env = setup();
    let (chunk, _) = backup_with_a_broken_events_chunk(&env);
    let live = env.reset_live();
    let out = env.restore_step(2).run(&env.host);
    out.expect_fail(
        &[exit::ARTIFACT_REJECTED],
        &[chunk.as_str(), "damaged"],
        "restore of a chunk psql rejects midway",
    );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the refused restore");
}

/// A chunk whose rows the server refuses though it matches its manifest
/// (whoever could write the store rewrote both): the restore fails naming
/// that chunk with the server's own words (a load session may already have
/// been given several small chunks after it, so the message names every
/// chunk given and not committed), and the live target is unchanged.
#[test]
fn a_chunk_the_server_refuses_is_named_in_the_failure() {
    use sha2::{Digest, Sha256};
    let env = setup();
    let (chunk, broken) = backup_with_a_broken_events_chunk(&env);
    // The manifest agrees with the broken chunk: only the server can refuse it.
    let mut manifest = env.latest_manifest();
    let key = manifest["key"].as_str().unwrap().to_string();
    let entry = manifest["chunks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == chunk.as_str())
        .unwrap();
    assert!(entry["sha256"].is_string(), "no sha256 in {entry}");
    entry["sha256"] = hex::encode(Sha256::digest(broken.as_bytes())).into();
    let manifest_path = env.store.root().join(format!("{key}.manifest.json"));
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let live = env.reset_live();
    let out = env.restore_step(2).run(&env.host);
    out.expect_fail(
        &[exit::STEP_FAILED],
        &[chunk.as_str(), "invalid input syntax for type json"],
        "restore of a chunk the server refuses",
    );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&live, "the live target after the failed restore");
}

/// `backups export` of this store's latest backup of the source into `output`.
fn export(env: &Env, output: &std::path::Path) -> envsync_tests::process::Output {
    let store = env.store.path_arg();
    let output = output.to_str().unwrap();
    env.host.run(&[
        "backups",
        "export",
        "--store",
        store.as_str(),
        "--plugin",
        "postgres",
        "--instance",
        INSTANCE,
        "--database",
        SOURCE,
        "--output",
        output,
    ])
}

/// Loads `script` the way a user without envsync would: plain psql, one
/// transaction, stopping at the first error, into a new database `db`.
fn load_with_psql(env: &Env, db: &str, script: &std::path::Path) {
    env.pg.create_database(db).unwrap();
    let mut psql = env.pg.client("psql");
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", db, "-f"])
        .arg(script);
    let out = envsync_tests::process::run(psql, None, Duration::from_secs(300)).unwrap();
    assert!(
        out.success(),
        "psql could not load the export:\n{}",
        out.stderr
    );
}

/// Files left in `dir` (an export's temporary file would show here).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_chunked_artifact_exports_as_one_script_plain_psql_loads() {
    let env = setup();
    env.backup(2);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("src.sql");
    export(&env, &script).expect_ok("export of a chunked artifact");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("COPY public.events (") && l.ends_with(" FROM stdin;")),
        "no COPY of events"
    );
    assert!(text.contains("CREATE TABLE"), "no schema before the data");
    load_with_psql(&env, "exported", &script);
    env.pg
        .fingerprint("exported")
        .unwrap()
        .assert_same(&env.source, "the exported script loaded by psql");
}

#[test]
fn an_export_with_a_damaged_chunk_fails_and_leaves_no_file() {
    let env = setup();
    let manifest = env.backup(2);
    let key = manifest["key"].as_str().unwrap();
    let chunk = &data_chunks(&manifest)[3];
    let path = env.store.root().join(format!("{key}.chunks/{chunk}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    export(&env, &dir.path().join("src.sql")).expect_fail(
        &[exit::ARTIFACT_REJECTED],
        &[chunk.as_str(), "damaged"],
        "export of an artifact with a damaged chunk",
    );
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "nothing is left behind"
    );
}

#[test]
fn a_single_stream_artifact_exports_as_a_script_too() {
    let env = setup();
    env.pg
        .step("backup", SOURCE)
        .opt("--store", env.store.path_arg())
        .run(&env.host)
        .expect_ok("single-stream backup");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("src.sql");
    export(&env, &script).expect_ok("export of a single-stream artifact");
    load_with_psql(&env, "exported", &script);
    env.pg
        .fingerprint("exported")
        .unwrap()
        .assert_same(&env.source, "the exported single-stream artifact");
}

/// Progress counts chunk bytes: a configured chunked backup and restore
/// push their final progress to a Pushgateway, and the bytes cover every
/// chunk (not only the main stream, a short plan); the restore's expected
/// total is the main stream's size plus every chunk's stored size.
#[test]
fn progress_counts_the_bytes_of_every_chunk() {
    use envsync_tests::pushgateway::Pushgateway;
    let env = setup();
    let gw = Pushgateway::start().expect("start a Pushgateway");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    let task = |name: &str, database: &str, step: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nplugin = \"postgres\"\njobs = 2\n\
             params = {{ chunk-mib = 1 }}\n\
             database = {{ host = \"{host}\", port = {port}, user = \"{user}\", name = \"{database}\" }}\n\
             [[task.step]]\n{step}\n",
            host = env.pg.host(),
            port = env.pg.port(),
            user = env.pg.user(),
        )
    };
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"test\"\nstore = \"{store}\"\npushgateway = \"{gw}\"\n\
             state_dir = \"state\"\n\n{}{}",
            task("save", SOURCE, "op = \"backup\""),
            task(
                "load",
                LIVE,
                &format!("op = \"restore\"\nfrom = \"own\"\nfrom_database = \"{SOURCE}\"")
            ),
            store = env.store.path_arg(),
            gw = gw.url(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let progress = |database: &str, operation: &str| {
        let value = |name: &str| {
            gw.samples(name)
                .unwrap()
                .into_iter()
                .find(|s| {
                    s.name == name
                        && s.labels.get("database_db_name").map(String::as_str) == Some(database)
                        && s.labels.get("operation").map(String::as_str) == Some(operation)
                })
                .map(|s| s.value as u64)
        };
        (
            value("db_backup_job_progress_bytes").expect("no progress bytes pushed"),
            value("db_backup_job_progress_expected_bytes"),
        )
    };

    env.host
        .run(&["run", "--config", &config, "--task", "save"])
        .expect_ok("configured chunked backup");
    let manifest = env.latest_manifest();
    let chunk_bytes: u64 = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .sum();
    let main = manifest["size"].as_u64().unwrap();
    assert!(
        chunk_bytes > main,
        "{chunk_bytes} of chunks, {main} of plan"
    );
    let (bytes, _) = progress(SOURCE, "backup");
    assert!(
        bytes >= chunk_bytes,
        "the backup's progress ({bytes}) must count its chunks ({chunk_bytes}): {:?}",
        gw.samples("db_backup_job_progress").unwrap()
    );

    env.reset_live();
    env.host
        .run(&["run", "--config", &config, "--task", "load"])
        .expect_ok("configured chunked restore");
    let (bytes, expected) = progress(LIVE, "restore");
    assert_eq!(
        expected,
        Some(main + chunk_bytes),
        "the restore's expected total"
    );
    assert!(
        bytes >= chunk_bytes,
        "the restore's progress ({bytes}) must count its chunks ({chunk_bytes})"
    );
    env.pg
        .fingerprint(LIVE)
        .unwrap()
        .assert_same(&env.source, "the configured restore");
}
