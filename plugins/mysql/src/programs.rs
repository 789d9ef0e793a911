//! Finding and running the client programs (MariaDB's or MySQL's). Moving
//! bytes between them and host streams is the SDK's (`Running::feed`,
//! `Running::drain_into`), with the client's errors cut down to its `ERROR`
//! lines (see [`exit_error`]).

use crate::batch::{self, Row};
use crate::catalog::{Catalog, QUERY_SCRIPT_MAX};
use crate::sql;
use envsync_plugin_sdk::{Command, ConnectionInfo, Error, ExitStatus, debug};

/// Every program the plugin may run. MariaDB's names come first: they are
/// preferred when both are installed.
pub const DECLARED: &[&str] = &["mariadb-dump", "mariadb", "mysqldump", "mysql"];
const CLIENTS: &[&str] = &["mariadb", "mysql"];
const DUMPERS: &[&str] = &["mariadb-dump", "mysqldump"];

/// `--help` output is read to learn what a program supports (~25 KiB).
const HELP_LIMIT: usize = 1024 * 1024;
/// Catalogs and definitions read back from the client.
const OUTPUT_LIMIT: usize = 64 * 1024 * 1024;

/// Runs `<program> --help` for the first of `candidates` that can be
/// started. A program the host says is not installed, or that the operator
/// did not allow, is skipped; if none can run, the error names why for each.
fn first_available(candidates: &[&'static str]) -> Result<(&'static str, Vec<u8>), Error> {
    let mut why = Vec::new();
    for &program in candidates {
        match Command::new(program).arg("--help").output(None, HELP_LIMIT) {
            Ok(help) => return Ok((program, help)),
            Err(Error::Denied(m) | Error::Other(m)) => {
                debug(format!("{program} cannot be used: {m}"));
                why.push(m);
            }
            Err(e) => return Err(e.context(format!("{program} --help failed"))),
        }
    }
    Err(Error::Denied(format!(
        "none of {} can be run (install MariaDB's or MySQL's client programs, and allow at \
         least one of them): {}",
        candidates.join(", "),
        why.join("; ")
    )))
}

fn mentions(help: &[u8], option: &str) -> bool {
    help.windows(option.len()).any(|w| w == option.as_bytes())
}

/// The `--host`, `--port` and `--user` arguments of a connection. With a
/// port, the protocol is TCP: MySQL's clients would otherwise use the local
/// socket for `localhost` and ignore the port.
pub fn connection_args(conn: &ConnectionInfo) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(host) = &conn.host {
        args.push(format!("--host={host}"));
    }
    if let Some(port) = conn.port {
        args.push(format!("--port={port}"));
        args.push("--protocol=TCP".into());
    }
    if let Some(user) = &conn.user {
        args.push(format!("--user={user}"));
    }
    args
}

/// The interactive client: `mariadb` or `mysql`.
#[derive(Debug, Clone)]
pub struct Client {
    pub program: &'static str,
    /// `--sandbox` (MariaDB 10.5.25, 10.6.18, 10.11.8 and later): the client
    /// refuses its own shell and file commands (`\!`, `system`, `source`,
    /// `tee`), so an artifact or script cannot run anything on this machine.
    sandbox: bool,
}

impl Client {
    pub fn detect() -> Result<Client, Error> {
        let (program, help) = first_available(CLIENTS)?;
        let sandbox = mentions(&help, "--sandbox");
        if !sandbox {
            envsync_plugin_sdk::warn(format!(
                "{program} has no --sandbox option (MariaDB 10.11.8 and later have it): \
                 client commands such as \\! and source in an artifact or script would run"
            ));
        }
        Ok(Client { program, sandbox })
    }

    /// The client on `conn`'s server with the credentials of `role`, in
    /// batch mode (stops at the first error), UTF-8, never reconnecting (a
    /// reconnect would carry on with the rest of a script in a new session).
    /// Its failures show only its `ERROR` lines (see [`exit_error`]).
    pub fn command(&self, role: &str, conn: &ConnectionInfo) -> Command {
        Command::new(self.program)
            .stderr_filter(error_lines)
            .args(connection_args(conn))
            .args([
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
                "--skip-reconnect",
                "--connect-timeout=30",
            ])
            .connection(role)
    }

    /// For the plugin's own scripts: binary mode (no client commands, bytes
    /// sent as they are, `DELIMITER` still honoured).
    pub fn own(&self, role: &str, conn: &ConnectionInfo, database: Option<&str>) -> Command {
        let mut cmd = self.command(role, conn).arg("--binary-mode");
        if let Some(db) = database {
            cmd = cmd.arg(format!("--database={db}"));
        }
        cmd
    }

    /// Loads a dump into `database`: sandboxed, notes on and checks off (see
    /// [`sql::LOAD_INIT`]), packets up to 1 GiB (the client's default of 16
    /// MiB would refuse big rows). Not binary mode: a MariaDB dump's first
    /// line is a client command (the sandbox-mode switch).
    pub fn loader(&self, role: &str, conn: &ConnectionInfo, database: &str) -> Command {
        let mut cmd = self.command(role, conn);
        if self.sandbox {
            cmd = cmd.arg("--sandbox");
        }
        cmd.arg(format!("--init-command={}", sql::LOAD_INIT))
            .arg("--max-allowed-packet=1073741824")
            .arg(format!("--database={database}"))
    }

    /// Runs an operator's script on `database`: binary mode (client commands
    /// such as `quit` or `source` are SQL errors, not silent exits), sandboxed,
    /// autocommit off (see [`sql::TRANSFORM_INIT`]).
    pub fn transformer(&self, role: &str, conn: &ConnectionInfo, database: &str) -> Command {
        let mut cmd = self.command(role, conn).arg("--binary-mode");
        if self.sandbox {
            cmd = cmd.arg("--sandbox");
        }
        cmd.arg(format!("--init-command={}", sql::TRANSFORM_INIT))
            .arg(format!("--database={database}"))
    }

    /// Runs a small script (see [`QUERY_SCRIPT_MAX`]) of the plugin's own and
    /// returns the rows it printed.
    pub fn query(
        &self,
        role: &str,
        conn: &ConnectionInfo,
        database: Option<&str>,
        script: &str,
    ) -> Result<Vec<Row>, Error> {
        if script.len() > QUERY_SCRIPT_MAX {
            return Err(Error::Other(format!(
                "internal error: a query script of {} bytes could deadlock the pipes",
                script.len()
            )));
        }
        // The script fits in the pipe, so writing all of it before reading
        // cannot block on a client waiting for its output to be read.
        let out = self
            .own(role, conn, database)
            .output(Some(script.as_bytes()), OUTPUT_LIMIT)?;
        Ok(batch::parse(&out))
    }

    /// Runs a script of the plugin's own of any size whose output is not
    /// needed (stdout is discarded, so nothing can block).
    pub fn execute(
        &self,
        role: &str,
        conn: &ConnectionInfo,
        database: Option<&str>,
        script: &[u8],
    ) -> Result<(), Error> {
        // The client's own failure closes its input early; it is the cause.
        self.own(role, conn, database).run_with_input(script)
    }

    /// What database `db` holds, and the server's version.
    pub fn catalog(&self, role: &str, conn: &ConnectionInfo, db: &str) -> Result<Catalog, Error> {
        let rows = self.query(role, conn, None, &sql::catalog_query(db))?;
        Catalog::from_rows(&rows)
            .map_err(|e| Error::Other(format!("could not read what {db:?} holds: {e}")))
    }
}

/// The dump program: `mariadb-dump` or `mysqldump`.
#[derive(Debug, Clone)]
pub struct Dumper {
    pub program: &'static str,
    /// MySQL's mysqldump writes `SET @@GLOBAL.GTID_PURGED` into dumps of a
    /// server with GTIDs, which fails on (or rewrites) the target server;
    /// `--set-gtid-purged=OFF` leaves it out. MariaDB's has no such option.
    gtid_purged: bool,
}

impl Dumper {
    pub fn detect() -> Result<Dumper, Error> {
        let (program, help) = first_available(DUMPERS)?;
        Ok(Dumper {
            program,
            gtid_purged: mentions(&help, "--set-gtid-purged"),
        })
    }

    /// A dump of `conn.database` to stdout: the plugin's flags, then the
    /// operator's, then `--` and the database name (so no name is read as a
    /// flag). One database without `--databases`: no CREATE DATABASE or USE.
    pub fn command(&self, role: &str, conn: &ConnectionInfo, extra: &[String]) -> Command {
        self.tables(role, conn, extra, &[])
    }

    /// [`Dumper::command`] of only `tables` of the database (all when empty).
    pub fn tables(
        &self,
        role: &str,
        conn: &ConnectionInfo,
        extra: &[String],
        tables: &[String],
    ) -> Command {
        let mut cmd = Command::new(self.program)
            .args(connection_args(conn))
            .args(crate::settings::DUMP_DEFAULTS.iter().copied());
        if self.gtid_purged {
            cmd = cmd.arg("--set-gtid-purged=OFF");
        }
        cmd.args(extra.iter().cloned())
            .args(["--", conn.database.as_str()])
            .args(tables.iter().cloned())
            .connection(role)
            .stdout_piped()
    }

    /// The flags for messages.
    pub fn describe_flags(&self, extra: &[String]) -> String {
        let mut flags: Vec<&str> = crate::settings::DUMP_DEFAULTS.to_vec();
        if self.gtid_purged {
            flags.push("--set-gtid-purged=OFF");
        }
        flags.extend(extra.iter().map(String::as_str));
        flags.join(" ")
    }
}

/// A `program-failed` error describing an unsuccessful exit: how it ended
/// and the tail of its stderr. The client prints the whole failing statement
/// before its `ERROR …` line (a RENAME of every table, a dump's INSERT): only
/// the `ERROR` lines are kept then (the host logs all of stderr at debug
/// level).
pub fn exit_error(program: &str, status: &ExitStatus) -> Error {
    let errors = error_lines(&status.stderr_tail);
    let status = if errors.is_empty() {
        status.clone()
    } else {
        ExitStatus {
            stderr_tail: errors,
            ..status.clone()
        }
    };
    envsync_plugin_sdk::exit_error(program, &status)
}

/// The client's `ERROR …` lines in `stderr`, joined with "; " (the client's
/// [`Command::stderr_filter`]).
fn error_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(host: Option<&str>, port: Option<u16>, user: Option<&str>) -> ConnectionInfo {
        ConnectionInfo {
            database: "shop".into(),
            instance: "x".into(),
            host: host.map(String::from),
            port,
            user: user.map(String::from),
        }
    }

    #[test]
    fn connection_arguments() {
        assert!(connection_args(&conn(None, None, None)).is_empty());
        assert_eq!(
            connection_args(&conn(Some("localhost"), Some(3307), Some("bob"))),
            [
                "--host=localhost",
                "--port=3307",
                "--protocol=TCP",
                "--user=bob"
            ]
        );
        assert_eq!(
            connection_args(&conn(Some("-db"), None, None)),
            ["--host=-db"]
        );
    }

    #[test]
    fn client_errors_keep_the_error_lines() {
        let stderr = "--------------\nRENAME TABLE `a`.`t` TO `b`.`t`\n--------------\n\n\
                      ERROR 1205 (HY000) at line 8: Lock wait timeout exceeded";
        assert_eq!(
            error_lines(stderr),
            "ERROR 1205 (HY000) at line 8: Lock wait timeout exceeded"
        );
        assert_eq!(error_lines("mariadb-dump: Got error: 1049"), "");
    }

    #[test]
    fn help_mentions() {
        assert!(mentions(b"  --sandbox   Disallow commands", "--sandbox"));
        assert!(!mentions(b"  --safe-updates", "--sandbox"));
    }
}
