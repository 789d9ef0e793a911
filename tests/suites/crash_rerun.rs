//! Crash recovery of a restore: the host is killed with SIGKILL at five
//! points of a PostgreSQL restore, and at three points of a MariaDB (mysql
//! plugin) restore, over an existing database; then the same restore is run
//! again. At every point: the host's children die with it (no orphan
//! keeps loading), the live database is intact (or, once the swap committed,
//! already the restored one), and the rerun succeeds and leaves exactly the
//! restored database, without scratch or old copies.
//!
//! The points are reached by watching the server, not by sleeping: the
//! host's `pg_restore` is let run in short bursts (SIGSTOP/SIGCONT) until
//! `pg_stat_progress_copy` or `pg_stat_progress_create_index` shows the
//! wanted stage of the load; the swap and the cleanup are made to wait on a
//! lock that a test session holds, seen waiting in `pg_stat_activity`.
//! MariaDB's loader (`mariadb`, fed the dump) is stepped the same way while
//! the scratch database's rows are counted, and its swap (`RENAME TABLE`)
//! waits on the metadata lock of a test session's open transaction, seen in
//! the process list.

use std::time::{Duration, Instant};

use envsync_tests::host_cli::{Expect, Host, Step};
use envsync_tests::mariadb::{Answer, MariaDb};
use envsync_tests::paths::fixture;
use envsync_tests::postgres::{Fingerprint, HeldSession, HoldMode, PgCluster, quote_literal};
use envsync_tests::process::Running;
use envsync_tests::procs::{self, Frozen};
use envsync_tests::store::LocalStore;

/// The database restored into, and the names the plugin loads and parks it under.
const LIVE: &str = "live";
const SCRATCH: &str = "live-restore";
const OLD: &str = "live-envsync-old";
/// The backed-up database; big enough that every stage of its load lasts.
const SOURCE: &str = "src";
const BIG_ROWS: u64 = 300_000;

/// The programs that load a restore: the loader stepped to a point.
const PG_LOADER: &[&str] = &["pg_restore"];
const MARIA_LOADER: &[&str] = &["mariadb", "mysql"];
/// How long any one stage may take to show up before the test gives up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Point {
    /// The artifact streams in: the first COPY into the scratch database has begun.
    Streaming,
    /// Half of the big table's rows are in.
    MidLoad,
    /// pg_restore builds an index (post-data).
    IndexBuild,
    /// The swap transaction waits to rename the live database.
    Swap,
    /// The swap committed; dropping the previous copy waits.
    Cleanup,
}

struct Env {
    host: Host,
    pg: PgCluster,
    store: LocalStore,
    restored: Fingerprint,
}

/// A cluster with the big source database backed up into a folder store.
fn setup() -> Env {
    // The children orphaned by killing the host become ours and are reaped.
    procs::become_subreaper();
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database(SOURCE).unwrap();
    pg.psql(
        SOURCE,
        &format!(
            "CREATE TABLE big (id integer NOT NULL, a text NOT NULL, b text);\n\
             INSERT INTO big SELECT i, md5(i::text) || md5((i * 31)::text), md5((i * 7)::text) \
             FROM generate_series(1, {BIG_ROWS}) AS i;\n\
             ALTER TABLE big ADD PRIMARY KEY (id);\n\
             CREATE INDEX big_a ON big (a);\n\
             CREATE INDEX big_b_a ON big (b, a);\n\
             CREATE TABLE small (k text PRIMARY KEY, v jsonb);\n\
             INSERT INTO small VALUES ('a', '{{\"x\": 1}}'), ('b', NULL);"
        ),
    )
    .unwrap();
    let store = LocalStore::new().unwrap();
    pg.step("backup", SOURCE)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("backup of the source database");
    let restored = pg.fingerprint(SOURCE).unwrap();
    Env {
        host,
        pg,
        store,
        restored,
    }
}

impl Env {
    fn restore_step(&self) -> Step {
        self.pg
            .step("restore", LIVE)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", SOURCE)
    }

    /// A number the server answers to `sql` (run on `postgres`).
    fn count(&self, sql: &str) -> u64 {
        let out = self.pg.psql("postgres", sql).unwrap();
        out.parse()
            .unwrap_or_else(|_| panic!("not a number: {out:?} from {sql}"))
    }

    /// Whether a backend other than the asking one matches `condition`.
    fn backend_where(&self, condition: &str) -> bool {
        self.count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ({condition})"
        )) > 0
    }

    /// The live database as it is before each crash: the sample shop.
    fn reset_live(&self) -> (Fingerprint, u32) {
        self.pg.drop_database(LIVE).unwrap();
        self.pg.create_database(LIVE).unwrap();
        self.pg
            .load_sql_file(LIVE, &fixture("postgres/sample.sql"))
            .unwrap();
        let oid = self.pg.database_oid(LIVE).unwrap().unwrap();
        (self.pg.fingerprint(LIVE).unwrap(), oid)
    }

    /// Holds a lock on the live database (as an object) that the swap's
    /// rename must wait for; nothing earlier in a restore needs it.
    fn hold_swap(&self) -> HeldSession {
        self.pg
            .hold_session(
                "postgres",
                HoldMode::IdleInTransaction(format!(
                    "COMMENT ON DATABASE {} IS 'held by the crash test'",
                    envsync_tests::postgres::quote_ident(LIVE)
                )),
            )
            .unwrap()
    }

    fn swap_waits(&self) -> bool {
        self.backend_where("wait_event_type = 'Lock' AND query LIKE '%RENAME TO%'")
    }

    fn drop_waits(&self) -> bool {
        self.backend_where("wait_event_type = 'Lock' AND query LIKE 'DROP DATABASE%'")
    }
}

/// Polls `reached` until it holds; fails if the host exits first or time runs out.
#[track_caller]
fn wait_for(running: &mut Running, what: &str, mut reached: impl FnMut() -> bool) {
    let deadline = Instant::now() + STAGE_TIMEOUT;
    while !reached() {
        if running.has_exited().unwrap_or(true) {
            let out = running.wait_timeout(Duration::from_secs(5));
            panic!("the restore ended before {what}\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {STAGE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lets the host's loader (a child named one of `programs`) run in bursts
/// of a few milliseconds until `reached` holds; returns it frozen there. A
/// plugin may run the same program more than once (scratch set-up, catalog
/// reads): the loader is the one whose effect `reached` sees while it runs.
#[track_caller]
fn step_child_until(
    running: &mut Running,
    programs: &[&'static str],
    what: &str,
    mut reached: impl FnMut() -> bool,
) -> Frozen {
    let host_pid = running.pid() as i32;
    let deadline = Instant::now() + STAGE_TIMEOUT;
    loop {
        let found = procs::descendants_of(host_pid).into_iter().find_map(|p| {
            let comm = procs::comm_of(p)?;
            programs.iter().find(|&&n| n == comm).map(|&n| (p, n))
        });
        if let Some((pid, program)) = found {
            let frozen = Frozen::freeze(pid, program);
            loop {
                // Let the server catch up with what the loader sent.
                std::thread::sleep(Duration::from_millis(5));
                if reached() {
                    return frozen;
                }
                if !procs::is_alive(pid) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no {what} within {STAGE_TIMEOUT:?}"
                );
                procs::signal(pid, libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(4));
                procs::signal(pid, libc::SIGSTOP);
            }
            drop(frozen);
        }
        if running.has_exited().unwrap_or(true) {
            let out = running.wait_timeout(Duration::from_secs(5));
            panic!("the restore ended before {what}\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {STAGE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs the host (it gets no chance to clean up) and checks that its
/// children die with it: each is reaped (as an orphan it became ours)
/// within moments, none keeps working. `frozen`, the loader held stopped
/// at the point, must be one of them; it is let go only after the kill.
#[track_caller]
fn kill_host(running: &mut Running, point: &str, frozen: Option<Frozen>) {
    let children = procs::descendants_of(running.pid() as i32);
    assert!(
        !children.is_empty(),
        "{point}: the host has no child to outlive it"
    );
    if let Some(f) = &frozen {
        assert!(
            children.contains(&f.pid()),
            "{point}: the loader is not the host's child"
        );
    }
    running.signal(libc::SIGKILL);
    let killed = running.wait_timeout(Duration::from_secs(30));
    assert!(
        !killed.success(),
        "{point}: the killed host reported success\n{killed}"
    );
    let orphans: Vec<String> = children
        .iter()
        .filter(|&&pid| !procs::reap(pid, Duration::from_secs(10)))
        .map(|&pid| {
            let what = format!("{pid} {:?}", procs::cmdline_of(pid));
            procs::signal(pid, libc::SIGKILL);
            procs::signal(pid, libc::SIGCONT);
            procs::reap(pid, Duration::from_secs(10));
            what
        })
        .collect();
    drop(frozen);
    assert!(
        orphans.is_empty(),
        "{point}: children of the killed host still ran: {orphans:?}"
    );
}

/// Waits until the server no longer runs what the killed host sent it.
#[track_caller]
fn wait_until_gone(point: &str, what: &str, mut still_there: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while still_there() {
        assert!(
            Instant::now() < deadline,
            "{point}: {what} is still on the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the host with SIGKILL at `point` of a restore over `live`, checks
/// what the crash left, then reruns the restore and checks its result.
fn crash_then_rerun(point: Point) {
    let env = setup();
    let (before, before_oid) = env.reset_live();
    let scratch = quote_literal(SCRATCH);

    let mut swap_gate = matches!(point, Point::Swap | Point::Cleanup).then(|| env.hold_swap());
    let mut drop_gate = None;
    let mut running = env.restore_step().spawn(&env.host).unwrap();
    let frozen = match point {
        Point::Streaming => Some(step_child_until(&mut running, PG_LOADER, "a COPY", || {
            env.count(&format!(
                "SELECT count(*) FROM pg_stat_progress_copy WHERE datname = {scratch}"
            )) > 0
        })),
        Point::MidLoad => Some(step_child_until(
            &mut running,
            PG_LOADER,
            "half of the big table loaded",
            || {
                env.count(&format!(
                    "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy \
                     WHERE datname = {scratch}"
                )) >= BIG_ROWS / 2
            },
        )),
        Point::IndexBuild => Some(step_child_until(
            &mut running,
            PG_LOADER,
            "an index build",
            || {
                env.count(&format!(
                    "SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = {scratch}"
                )) > 0
            },
        )),
        Point::Swap => {
            wait_for(&mut running, "the swap waiting on its lock", || {
                env.swap_waits()
            });
            None
        }
        Point::Cleanup => {
            wait_for(&mut running, "the swap waiting on its lock", || {
                env.swap_waits()
            });
            // Queued behind the swap, granted when it commits; the drop of
            // the previous copy then waits behind it.
            drop_gate = Some(
                env.pg
                    .hold_session(
                        "postgres",
                        HoldMode::WaitingForLock(
                            "LOCK TABLE pg_catalog.pg_database IN SHARE MODE".into(),
                        ),
                    )
                    .unwrap(),
            );
            swap_gate = None;
            wait_for(
                &mut running,
                "the drop of the previous copy waiting",
                || env.drop_waits(),
            );
            None
        }
    };

    kill_host(&mut running, &format!("{point:?}"), frozen);

    // The locks go; whatever the server was still doing for the dead run
    // (the swap's renames roll back when its client is found gone, the drop
    // completes) finishes.
    drop(swap_gate);
    drop(drop_gate);
    wait_until_gone(
        &format!("{point:?}"),
        "the killed run's swap or drop",
        || env.backend_where("query LIKE '%RENAME TO%' OR query LIKE 'DROP DATABASE%'"),
    );

    // What the crash left: a scratch database until the swap, after it the
    // previous copy (dropped by the drop the kill interrupted).
    assert_eq!(
        env.pg.database_exists(SCRATCH).unwrap(),
        !matches!(point, Point::Cleanup),
        "{point:?}: databases after the kill: {:?}",
        env.pg.databases()
    );
    let live = env.pg.fingerprint(LIVE).unwrap();
    if matches!(point, Point::Cleanup) {
        live.assert_same(
            &env.restored,
            &format!("{point:?}: the live database after a kill past the swap"),
        );
    } else {
        before.assert_same(
            &live,
            &format!("{point:?}: the live database after the kill"),
        );
        assert_eq!(
            env.pg.database_oid(LIVE).unwrap(),
            Some(before_oid),
            "{point:?}: the live database was replaced by a killed restore"
        );
    }

    let rerun = env.restore_step().run(&env.host);
    rerun.expect_ok(&format!("{point:?}: the restore rerun after the kill"));
    env.pg.fingerprint(LIVE).unwrap().assert_same(
        &env.restored,
        &format!("{point:?}: the live database after the rerun"),
    );
    assert_eq!(
        env.pg.databases().unwrap(),
        vec![LIVE.to_string(), SOURCE.to_string()],
        "{point:?}: scratch ({SCRATCH}) or previous ({OLD}) copies are left after the rerun"
    );
    assert!(
        !env.backend_where(&format!("datname IN ({scratch}, {})", quote_literal(OLD))),
        "{point:?}: sessions on the scratch or old database remain after the rerun"
    );
}

#[test]
fn killed_while_the_artifact_streams_in() {
    crash_then_rerun(Point::Streaming);
}

#[test]
fn killed_mid_load() {
    crash_then_rerun(Point::MidLoad);
}

#[test]
fn killed_during_an_index_build() {
    crash_then_rerun(Point::IndexBuild);
}

#[test]
fn killed_while_the_swap_waits() {
    crash_then_rerun(Point::Swap);
}

#[test]
fn killed_while_dropping_the_previous_copy() {
    crash_then_rerun(Point::Cleanup);
}

// MariaDB ----------------------------------------------------------------------

/// The mysql plugin's names for the MariaDB restore (docs/decisions/0007).
const MARIA_SCRATCH: &str = "live-envsync-restore";
const MARIA_OLD: &str = "live-envsync-old";

#[derive(Debug, Clone, Copy)]
enum MariaPoint {
    /// The dump streams into the loader: the big table exists in the scratch database.
    Streaming,
    /// Half of the big table's rows are in the scratch database.
    MidLoad,
    /// The swap's `RENAME TABLE` waits for a metadata lock on the live tables.
    Swap,
}

struct MariaEnv {
    host: Host,
    db: MariaDb,
    store: LocalStore,
    restored: envsync_tests::mariadb::Fingerprint,
}

fn maria_setup() -> MariaEnv {
    procs::become_subreaper();
    let host = Host::built();
    let db = MariaDb::start().expect("start a throwaway MariaDB server");
    db.create_database(SOURCE).unwrap();
    db.sql(
        Some(SOURCE),
        &format!(
            "CREATE TABLE big (id integer NOT NULL PRIMARY KEY, a text NOT NULL, b text) ENGINE=InnoDB;\n\
             INSERT INTO big SELECT seq, concat(md5(seq), md5(seq * 31)), md5(seq * 7) \
             FROM seq_1_to_{BIG_ROWS};\n\
             CREATE TABLE small (k varchar(10) PRIMARY KEY, v text);\n\
             INSERT INTO small VALUES ('a', 'x'), ('b', NULL);"
        ),
    )
    .unwrap();
    let store = LocalStore::new().unwrap();
    db.step("backup", SOURCE)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("backup of the source database");
    let restored = db.fingerprint(SOURCE).unwrap();
    MariaEnv {
        host,
        db,
        store,
        restored,
    }
}

impl MariaEnv {
    fn restore_step(&self) -> Step {
        self.db
            .step("restore", LIVE)
            .opt("--store", self.store.path_arg())
            .opt("--from-database", SOURCE)
    }

    fn number(&self, sql: &str) -> u64 {
        let out = self.db.sql(None, sql).unwrap();
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {out:?} from {sql}"))
    }

    fn scratch_has_big(&self) -> bool {
        self.number(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{MARIA_SCRATCH}' \
             AND table_name = 'big'"
        )) > 0
    }

    fn scratch_big_rows(&self) -> u64 {
        if !self.scratch_has_big() {
            return 0;
        }
        self.number(&format!("SELECT count(*) FROM `{MARIA_SCRATCH}`.big"))
    }

    /// Whether a session runs a statement that waits for a metadata lock
    /// and contains `text`.
    fn waiting(&self, text: &str) -> bool {
        self.number(&format!(
            "SELECT count(*) FROM information_schema.processlist WHERE state LIKE \
             'Waiting for table metadata lock%' AND info LIKE '%{text}%'"
        )) > 0
    }

    /// The base tables of `db`, sorted (views left out).
    fn base_tables(&self, db: &str) -> Vec<String> {
        let out = self
            .db
            .sql(
                None,
                &format!(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' \
                     AND table_type = 'BASE TABLE' ORDER BY table_name"
                ),
            )
            .unwrap();
        let mut names: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(envsync_tests::mariadb::unescape)
            .collect();
        names.sort();
        names
    }

    /// Whether another session runs a statement containing `text`, in any state.
    fn running(&self, text: &str) -> bool {
        self.number(&format!(
            "SELECT count(*) FROM information_schema.processlist WHERE id <> connection_id() \
             AND info LIKE '%{text}%' AND info NOT LIKE '%processlist%'"
        )) > 0
    }

    fn reset_live(&self) -> envsync_tests::mariadb::Fingerprint {
        self.db.drop_database(LIVE).unwrap();
        self.db.create_database(LIVE).unwrap();
        self.db
            .load_sql_file(LIVE, &fixture("mysql/sample.sql"))
            .unwrap();
        self.db.fingerprint(LIVE).unwrap()
    }
}

fn maria_crash_then_rerun(point: MariaPoint) {
    let env = maria_setup();
    let before = env.reset_live();

    // An open transaction that read a live table holds its metadata lock:
    // the swap's RENAME TABLE waits for it.
    let mut holder = None;
    let mut running = match point {
        MariaPoint::Swap => {
            let mut session = env.db.session(LIVE).unwrap();
            session.send("BEGIN;\n").unwrap();
            let held = session
                .query("SELECT COUNT(*) FROM order_items", Duration::from_secs(30))
                .unwrap();
            assert!(matches!(held, Answer::Row(_)), "{held:?}");
            holder = Some(session);
            // A long lock wait: the swap stays waiting until the kill.
            env.restore_step()
                .param("swap-lock-timeout", 600)
                .spawn(&env.host)
                .unwrap()
        }
        _ => env.restore_step().spawn(&env.host).unwrap(),
    };
    let frozen = match point {
        MariaPoint::Streaming => Some(step_child_until(
            &mut running,
            MARIA_LOADER,
            "the big table",
            || env.scratch_has_big(),
        )),
        MariaPoint::MidLoad => Some(step_child_until(
            &mut running,
            MARIA_LOADER,
            "half of the big table loaded",
            || env.scratch_big_rows() >= BIG_ROWS / 2,
        )),
        MariaPoint::Swap => {
            wait_for(&mut running, "the swap waiting on its lock", || {
                env.waiting("RENAME TABLE")
            });
            None
        }
    };
    if matches!(point, MariaPoint::Streaming | MariaPoint::MidLoad) {
        // Frozen inside the load, not after it.
        let rows = env.scratch_big_rows();
        assert!(
            rows < BIG_ROWS,
            "{point:?}: the load had already finished ({rows} rows)"
        );
    }

    kill_host(&mut running, &format!("{point:?}"), frozen);

    // The holder's transaction ends. Whatever the server still had of the
    // dead run (a RENAME already sent) then finishes or is dropped.
    if let Some(mut h) = holder.take() {
        h.send("COMMIT;\n").unwrap();
        h.close();
    }
    wait_until_gone(&format!("{point:?}"), "the killed run's RENAME", || {
        env.waiting("") || env.running("RENAME TABLE")
    });

    // Before the swap the live database is untouched. The swap's RENAME,
    // once the server has it, runs even though its client is gone (MariaDB
    // does not notice a dead client while a statement waits for a lock), and
    // it moves every table or none (0007): the live tables are all the old
    // ones or all the restored ones, never a mix. The objects recreated after
    // the RENAME are missing then; the rerun must repair that.
    let tables = env.base_tables(LIVE);
    let old_tables: Vec<String> = before.tables.keys().cloned().collect();
    let new_tables: Vec<String> = env.restored.tables.keys().cloned().collect();
    match point {
        MariaPoint::Swap if tables == new_tables => {
            eprintln!("{point:?}: the server completed the dead run's RENAME");
            // (The fingerprint cannot be taken here: the old views still
            // stand and point at tables that left.)
            for t in &new_tables {
                assert_eq!(
                    env.number(&format!("SELECT count(*) FROM `{LIVE}`.`{t}`")),
                    env.restored.tables[t].rows,
                    "{point:?}: rows of table {t} after the dead run's RENAME"
                );
            }
        }
        MariaPoint::Swap => assert_eq!(tables, old_tables, "{point:?}: live tables after the kill"),
        _ => before.assert_same(
            &env.db.fingerprint(LIVE).unwrap(),
            &format!("{point:?}: the live database after the kill"),
        ),
    }

    let rerun = env.restore_step().run(&env.host);
    rerun.expect_ok(&format!("{point:?}: the restore rerun after the kill"));
    // The rerun says what it found and repairs it (0007).
    let renamed = matches!(point, MariaPoint::Swap) && tables == new_tables;
    assert_eq!(
        format!("{}{}", rerun.stdout, rerun.stderr).contains("was interrupted after its RENAME"),
        renamed,
        "{point:?}: the rerun's warning of an interrupted swap\n{rerun}"
    );
    env.db.fingerprint(LIVE).unwrap().assert_same(
        &env.restored,
        &format!("{point:?}: the live database after the rerun"),
    );
    assert_eq!(
        env.db.databases().unwrap(),
        vec![LIVE.to_string(), SOURCE.to_string()],
        "{point:?}: scratch ({MARIA_SCRATCH}) or previous ({MARIA_OLD}) copies are left after the rerun"
    );
}

#[test]
fn mariadb_killed_while_the_dump_streams_in() {
    maria_crash_then_rerun(MariaPoint::Streaming);
}

#[test]
fn mariadb_killed_mid_load() {
    maria_crash_then_rerun(MariaPoint::MidLoad);
}

#[test]
fn mariadb_killed_while_the_swap_waits() {
    maria_crash_then_rerun(MariaPoint::Swap);
}
