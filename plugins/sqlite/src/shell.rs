//! The programs the plugin runs: the sqlite3 shell, and `mv` and `rm` for
//! the files it cannot touch itself (WASI grants the plugin no file system).

use crate::paths::{self, Mode};
use crate::settings::Settings;
use envsync_plugin_sdk::{Command, Error, debug, warn};

/// Every program the plugin may run, as declared in `describe()`.
pub const DECLARED: &[&str] = &["sqlite3", "mv", "rm"];

/// Small outputs read back from the shell (a journal mode, `ok`).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// sqlite3 on `path` in `mode`: batch mode, no `~/.sqliterc`, stopping at
/// the first error (`-bail`), waiting for other connections' locks for the
/// configured time.
pub fn sqlite3(settings: &Settings, path: &str, mode: Mode) -> Command {
    shell(settings, false, path, mode)
}

/// sqlite3 for SQL from outside the plugin (an artifact, an operator's
/// script): with `safe-mode` on, the shell also refuses commands that run
/// programs or reach other files (`.shell`, `.system`, `.load`, `.open`,
/// `.output`, `ATTACH`, …).
pub fn sqlite3_untrusted(settings: &Settings, path: &str, mode: Mode) -> Command {
    shell(settings, settings.safe_mode, path, mode)
}

fn shell(settings: &Settings, safe: bool, path: &str, mode: Mode) -> Command {
    let cmd = Command::new("sqlite3");
    let cmd = if safe { cmd.arg("-safe") } else { cmd };
    cmd.args(["-batch", "-bail", "-init", "/dev/null"])
        .args(["-cmd", &format!(".timeout {}", settings.busy_timeout_ms)])
        .arg(paths::uri(path, mode))
}

/// `sqlite3 SOURCE .dump` with the dump on stdout. The source is opened
/// read-only: a missing file is an error, never a new empty database.
pub fn dump(settings: &Settings, source: &str) -> Command {
    sqlite3(settings, source, Mode::ReadOnly)
        .arg(".dump")
        .stdout_piped()
}

/// Runs `sql` (arguments, one statement each) on `path` and returns what the
/// shell printed.
pub fn query(settings: &Settings, path: &str, mode: Mode, sql: &[&str]) -> Result<String, Error> {
    let out = sqlite3(settings, path, mode)
        .args(sql.iter().copied())
        .output(None, OUTPUT_LIMIT)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// What is at the target path before it is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing (or nothing sqlite3 can open).
    Missing,
    /// An SQLite database; `wal` when it is in WAL mode.
    Database { wal: bool },
}

/// Looks at `target` before anything is loaded: a database (which mode), or
/// nothing. Opening it read-write also lets SQLite settle what a crashed
/// writer left (it rolls back a hot journal). A file that is not a database
/// is refused: a wrong `--database` must not replace something else.
pub fn probe(settings: &Settings, target: &str) -> Result<Existing, Error> {
    match query(settings, target, Mode::ReadWrite, &["PRAGMA journal_mode;"]) {
        Ok(mode) => Ok(Existing::Database {
            wal: mode.eq_ignore_ascii_case("wal"),
        }),
        Err(e) if e.message().contains("unable to open database") => {
            debug(format!("{target} cannot be opened: {}", e.message()));
            Ok(Existing::Missing)
        }
        Err(e) if e.message().contains("not a database") => Err(Error::InvalidParam(format!(
            "{target} exists but is not an SQLite database; refusing to replace it (check \
             --database and the directory parameter, or move the file away)"
        ))),
        Err(e) => Err(e.context(format!("could not open {target}"))),
    }
}

/// Folds the WAL of `target` into the database file and empties it, so no
/// WAL content of the old file can be applied to the new one after the
/// rename. Warns when other connections keep it from finishing.
pub fn checkpoint(settings: &Settings, target: &str) -> Result<(), Error> {
    let out = query(
        settings,
        target,
        Mode::ReadWrite,
        &["PRAGMA wal_checkpoint(TRUNCATE);"],
    )?;
    if out.starts_with('1') {
        warn(format!(
            "other connections are using {target}, so its WAL could not be emptied; they keep \
             the replaced file open (stop them before a restore)"
        ));
    }
    Ok(())
}

/// Removes `path` and its companion files, if present.
pub fn remove(path: &str) -> Result<(), Error> {
    Command::new("rm")
        .args(["-f", "--"])
        .args(paths::with_companions(path))
        .run()
}

/// Best effort [`remove`]: a leftover is removed by the next run.
pub fn remove_quietly(path: &str) {
    if let Err(e) = remove(path) {
        warn(format!(
            "could not remove {path} ({}); the next restore removes it, or remove it by hand",
            e.message()
        ));
    }
}

/// Renames `from` to `to` in one step (both in the same folder: rename(2)
/// is atomic there, so readers see the old file or the new one, never a
/// mix). `-T`: a folder at `to` is an error, never a destination.
pub fn rename(from: &str, to: &str) -> Result<(), Error> {
    Command::new("mv").args(["-f", "-T", "--", from, to]).run()
}
