//! A throwaway MariaDB server on 127.0.0.1, and ways to compare databases.
//!
//! [`MariaDb::start`] copies a freshly initialised data directory (made once
//! with `mariadb-install-db` and kept under `target/test-cache/`, since
//! initialising takes seconds while copying takes milliseconds) into a
//! temporary folder and starts `mariadbd` on a random port as a direct child
//! of the test process, so it is waited for when the [`MariaDb`] is dropped
//! (PID 1 in CI does not reap orphans). `root` logs in over TCP without a
//! password; real authentication stays on, so [`MariaDb::create_user`] makes
//! users that must give theirs. The server runs with utf8mb4 defaults and a
//! non-UTC time zone (+02:00), so TIMESTAMP conversions are exercised.
//! [`MariaDb::restart`] crashes it (SIGKILL) and starts it again on the same
//! port and data: what a crash and restart does to the running clients.
//!
//! [`MariaDb::fingerprint`] captures a database's objects (`SHOW CREATE` of
//! every table, view, trigger, routine and event) and the contents of every
//! table (`CHECKSUM TABLE … EXTENDED`, the row count, and a hash of every
//! row's values); two databases with equal fingerprints are equal in schema
//! and data.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use crate::host_cli::Step;
use crate::paths;
use crate::ports::free_port;
use crate::process;

/// How long a single client program may run in the harness.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Server settings shared by initialisation and start (the InnoDB log size
/// must match, or the server resizes it at every start).
const SERVER_OPTIONS: &[&str] = &[
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=64M",
    "--skip-name-resolve",
];

/// `` `name` ``, doubling inner backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `'text'` with backslashes and quotes escaped (the harness's sessions run
/// without NO_BACKSLASH_ESCAPES).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The server program: `ENVSYNC_MARIADBD`, else `/usr/sbin/mariadbd` (not on
/// the PATH of users other than root), else `mariadbd` from the PATH.
fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVSYNC_MARIADBD").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("mariadbd")
    }
}

/// `mariadbd --version`, which names the cached data directory.
fn server_version() -> Result<String> {
    let out = process::run(
        {
            let mut c = Command::new(server_bin());
            c.arg("--version");
            c
        },
        None,
        Duration::from_secs(30),
    )
    .context("MariaDB server not found: apt-get install mariadb-server mariadb-client")?;
    if !out.success() {
        bail!("mariadbd --version failed\n{out}");
    }
    Ok(out.stdout.trim().to_string())
}

/// A freshly initialised data directory for this server version, made once
/// and reused (by every test and every run) by copying it.
fn template_datadir() -> Result<PathBuf> {
    let version = server_version()?;
    let digest = Sha256::digest(format!("{version}|{}", SERVER_OPTIONS.join(" ")).as_bytes());
    let tag = &hex::encode(digest)[..16];
    let cache = paths::target_dir().join("test-cache");
    let dir = cache.join(format!("mariadb-datadir-{tag}"));
    if dir.join("mysql").is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&cache)?;
    // One bootstrap at a time: concurrent `mariadb-install-db` runs (the
    // suite's tests start together on a fresh checkout) tripped over each
    // other's temporary tables. The lock is released when the file closes.
    let lock = std::fs::File::create(cache.join("mariadb-datadir.lock"))?;
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!(
            "could not lock {}",
            cache.join("mariadb-datadir.lock").display()
        );
    }
    if dir.join("mysql").is_dir() {
        return Ok(dir);
    }
    let building = tempfile::Builder::new()
        .prefix("mariadb-datadir-building-")
        .tempdir_in(&cache)?;
    let data = building.path().join("data");
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", building.path().display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(SERVER_OPTIONS);
    if running_as_root() {
        install.arg("--user=root");
    }
    let out = process::run(install, None, Duration::from_secs(180))?;
    if !out.success() {
        bail!("mariadb-install-db failed\n{out}");
    }
    // Another test may have finished first: then keep theirs.
    if std::fs::rename(&data, &dir).is_err() && !dir.join("mysql").is_dir() {
        bail!("could not move the new data directory to {}", dir.display());
    }
    Ok(dir)
}

/// A running throwaway server; stopped and deleted on drop.
pub struct MariaDb {
    port: u16,
    server: Option<Child>,
    // Declared last: removed after the server is gone.
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Starts a server on a random free port (retrying with another port if
    /// the chosen one was taken in the meantime).
    pub fn start() -> Result<MariaDb> {
        let template = template_datadir()?;
        let dir = tempfile::Builder::new()
            .prefix("envsync-mariadb-")
            .tempdir()?;
        let data = dir.path().join("data");
        let copy = process::run(
            {
                let mut c = Command::new("cp");
                c.arg("-a").arg(&template).arg(&data);
                c
            },
            None,
            Duration::from_secs(60),
        )?;
        if !copy.success() {
            bail!("copying the data directory failed\n{copy}");
        }
        let mut last_error = String::new();
        for _attempt in 0..8 {
            let port = free_port()?;
            match launch(dir.path(), port) {
                Ok(child) => {
                    return Ok(MariaDb {
                        port,
                        server: Some(child),
                        dir,
                    });
                }
                Err(failed) if failed.port_taken => last_error = failed.message,
                Err(failed) => bail!("MariaDB did not start: {}", failed.message),
            }
        }
        bail!("MariaDB did not start on any of 8 random ports: {last_error}")
    }

    /// Restarts the server as a crash would: SIGKILL, then a start on the
    /// same port and data directory, where InnoDB recovers. Every session
    /// is cut off, their open transactions roll back, and with
    /// `--innodb-flush-log-at-trx-commit=0` the commits of about the last
    /// second may be lost (each whole, never part of one).
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.server.take() {
            child.kill().context("could not kill mariadbd")?;
            child
                .wait()
                .context("could not wait for the killed mariadbd")?;
        }
        let child = launch(self.dir.path(), self.port).map_err(|failed| {
            anyhow!(
                "MariaDB did not come back on port {} after a restart{}: {}",
                self.port,
                if failed.port_taken {
                    " (another program took its port meanwhile)"
                } else {
                    ""
                },
                failed.message
            )
        })?;
        self.server = Some(child);
        Ok(())
    }

    /// Waits until every commit made so far is in the redo log on disk:
    /// with `--innodb-flush-log-at-trx-commit=0` the server writes it once a
    /// second, so a [`restart`](Self::restart) right after a commit may lose
    /// it. A test that must know what survives a crash waits for this first.
    pub fn wait_log_flushed(&self, timeout: Duration) -> Result<()> {
        let lsn = |name: &str| -> Result<u64> {
            let row = self.sql(
                None,
                &format!("SHOW GLOBAL STATUS LIKE 'Innodb_lsn_{name}'"),
            )?;
            row.split_once('\t')
                .and_then(|(_, v)| v.parse().ok())
                .ok_or_else(|| anyhow!("no Innodb_lsn_{name} in SHOW GLOBAL STATUS: {row:?}"))
        };
        let wanted = lsn("current")?;
        let deadline = Instant::now() + timeout;
        while lsn("flushed")? < wanted {
            if Instant::now() >= deadline {
                bail!("the redo log was not flushed up to LSN {wanted} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        "root"
    }

    /// The server's folder (data directory, socket, error log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The `mariadb` client connected to this server as root, without option
    /// files, in UTF-8, batch mode (tab-separated, no column names).
    pub fn client(&self) -> Command {
        client_for(self.port)
    }

    /// Runs `sql` (from stdin, stopping at the first error) with `db` as the
    /// current database; returns stdout, trimmed (rows of tab-separated
    /// values, with tab, newline and backslash escaped).
    pub fn sql(&self, db: Option<&str>, sql: &str) -> Result<String> {
        let mut cmd = self.client();
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let out = process::run(cmd, Some(sql.as_bytes().to_vec()), CLIENT_TIMEOUT)?;
        if !out.success() {
            let shown: String = sql.chars().take(600).collect();
            bail!(
                "mariadb on {db:?} failed ({}): {}\n--- SQL ---\n{shown}",
                out.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "timed out".into()),
                out.stderr.trim()
            );
        }
        Ok(out.stdout.trim_end_matches('\n').to_string())
    }

    /// Loads a SQL file into `db` (stop on the first error).
    pub fn load_sql_file(&self, db: &str, path: &Path) -> Result<()> {
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        self.sql(Some(db), &sql)
            .with_context(|| format!("loading {} into {db}", path.display()))
            .map(drop)
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        self.sql(None, &format!("CREATE DATABASE {}", quote_ident(name)))
            .map(drop)
    }

    pub fn drop_database(&self, name: &str) -> Result<()> {
        self.sql(
            None,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(name)),
        )
        .map(drop)
    }

    pub fn database_exists(&self, name: &str) -> Result<bool> {
        let n = self.sql(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                quote_literal(name)
            ),
        )?;
        Ok(n == "1")
    }

    /// The databases other than the system ones, sorted.
    pub fn databases(&self) -> Result<Vec<String>> {
        let out = self.sql(
            None,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN \
             ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY SCHEMA_NAME",
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(unescape)
            .collect())
    }

    /// InnoDB's internal id of a table: it changes when the table is
    /// replaced (a swapped-in table is another table), so an unchanged id
    /// proves the table was not swapped. Plain names only (the data
    /// dictionary encodes special characters).
    pub fn table_id(&self, db: &str, table: &str) -> Result<Option<u64>> {
        let out = self.sql(
            None,
            &format!(
                "SELECT TABLE_ID FROM information_schema.INNODB_SYS_TABLES WHERE NAME = {}",
                quote_literal(&format!("{db}/{table}"))
            ),
        )?;
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out.parse().context("table id")?))
    }

    /// Creates `user`@127.0.0.1 with `password` and every privilege.
    pub fn create_user(&self, user: &str, password: &str) -> Result<()> {
        self.sql(
            None,
            &format!(
                "CREATE USER {u}@'127.0.0.1' IDENTIFIED BY {p};\n\
                 GRANT ALL PRIVILEGES ON *.* TO {u}@'127.0.0.1';",
                u = quote_literal(user),
                p = quote_literal(password)
            ),
        )
        .map(drop)
    }

    /// A dump made with mariadb-dump directly (e.g. with flags the plugin
    /// refuses), for building test artifacts.
    pub fn dump(&self, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = Command::new("mariadb-dump");
        cmd.arg("--no-defaults")
            .arg(format!("--host={}", self.host()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().context("could not run mariadb-dump")?;
        if !out.status.success() {
            bail!(
                "mariadb-dump {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// `envsync-host run --plugin mysql --op OP --database DB` with this
    /// server's `--db-host`, `--db-port` and `--db-user`.
    pub fn step(&self, op: &str, database: &str) -> Step {
        Step::new("mysql", op)
            .opt("--database", database)
            .opt("--db-host", self.host())
            .opt("--db-port", self.port)
            .opt("--db-user", self.user())
    }

    /// Objects and data of `db`; see [`Fingerprint`].
    pub fn fingerprint(&self, db: &str) -> Result<Fingerprint> {
        let listing = self.sql(
            Some(db),
            "SELECT 'schema', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
               FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE();\n\
             SELECT IF(TABLE_TYPE = 'VIEW', 'VIEW', 'TABLE'), TABLE_NAME \
               FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE();\n\
             SELECT 'COLUMN', TABLE_NAME, COLUMN_NAME, IS_GENERATED \
               FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
               ORDER BY TABLE_NAME, ORDINAL_POSITION;\n\
             SELECT 'TRIGGER', TRIGGER_NAME \
               FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();\n\
             SELECT ROUTINE_TYPE, ROUTINE_NAME \
               FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();\n\
             SELECT 'EVENT', EVENT_NAME \
               FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE();",
        )?;
        let mut charset = String::new();
        let mut listed = vec![];
        // table → (column, generated)
        let mut columns: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for line in listing.lines().filter(|l| !l.is_empty()) {
            let fields: Vec<String> = line.split('\t').map(unescape).collect();
            match fields.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["schema", cs, coll] => charset = format!("{cs} {coll}"),
                ["COLUMN", table, column, generated] => columns
                    .entry(table.to_string())
                    .or_default()
                    .push((column.to_string(), generated != "NEVER")),
                [kind, name] => listed.push((kind.to_string(), name.to_string())),
                _ => bail!("unexpected line {line:?}"),
            }
        }
        if charset.is_empty() {
            bail!("database {db:?} does not exist");
        }
        // Every statement prints exactly one row.
        let mut statements = vec!["SET SESSION group_concat_max_len = 1073741824".to_string()];
        let mut wanted = vec![];
        for (kind, name) in listed {
            let q = quote_ident(&name);
            match kind.as_str() {
                "TABLE" => {
                    let cols = columns.get(&name).cloned().unwrap_or_default();
                    // MariaDB 10.11 gives tables with generated columns
                    // different CHECKSUM TABLE values for the same rows
                    // depending on how the table was opened: they are
                    // compared by their rows' contents only.
                    let checksum = !cols.iter().any(|(_, generated)| *generated);
                    statements.push(format!("SHOW CREATE TABLE {q}"));
                    if checksum {
                        statements.push(format!("CHECKSUM TABLE {q} EXTENDED"));
                    }
                    let values: Vec<String> = cols
                        .iter()
                        .map(|(c, _)| {
                            format!("IFNULL(HEX(CAST({} AS BINARY)), 'N')", quote_ident(c))
                        })
                        .collect();
                    statements.push(format!(
                        "SELECT COUNT(*), MD5(IFNULL(GROUP_CONCAT(MD5(CONCAT_WS(',', {})) \
                         ORDER BY 1 SEPARATOR ''), '')) FROM {q}",
                        values.join(", ")
                    ));
                    wanted.push(("table", name, checksum));
                }
                "VIEW" | "TRIGGER" | "PROCEDURE" | "FUNCTION" | "EVENT" => {
                    statements.push(format!("SHOW CREATE {kind} {q}"));
                    wanted.push((kind_name(&kind), name, false));
                }
                other => bail!("unexpected object kind {other:?}"),
            }
        }
        let script = statements.join(";\n") + ";\n";
        let out = self.sql(Some(db), &script)?;
        let mut rows = out.split('\n').filter(|l| !l.is_empty());
        let mut objects = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for (kind, name, checksummed) in wanted {
            let mut row = || {
                rows.next()
                    .ok_or_else(|| anyhow!("missing output for {kind} {name}"))
            };
            // Every SHOW CREATE row starts with the object's name.
            let create = row()?.to_string();
            let definition = create.split_once('\t').map(|x| x.1).unwrap_or("");
            let definition = if kind == "trigger" {
                // Without the last column (Created: when it was created).
                definition.rsplit_once('\t').map_or(definition, |x| x.0)
            } else {
                definition
            };
            objects.insert(format!("{kind} {name}"), definition.to_string());
            if kind == "table" {
                let checksum = if checksummed {
                    let line = row()?;
                    line.rsplit_once('\t')
                        .map(|x| x.1.to_string())
                        .unwrap_or_default()
                } else {
                    "n/a (generated columns)".to_string()
                };
                let line = row()?;
                let (count, md5) = line
                    .split_once('\t')
                    .ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
                tables.insert(
                    name,
                    TableData {
                        rows: count.parse().context("row count")?,
                        checksum,
                        md5: md5.to_string(),
                    },
                );
            }
        }
        Ok(Fingerprint {
            charset,
            objects,
            tables,
        })
    }

    /// Starts a client session on `db` (see [`Session`]).
    pub fn session(&self, db: &str) -> Result<Session> {
        let mut cmd = self.client();
        cmd.arg(format!("--database={db}"))
            .args(["--force", "--unbuffered"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("could not start mariadb")?;
        let stdin = child.stdin.take();
        let lines = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            let (tx, rx) = channel();
            if let Some(pipe) = pipe {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(pipe);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match reader.read_until(b'\n', &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let line = String::from_utf8_lossy(&buf);
                        if tx.send(line.trim_end_matches('\n').to_string()).is_err() {
                            break;
                        }
                    }
                });
            }
            rx
        };
        let stdout = lines(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = lines(child.stderr.take().map(|p| Box::new(p) as _));
        Ok(Session {
            child: Some(child),
            stdin,
            stdout,
            stderr,
        })
    }
}

/// Why [`launch`] failed: the reason with the server log's new lines, and
/// whether the port was taken (then another port may do).
struct LaunchFailure {
    message: String,
    port_taken: bool,
}

/// Starts `mariadbd` on the data directory `dir/data` and `port`, its
/// socket, pid file and error log in `dir`, and waits until it answers.
/// The one place the server's options are given, for [`MariaDb::start`] and
/// [`MariaDb::restart`].
fn launch(dir: &Path, port: u16) -> std::result::Result<Child, LaunchFailure> {
    let data = dir.join("data");
    let log_path = dir.join("error.log");
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
    let mut server = Command::new(server_bin());
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("s").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-error={}", log_path.display()))
        .arg(format!("--tmpdir={}", dir.display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--default-time-zone=+02:00",
        ])
        .args(SERVER_OPTIONS)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if running_as_root() {
        server.arg("--user=root");
    }
    let mut child = server.spawn().map_err(|e| LaunchFailure {
        message: format!("could not start {}: {e}", server_bin().display()),
        port_taken: false,
    })?;
    let Err(e) = wait_ready(&mut child, port, &data, Duration::from_secs(60)) else {
        return Ok(child);
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let new_lines = log.get(log_start..).unwrap_or(&log);
    Err(LaunchFailure {
        port_taken: new_lines.contains("Address already in use")
            || new_lines.contains("Can't start server: Bind")
            || e.to_string().contains(OTHER_SERVER),
        message: format!("{e}\n--- server log ---\n{new_lines}"),
    })
}

/// The `mariadb` client for the server on `port`; see [`MariaDb::client`].
fn client_for(port: u16) -> Command {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg("--user=root")
        .args([
            "--protocol=TCP",
            "--default-character-set=utf8mb4",
            "--skip-reconnect",
            "--batch",
            "--skip-column-names",
        ])
        .env_remove("MYSQL_PWD")
        .env_remove("MYSQL_HOST")
        .env_remove("MYSQL_TCP_PORT")
        .env_remove("MYSQL_UNIX_PORT");
    cmd
}

/// Polls a connection until the server on `port` answers, or fails if it
/// exits or takes too long.
/// Said by [`wait_ready`] when the port answers but the server behind it is
/// another one (two starts drew the same free port at once).
const OTHER_SERVER: &str = "the port is answered by another MariaDB server";

/// Waits until the server started as `child` answers on `port`, and checks
/// that the answer comes from it (its data directory is `datadir`), not from
/// another test's server that drew the same port.
fn wait_ready(child: &mut Child, port: u16, datadir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let ours = datadir.display().to_string();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited during start-up ({status})");
        }
        let mut ping = client_for(port);
        ping.args(["--skip-column-names", "-e", "SELECT @@datadir"]);
        if let Ok(out) = process::run(ping, None, Duration::from_secs(10))
            && out.success()
        {
            let theirs = out.stdout.trim().trim_end_matches('/');
            if theirs == ours.trim_end_matches('/') {
                return Ok(());
            }
            bail!("{OTHER_SERVER} ({theirs})");
        }
        if Instant::now() >= deadline {
            bail!("the server was not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // A throwaway server: no need for a clean shutdown.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "VIEW" => "view",
        "TRIGGER" => "trigger",
        "PROCEDURE" => "procedure",
        "FUNCTION" => "function",
        _ => "event",
    }
}

/// Undoes the batch-mode escaping of one value.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A `mariadb` client session kept open (with `--force`, so an error does
/// not end it); killed and reaped on drop.
pub struct Session {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

/// What one [`Session::query`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The row the query printed (tab-separated).
    Row(String),
    /// What the server said instead.
    Error(String),
}

impl Session {
    /// Runs `sql` (one statement printing one row, without the `;`) and
    /// returns its row or its error.
    pub fn query(&mut self, sql: &str, timeout: Duration) -> Result<Answer> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the session is closed"))?;
        // The marker row says the statement is done, failed or not.
        writeln!(stdin, "{sql};\nSELECT 'envsync-test-end';")?;
        stdin.flush()?;
        let deadline = Instant::now() + timeout;
        let mut row = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .map_err(|_| anyhow!("no answer to {sql:?} within {timeout:?}"))?;
            if line == "envsync-test-end" {
                break;
            }
            row = Some(line);
        }
        // stderr has its own pipe and reader: an error printed before the
        // marker may arrive just after it.
        let mut errors: Vec<String> = self.stderr.try_iter().collect();
        if row.is_none() && errors.is_empty() {
            errors.extend(self.stderr.recv_timeout(Duration::from_secs(1)));
        }
        Ok(match (row, errors.is_empty()) {
            (Some(row), true) => Answer::Row(row),
            (_, false) => Answer::Error(errors.join("\n")),
            (None, true) => Answer::Error("no row and no error".into()),
        })
    }

    /// Everything the client printed on stderr and was not yet returned.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Sends `sql` (complete statements) without waiting for anything.
    pub fn send(&mut self, sql: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the session is closed"))?;
        stdin.write_all(sql.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Ends the session: closes its input and reaps the client.
    pub fn close(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The data of one table: row count, `CHECKSUM TABLE` and an
/// order-independent hash of every row's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableData {
    pub rows: u64,
    pub checksum: String,
    pub md5: String,
}

/// Objects and data of one database. Equal fingerprints mean the same
/// default character set, the same `SHOW CREATE` output for every table
/// (including its AUTO_INCREMENT counter), view, trigger, routine and event,
/// and the same rows in every table (`CHECKSUM TABLE`, except for tables
/// with generated columns, whose checksum MariaDB does not keep stable, and
/// the MD5 of the sorted MD5s of every row's values, as bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Default character set and collation.
    pub charset: String,
    /// `kind name` → SHOW CREATE output (batch-escaped).
    pub objects: BTreeMap<String, String>,
    /// table → rows and checksum.
    pub tables: BTreeMap<String, TableData>,
}

impl Fingerprint {
    /// The same without the tables' AUTO_INCREMENT counters: a rolled-back
    /// insert leaves InnoDB's counter advanced, although no row changed.
    pub fn without_counters(&self) -> Fingerprint {
        let mut f = self.clone();
        for (name, definition) in f.objects.iter_mut() {
            if !name.starts_with("table ") {
                continue;
            }
            if let Some(at) = definition.find(" AUTO_INCREMENT=") {
                let rest = &definition[at + " AUTO_INCREMENT=".len()..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                definition.replace_range(at..at + " AUTO_INCREMENT=".len() + digits, "");
            }
        }
        f
    }

    /// A human list of what differs between `self` and `other`.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut diffs = vec![];
        if self.charset != other.charset {
            diffs.push(format!(
                "default character set: {} vs {}",
                self.charset, other.charset
            ));
        }
        let keys: std::collections::BTreeSet<&String> =
            self.objects.keys().chain(other.objects.keys()).collect();
        for k in keys {
            match (self.objects.get(k), other.objects.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!("{k}:\n  {a:?}\nvs\n  {b:?}")),
            }
        }
        let keys: std::collections::BTreeSet<&String> =
            self.tables.keys().chain(other.tables.keys()).collect();
        for k in keys {
            match (self.tables.get(k), other.tables.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!("data of table {k}: {a:?} vs {b:?}")),
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
        writeln!(f, "charset: {}", self.charset)?;
        for name in self.objects.keys() {
            writeln!(f, "{name}")?;
        }
        for (name, t) in &self.tables {
            writeln!(
                f,
                "table {name}: {} rows, checksum {}, md5 {}",
                t.rows, t.checksum, t.md5
            )?;
        }
        Ok(())
    }
}
