//! Replacing the target database file safely, shared by restore and copy:
//! load into `<db>.envsync-restore` beside it, check that copy, then rename
//! it over the target. Until the rename the target is never written, and a
//! rename within one folder is atomic, so every failure leaves the target
//! exactly as it was and the scratch file is removed.

use crate::paths::{self, Mode};
use crate::settings::Settings;
use crate::shell::{self, Existing};
use envsync_plugin_sdk::{ByteSink, Command, Error, Running, info, write_all};

/// Written after a dump: `;` ends a statement a cut-off dump left open, and
/// `BEGIN` fails (so `-bail` stops the shell) while the dump's own
/// transaction is still open, i.e. when the dump stopped before its COMMIT.
/// Without it the shell would roll the transaction back at the end of its
/// input and exit with 0, leaving an empty copy.
const LOAD_TRAILER: &[u8] = b"\n;\nBEGIN;\nCOMMIT;\n";

/// Replaces the target database `target` with what `load` puts into the
/// scratch file. `load` gets a ready sqlite3 command on the scratch file
/// (created on open); it must run it to success (see [`finish_load`]) and
/// check its input (e.g. `artifact.verify()`), or return the error that
/// stops the swap.
pub fn replace_target(
    settings: &Settings,
    target: &str,
    load: impl FnOnce(Command) -> Result<(), Error>,
) -> Result<(), Error> {
    let scratch = paths::scratch(target);
    let existing = shell::probe(settings, target)?;
    let existed = existing != Existing::Missing;
    let wal = existing == (Existing::Database { wal: true });
    let unchanged = |e: Error| {
        e.context(if existed {
            format!("{target} left unchanged")
        } else {
            format!("{target} not created")
        })
    };
    info(format!(
        "{} {target}: loading into {scratch} first",
        if existed { "replacing" } else { "creating" }
    ));
    // A leftover of an earlier run would make the load fail.
    shell::remove(&scratch)
        .map_err(|e| unchanged(e.context(format!("could not remove the leftover {scratch}"))))?;

    let loaded = load(shell::sqlite3_untrusted(settings, &scratch, Mode::Create))
        .and_then(|()| check_copy(settings, &scratch))
        .and_then(|()| {
            if wal {
                // WAL mode lives in the file: keep the target's.
                shell::query(
                    settings,
                    &scratch,
                    Mode::ReadWrite,
                    &["PRAGMA journal_mode=WAL;"],
                )
                .map(drop)
            } else {
                Ok(())
            }
        })
        .and_then(|()| {
            if wal {
                shell::checkpoint(settings, target)
            } else {
                Ok(())
            }
        });
    if let Err(e) = loaded {
        shell::remove_quietly(&scratch);
        return Err(unchanged(e));
    }

    info(format!("renaming {scratch} to {target}"));
    if let Err(e) = shell::rename(&scratch, target) {
        shell::remove_quietly(&scratch);
        return Err(unchanged(e));
    }
    if wal {
        // The scratch file's own WAL files, should SQLite have left any.
        shell::remove_quietly(&scratch);
    }
    info(format!("database {target} is live"));
    Ok(())
}

/// Ends a load whose input all went into the shell's stdin: writes the
/// trailer that detects a cut-off dump, closes the input, waits. A dump
/// that stops before its COMMIT is a `bad-artifact` error.
pub fn finish_load(loader: &Running, stdin: ByteSink) -> Result<(), Error> {
    let wrote = write_all(&stdin, LOAD_TRAILER).and_then(|()| stdin.close());
    drop(stdin);
    let status = loader.wait()?;
    if !status.success {
        if status
            .stderr_tail
            .contains("cannot start a transaction within a transaction")
        {
            return Err(Error::BadArtifact(
                "the dump stops before its COMMIT: it is truncated; restore another backup".into(),
            ));
        }
        return Err(loader.exit_error(&status));
    }
    wrote
}

/// The loaded copy must pass `PRAGMA integrity_check` before it goes live.
fn check_copy(settings: &Settings, scratch: &str) -> Result<(), Error> {
    info(format!("checking {scratch} with PRAGMA integrity_check"));
    let out = shell::query(
        settings,
        scratch,
        Mode::ReadOnly,
        &["PRAGMA integrity_check;"],
    )?;
    if out == "ok" {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "the loaded copy fails PRAGMA integrity_check: {}",
            out.lines().take(5).collect::<Vec<_>>().join("; ")
        )))
    }
}
