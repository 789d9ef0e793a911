//! backup: `sqlite3 DB .dump` of the source, streamed into the artifact.
//!
//! The dump runs in one read transaction, so it is consistent while other
//! connections write. The bytes pass through the plugin (in large chunks)
//! because the shell exits with 0 even when it could not read everything:
//! only the dump's last line (`COMMIT;`, or `ROLLBACK; -- due to errors`)
//! tells, and a dump without its COMMIT is refused so it is never stored.

use crate::format_check;
use crate::settings::Settings;
use crate::shell;
use envsync_plugin_sdk::{ByteSink, Error, Tail, info};

/// How much of the dump's end is kept to check its last line.
pub const TAIL: usize = 256;

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let settings = Settings::read()?;
    let source = settings.path("source")?;
    info(format!("dumping {source} with sqlite3 .dump"));
    let dump = shell::dump(&settings, &source).spawn()?;
    let mut tail = Tail::new(TAIL);
    let bytes = dump.drain_through(artifact, |chunk| {
        tail.push(chunk);
        Ok(())
    })?;
    format_check::check_end(&tail.bytes())
        .map_err(|e| Error::ProgramFailed(format!("sqlite3 .dump of {source}: {e}")))?;
    info(format!("sqlite3 wrote {bytes} bytes"));
    Ok(())
}
