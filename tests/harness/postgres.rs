//! A throwaway PostgreSQL 15 cluster on 127.0.0.1, and ways to compare databases.
//!
//! [`PgCluster::start`] runs `initdb` into a temporary folder and starts the
//! `postgres` server as a direct child of the test process (not through
//! `pg_ctl`, whose server would be orphaned and, once stopped, stay a zombie
//! under a PID 1 that does not reap). The server runs on a random port with
//! `fsync=off`, trusts every local connection, and is shut down (immediate
//! mode) and reaped when the [`PgCluster`] is dropped. When the tests run as
//! root the server runs as the `postgres` user, which owns the folder.
//!
//! [`PgCluster::fingerprint`] captures a database's schema (`pg_dump -s`) and
//! the contents of every table and sequence; two databases with equal
//! fingerprints are equal in schema and data.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::host_cli::Step;
use crate::ports::free_port;
use crate::process;

/// Where the PostgreSQL 15 server programs are (`ENVSYNC_PG_BIN` overrides).
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("ENVSYNC_PG_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// How long a single client program (psql, pg_dump) may run in the harness.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// `"name"`, doubling inner quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, doubling inner quotes (standard_conforming_strings is on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The uid and gid of the `postgres` user when running as root (the server
/// refuses to run as root); `None` when not root.
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, but there is no `postgres` user to run the server as");
    }
    // SAFETY: pw is non-null and points to a valid passwd entry.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// A client command with a clean environment: no `PG*` variable of the
/// caller leaks into it.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGCLIENTENCODING", "UTF8")
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// A running throwaway cluster; stopped and deleted on drop.
pub struct PgCluster {
    port: u16,
    postmaster: Option<Child>,
    bin: PathBuf,
    // Declared last: removed after the server is gone.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates and starts a cluster on a random free port (retrying with
    /// another port if the chosen one was taken in the meantime).
    pub fn start() -> Result<PgCluster> {
        let bin = pg_bin_dir();
        if !bin.join("initdb").is_file() {
            bail!(
                "PostgreSQL 15 server programs not found in {} (install postgresql-15, or set ENVSYNC_PG_BIN)",
                bin.display()
            );
        }
        let user = server_user()?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("envsync-pg-");
        // The `postgres` user must be able to reach the folder.
        let dir = if user.is_some() {
            builder.tempdir_in("/tmp")?
        } else {
            builder.tempdir()?
        };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("could not give the cluster folder to the postgres user")?;
        }
        let data = dir.path().join("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "--no-sync",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(dir.path());
        as_user(&mut initdb, user);
        let out = process::run(initdb, None, Duration::from_secs(120))?;
        if !out.success() {
            bail!("initdb failed\n{out}");
        }

        let pid_file = data.join("postmaster.pid");
        let log_path = dir.path().join("log");
        let mut last_error = String::new();
        for _attempt in 0..8 {
            let port = free_port()?;
            let log = File::options().create(true).append(true).open(&log_path)?;
            let log_start = log.metadata()?.len() as usize;
            let mut child = postmaster(&bin, dir.path(), port, log, user)?;
            match wait_ready(&mut child, &pid_file, Duration::from_secs(60)) {
                Ok(()) => {
                    return Ok(PgCluster {
                        port,
                        postmaster: Some(child),
                        bin,
                        dir,
                    });
                }
                Err(e) => {
                    shutdown(&mut child);
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let new_lines = log.get(log_start..).unwrap_or(&log);
                    let port_taken = new_lines.contains("could not bind")
                        || new_lines.contains("Address already in use")
                        || new_lines.contains("could not create any TCP/IP sockets");
                    last_error = format!("{e}\n--- server log ---\n{new_lines}");
                    if !port_taken {
                        bail!("PostgreSQL did not start: {last_error}");
                    }
                    let _ = std::fs::remove_file(&pid_file);
                }
            }
        }
        bail!("PostgreSQL did not start on any of 8 random ports: {last_error}")
    }

    /// Restarts the server as a crash would (immediate shutdown, then
    /// crash recovery at start) on the same port, with the same data:
    /// every session is cut off, and commits not yet flushed
    /// (`synchronous_commit=off`) may be lost.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))?;
        let mut child = postmaster(&self.bin, self.dir.path(), self.port, log, server_user()?)?;
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Err(e) = wait_ready(&mut child, &pid_file, Duration::from_secs(60)) {
            shutdown(&mut child);
            bail!(
                "PostgreSQL did not come back after a restart: {e}\n{}",
                self.log()
            );
        }
        self.postmaster = Some(child);
        Ok(())
    }

    /// Immediate shutdown; waits for the server.
    fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            shutdown(&mut child);
        }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        "postgres"
    }

    /// The cluster's folder (data directory, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// A PostgreSQL client program of the same version as the server, with a
    /// clean environment and the connection options of this cluster.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = clean_command(self.bin.join(program));
        cmd.arg("-h")
            .arg(self.host())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(self.user());
        cmd
    }

    /// Creates a superuser `user` with `password` whose TCP logins must give
    /// that password (scram-sha-256), while every other user stays on trust.
    pub fn require_password(&self, user: &str, password: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}",
                quote_ident(user),
                quote_literal(password)
            ),
        )?;
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!(
                "host all {} 127.0.0.1/32 scram-sha-256\n{rules}",
                quote_ident(user)
            ),
        )?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// `envsync-host run --plugin postgres --op OP --database DB` with this
    /// cluster's `--db-host`, `--db-port` and `--db-user`.
    pub fn step(&self, op: &str, database: &str) -> Step {
        Step::new("postgres", op)
            .opt("--database", database)
            .opt("--db-host", self.host())
            .opt("--db-port", self.port)
            .opt("--db-user", self.user())
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]);
        cmd
    }

    /// Runs `sql` (read from stdin, stop on the first error) against `db`;
    /// returns stdout, trimmed (unaligned, tuples only: `a|b` per row).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = process::run(
            self.psql_command(db),
            Some(sql.as_bytes().to_vec()),
            CLIENT_TIMEOUT,
        )?;
        if !out.success() {
            let shown: String = sql.chars().take(600).collect();
            bail!(
                "psql on database {db} failed ({}): {}\n--- SQL ---\n{shown}",
                out.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "timed out".into()),
                out.stderr.trim()
            );
        }
        Ok(out.stdout.trim().to_string())
    }

    /// Runs a SQL file against `db` (stop on the first error).
    pub fn load_sql_file(&self, db: &str, path: &Path) -> Result<()> {
        let mut cmd = self.psql_command(db);
        cmd.arg("-f").arg(path);
        let out = process::run(cmd, None, CLIENT_TIMEOUT)?;
        if !out.success() {
            bail!(
                "loading {} into {db} failed: {}",
                path.display(),
                out.stderr.trim()
            );
        }
        Ok(())
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .map(drop)
    }

    pub fn drop_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        )
        .map(drop)
    }

    pub fn database_exists(&self, name: &str) -> Result<bool> {
        let n = self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(name)
            ),
        )?;
        Ok(n == "1")
    }

    /// The databases other than `postgres`, `template0` and `template1`, sorted.
    pub fn databases(&self) -> Result<Vec<String>> {
        let out = self.psql(
            "postgres",
            "SELECT datname FROM pg_database \
             WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY datname",
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The OID of a database: it changes when a database is replaced, so an
    /// unchanged OID proves the database was not swapped.
    pub fn database_oid(&self, name: &str) -> Result<Option<u32>> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT oid FROM pg_database WHERE datname = {}",
                quote_literal(name)
            ),
        )?;
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out.parse().context("database oid")?))
    }

    /// The owner of a database.
    pub fn database_owner(&self, name: &str) -> Result<String> {
        self.psql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}",
                quote_literal(name)
            ),
        )
    }

    /// Client sessions connected to `db` (not counting the one asking, nor
    /// autovacuum workers).
    pub fn connections_to(&self, db: &str) -> Result<u32> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                quote_literal(db)
            ),
        )?;
        Ok(out.parse()?)
    }

    /// `md5(string_agg(t::text, '|' ORDER BY t::text))` over all rows of
    /// `table` (an SQL name, e.g. `public.customers`); md5 of '' when empty.
    pub fn table_md5(&self, db: &str, table: &str) -> Result<String> {
        self.psql(
            db,
            &format!(
                "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\"), '')) FROM {table} t"
            ),
        )
    }

    /// Number of rows of `table` (an SQL name).
    pub fn row_count(&self, db: &str, table: &str) -> Result<u64> {
        Ok(self
            .psql(db, &format!("SELECT count(*) FROM {table}"))?
            .parse()?)
    }

    /// The schema-only dump of `db` (`pg_dump -s --no-owner --no-privileges`),
    /// normalised so that dumps of equal databases under different names are
    /// equal: the `\restrict`/`\unrestrict` lines (with a random key, printed
    /// since 15.14) and all `--` comment lines (object headers, "Dumped from",
    /// and anything naming the database) are removed, and runs of blank lines
    /// collapsed. Note: a line of a function body that starts with `--` in
    /// column 0 is dropped too.
    pub fn schema_dump(&self, db: &str) -> Result<String> {
        let mut cmd = self.client("pg_dump");
        cmd.args(["-s", "--no-owner", "--no-privileges", "-d", db]);
        let out = process::run(cmd, None, CLIENT_TIMEOUT)?;
        if !out.success() {
            bail!("pg_dump -s of {db} failed: {}", out.stderr.trim());
        }
        Ok(normalise_schema_dump(&out.stdout))
    }

    /// Schema and data of `db`; see [`Fingerprint`].
    pub fn fingerprint(&self, db: &str) -> Result<Fingerprint> {
        let schema = self.schema_dump(db)?;
        let relations = self.psql(
            db,
            "SELECT c.relkind, format('%I.%I', n.nspname, c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm', 'S') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
             ORDER BY 2",
        )?;
        let mut table_parts = vec![];
        let mut sequence_parts = vec![];
        for line in relations.lines().filter(|l| !l.is_empty()) {
            let (kind, name) = line
                .split_once('|')
                .ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
            if kind == "S" {
                sequence_parts.push(format!(
                    "SELECT {}, last_value::text || ',' || is_called::text FROM {name}",
                    quote_literal(name)
                ));
            } else {
                table_parts.push(format!(
                    "SELECT {}, count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\"), '')) FROM {name} t",
                    quote_literal(name)
                ));
            }
        }
        let mut tables = BTreeMap::new();
        if !table_parts.is_empty() {
            let out = self.psql(db, &table_parts.join("\nUNION ALL\n"))?;
            for line in out.lines().filter(|l| !l.is_empty()) {
                let mut parts = line.rsplitn(3, '|');
                let (md5, rows, name) = (parts.next(), parts.next(), parts.next());
                let (Some(md5), Some(rows), Some(name)) = (md5, rows, name) else {
                    bail!("unexpected line {line:?}");
                };
                tables.insert(
                    name.to_string(),
                    TableData {
                        rows: rows.parse()?,
                        md5: md5.to_string(),
                    },
                );
            }
        }
        let mut sequences = BTreeMap::new();
        if !sequence_parts.is_empty() {
            let out = self.psql(db, &sequence_parts.join("\nUNION ALL\n"))?;
            for line in out.lines().filter(|l| !l.is_empty()) {
                let (name, state) = line
                    .rsplit_once('|')
                    .ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
                sequences.insert(name.to_string(), state.to_string());
            }
        }
        Ok(Fingerprint {
            schema,
            tables,
            sequences,
        })
    }

    /// Opens a session on `db` that stays connected (see [`HoldMode`]) and
    /// returns once the server lists it in `pg_stat_activity`.
    pub fn hold_session(&self, db: &str, mode: HoldMode) -> Result<HeldSession> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let app = format!(
            "envsync-test-holder-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db])
            .env("PGAPPNAME", &app)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("could not start psql")?;
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
                s
            })
        });
        let mut stdin = child.stdin.take();
        // The session counts as established once pg_stat_activity shows it so.
        let (sql, established) = match &mode {
            HoldMode::Sleep => ("SELECT pg_sleep(600);\n".to_string(), "state = 'active'"),
            HoldMode::IdleInTransaction(sql) => {
                (format!("BEGIN;\n{sql};\n"), "state = 'idle in transaction'")
            }
            HoldMode::WaitingForLock(sql) => (
                format!("BEGIN;\n{sql};\n"),
                "state = 'active' AND wait_event_type = 'Lock'",
            ),
        };
        if let Some(pipe) = stdin.as_mut() {
            pipe.write_all(sql.as_bytes())?;
            pipe.flush()?;
        }
        let mut session = HeldSession {
            child: Some(child),
            stdin,
            stderr,
            app: app.clone(),
            db: db.to_string(),
            status: None,
            stderr_text: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = {} AND {established}",
                    quote_literal(&app),
                ),
            )?;
            if n == "1" {
                return Ok(session);
            }
            if session.has_exited() {
                bail!(
                    "the holding session on {db} ended before it was established: {}",
                    session.stderr_text.trim()
                );
            }
            if Instant::now() >= deadline {
                bail!("the holding session on {db} never showed up with {established}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server of the cluster in `dir` on `port`, logging to `log`.
fn postmaster(
    bin: &Path,
    dir: &Path,
    port: u16,
    log: File,
    user: Option<(u32, u32)>,
) -> Result<Child> {
    let mut server = Command::new(bin.join("postgres"));
    server
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "listen_addresses=127.0.0.1",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    as_user(&mut server, user);
    server.spawn().context("could not start postgres")
}

/// Waits until the server says it is ready in `postmaster.pid` (line 8, as
/// `pg_ctl -w` reads it), or fails if it exits or takes too long.
fn wait_ready(child: &mut Child, pid_file: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited during start-up ({status})");
        }
        if let Ok(text) = std::fs::read_to_string(pid_file)
            && text.lines().nth(7).is_some_and(|s| s.trim() == "ready")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the server was not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Immediate shutdown (SIGQUIT: the postmaster ends its backends, then
/// exits), SIGKILL if that takes too long; the server is reaped either way.
fn shutdown(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGQUIT);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        // std drops supplementary groups when changing uid as root.
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp").env("USER", "postgres");
    }
}

fn normalise_schema_dump(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    let mut blank = false;
    for line in dump.lines() {
        if line.starts_with("\\restrict ")
            || line.starts_with("\\unrestrict ")
            || line.starts_with("--")
        {
            continue;
        }
        if line.trim().is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// How a [`HeldSession`] keeps its connection busy.
#[derive(Debug, Clone)]
pub enum HoldMode {
    /// Runs `SELECT pg_sleep(600)`.
    Sleep,
    /// `BEGIN`, runs the given statement (e.g. a `SELECT` that takes a lock on
    /// a table), then sits idle in the open transaction.
    IdleInTransaction(String),
    /// `BEGIN`, then the given statement, which is expected to wait for a
    /// lock someone else holds; established once it waits. When granted, the
    /// session sits idle in the open transaction, holding what it took.
    WaitingForLock(String),
}

/// A `psql` session held open on a database; killed and reaped on drop.
pub struct HeldSession {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    app: String,
    db: String,
    status: Option<ExitStatus>,
    stderr_text: String,
}

impl HeldSession {
    /// The `application_name` this session shows in `pg_stat_activity`.
    pub fn application_name(&self) -> &str {
        &self.app
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    fn has_exited(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                self.child = None;
                if let Some(h) = self.stderr.take() {
                    self.stderr_text = h.join().unwrap_or_default();
                }
                true
            }
            _ => false,
        }
    }

    /// Finds out whether the server ended this session: sends one more
    /// statement and closes the input, then waits up to `timeout` for psql to
    /// exit. A terminated session makes psql exit with an error; a live one
    /// either exits successfully or is still sleeping when time is up (it is
    /// then killed). Returns whether it was terminated.
    pub fn was_terminated(&mut self, timeout: Duration) -> bool {
        if let Some(mut pipe) = self.stdin.take() {
            let _ = pipe.write_all(b"SELECT 1;\n");
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_exited() {
                return !self.status.is_some_and(|s| s.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// What psql printed on stderr (available once it has exited).
    pub fn stderr(&self) -> &str {
        &self.stderr_text
    }

    fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
        if let Some(h) = self.stderr.take()
            && h.is_finished()
        {
            self.stderr_text = h.join().unwrap_or_default();
        }
    }
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The data of one table: row count and ordered md5 of all rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableData {
    pub rows: u64,
    pub md5: String,
}

/// Schema and data of one database. Equal fingerprints mean equal schema
/// (normalised `pg_dump -s`) and equal rows in every table of every
/// non-system schema, and equal sequence positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub schema: String,
    /// `schema.table` → rows and md5.
    pub tables: BTreeMap<String, TableData>,
    /// `schema.sequence` → `last_value,is_called`.
    pub sequences: BTreeMap<String, String>,
}

impl Fingerprint {
    /// A human list of what differs between `self` and `other`.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut diffs = vec![];
        if self.schema != other.schema {
            let mine: Vec<&str> = self.schema.lines().collect();
            let theirs: Vec<&str> = other.schema.lines().collect();
            let only_mine: Vec<&str> = mine
                .iter()
                .filter(|l| !theirs.contains(l))
                .copied()
                .take(20)
                .collect();
            let only_theirs: Vec<&str> = theirs
                .iter()
                .filter(|l| !mine.contains(l))
                .copied()
                .take(20)
                .collect();
            diffs.push(format!(
                "schema differs; lines only in the first: {only_mine:#?}; only in the second: {only_theirs:#?}"
            ));
        }
        let keys: std::collections::BTreeSet<&String> =
            self.tables.keys().chain(other.tables.keys()).collect();
        for k in keys {
            match (self.tables.get(k), other.tables.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!("table {k}: {a:?} vs {b:?}")),
            }
        }
        let keys: std::collections::BTreeSet<&String> = self
            .sequences
            .keys()
            .chain(other.sequences.keys())
            .collect();
        for k in keys {
            match (self.sequences.get(k), other.sequences.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!("sequence {k}: {a:?} vs {b:?}")),
            }
        }
        diffs
    }

    /// Panics, listing the differences, unless `self == other`.
    #[track_caller]
    pub fn assert_same(&self, other: &Fingerprint, what: &str) {
        let diffs = self.differences(other);
        assert!(
            diffs.is_empty(),
            "{what}: the databases differ:\n{}",
            diffs.join("\n")
        );
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schema: {} bytes", self.schema.len())?;
        for (name, t) in &self.tables {
            writeln!(f, "table {name}: {} rows, md5 {}", t.rows, t.md5)?;
        }
        for (name, s) in &self.sequences {
            writeln!(f, "sequence {name}: {s}")?;
        }
        Ok(())
    }
}
