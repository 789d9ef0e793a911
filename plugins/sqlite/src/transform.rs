//! transform: an SQL script run against the target in one transaction.
//!
//! The shell opens the database (it must exist), takes the write lock with
//! `BEGIN IMMEDIATE` before reading the script, stops at the first error
//! (`-bail`) and exits, which rolls the transaction back. After the script
//! comes [`TRAILER`]: `COMMIT`, then an exit with a code of the plugin's own,
//! the proof that the COMMIT ran. A script that ends the shell itself
//! (`.quit`, `.exit`) exits with 0 and its transaction is rolled back too.
//! A script must not use BEGIN (an error: a transaction is open) nor COMMIT
//! (what runs after it could no longer be rolled back); statements that
//! cannot run in a transaction (VACUUM, changing the journal mode) fail.

use crate::paths::Mode;
use crate::settings::Settings;
use crate::shell;
use envsync_plugin_sdk::{ByteSource, Error, Fed, OnFeedError, connection, info, write_all};

/// `;` ends a last statement the script left unterminated.
const TRAILER: &[u8] = b"\n;\nCOMMIT;\n.exit 17\n";
/// The exit code [`TRAILER`] ends the shell with.
const COMMITTED: i32 = 17;

pub fn transform(script: &ByteSource) -> Result<(), Error> {
    let settings = Settings::read()?;
    let target = settings.path("target")?;
    let name = connection("target")?.database;
    info(format!(
        "running the transform script on {target} in one transaction"
    ));
    let failed = |e: Error| {
        e.context(format!(
            "transform script failed; its transaction was rolled back and {name} is unchanged"
        ))
    };
    let stopped_early = || {
        Error::ProgramFailed(format!(
            "the script ended the sqlite3 shell (.quit or .exit) before its end, so its \
             transaction was rolled back and {name} is unchanged; remove that command"
        ))
    };
    let mut child = shell::sqlite3_untrusted(&settings, &target, Mode::ReadWrite)
        .args(["-cmd", "BEGIN IMMEDIATE;"])
        .stdin_piped()
        .spawn()?;
    // On any problem the shell is killed while its input is still open, so
    // it never reaches the COMMIT.
    let (stdin, bytes) = match child.feed(script, OnFeedError::Kill).map_err(failed)? {
        Fed::All(stdin, bytes) => (stdin, bytes),
        Fed::ChildDone(_) => return Err(stopped_early()),
    };
    if let Err(e) = script.verify() {
        return Err(failed(child.abort(e)));
    }
    // Whether the trailer ran shows in the exit code; a failed write only
    // means the shell had stopped reading.
    let _ = write_all(&stdin, TRAILER).and_then(|()| stdin.close());
    drop(stdin);
    let status = child.wait()?;
    match status.code {
        Some(COMMITTED) => {}
        Some(0) => return Err(stopped_early()),
        _ => return Err(failed(child.exit_error(&status))),
    }
    info(format!("transform script ({bytes} bytes) committed"));
    Ok(())
}
