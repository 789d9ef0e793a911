//! copy: `sqlite3 SOURCE .dump` piped into sqlite3 on a scratch file beside
//! the target, then renamed over it like a restore. No store, no temporary
//! dump file.

use crate::backup::TAIL;
use crate::format_check;
use crate::settings::Settings;
use crate::shell;
use crate::swap::{finish_load, replace_target};
use envsync_plugin_sdk::{Error, Tail, info};

pub fn copy() -> Result<(), Error> {
    let settings = Settings::read()?;
    let source = settings.path("source")?;
    let target = settings.path("target")?;
    replace_target(&settings, &target, |loader| {
        info(format!("copying {source} with sqlite3 .dump"));
        let dump = shell::dump(&settings, &source).spawn()?;
        let mut load = loader.stdin_piped().spawn()?;
        let stdin = load.take_stdin()?;
        // Through the plugin, to see how the dump ends (see backup).
        let mut tail = Tail::new(TAIL);
        let copied = dump.drain_through(&stdin, |chunk| {
            tail.push(chunk);
            Ok(())
        });
        let bytes = match copied {
            Ok(bytes) => bytes,
            Err(e) => {
                // Killed before it sees the end of its input; if it had
                // stopped at an error by itself, that is the cause.
                load.kill();
                drop(stdin);
                let status = load.wait()?;
                return Err(load.stream_failure(&status, e, true));
            }
        };
        if let Err(e) = format_check::check_end(&tail.bytes()) {
            let e = Error::ProgramFailed(format!("sqlite3 .dump of {source}: {e}"));
            return Err(load.abort(e));
        }
        finish_load(&load, stdin)?;
        info(format!("copied {bytes} bytes"));
        Ok(())
    })
}
