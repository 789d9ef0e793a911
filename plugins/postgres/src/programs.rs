//! Running psql. Moving bytes between pg_dump, pg_restore, psql and host
//! streams is the SDK's (`Running::feed`, `Running::drain_into`).

use crate::sql;
use envsync_plugin_sdk::{Command, Error};

/// psql stdout we read back (owner names, `1`): small by construction.
const PSQL_OUTPUT_LIMIT: usize = 64 * 1024;

/// psql without ~/.psqlrc, quiet, stopping at the first error, printing bare
/// values, on `database` of the `target` connection.
pub fn psql(database: &str) -> Command {
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
        .arg(format!("--dbname={}", sql::conninfo(database)))
        .connection("target")
}

/// Runs `script` with psql on `database` and returns what it printed.
/// The script goes through stdin (`-f -`), so psql sends its statements one
/// by one, as CREATE/DROP DATABASE need. psql's own failure (e.g. it could
/// not connect and closed its input early) wins over a broken pipe. Scripts
/// and answers are tiny, so writing all before reading cannot fill both
/// pipes and deadlock.
pub fn run_psql(database: &str, script: &str) -> Result<String, Error> {
    let out = psql(database)
        .args(["-f", "-"])
        .output(Some(script.as_bytes()), PSQL_OUTPUT_LIMIT)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
