//! copy: pg_dump of the source piped straight into pg_restore of a scratch
//! database on the target, then swapped in like a restore. No store, no
//! temp files; the bytes move host-side from one child to the other.

use crate::swap::replace_target;
use crate::{settings, sql};
use envsync_plugin_sdk::{Command, Error, Fed, OnFeedError, connection, debug, info};

pub fn copy() -> Result<(), Error> {
    let source = connection("source")?;
    // The dump only crosses a pipe, so compressing it would waste CPU.
    let mut flags = settings::dump_flags()?;
    flags.push("-Z0".into());
    replace_target(|job| {
        info(format!(
            "copying {:?} from {} with pg_dump {}",
            source.database,
            source.instance,
            flags.join(" ")
        ));
        let mut dump = Command::new("pg_dump")
            .args(flags)
            .arg(format!("--dbname={}", sql::conninfo(&source.database)))
            .connection("source")
            .stdout_piped()
            .spawn()?;
        let mut load = job.pg_restore().stdin_piped().spawn()?;
        let dump_out = dump.take_stdout()?;
        let fed = load.feed(&dump_out, OnFeedError::CloseInput);
        drop(dump_out);
        match fed {
            Ok(Fed::All(stdin, bytes)) => {
                // Only the programs' verdicts count (see restore).
                if let Err(e) = stdin.close() {
                    debug(format!("closing pg_restore's input: {}", e.message()));
                }
                drop(stdin);
                let dumped = dump.finish();
                let loaded = load.finish();
                // A failed pg_dump is the cause; pg_restore then only saw a
                // truncated archive.
                match (dumped, loaded) {
                    (Err(d), Err(l)) => return Err(d.also(&l)),
                    (Err(e), Ok(())) | (Ok(()), Err(e)) => return Err(e),
                    (Ok(()), Ok(())) => {}
                }
                info(format!("copied {bytes} bytes"));
            }
            Ok(Fed::ChildDone(_)) => {
                // pg_restore needed only part of the dump (e.g. --schema-only).
                dump.kill();
                let _ = dump.wait();
                info("pg_restore finished before the end of the dump");
            }
            // pg_dump exited with an error code by itself (not our kill):
            // it is the cause.
            Err(e) => return Err(dump.abort_upstream(e)),
        }
        Ok(())
    })
}
