//! copy: a dump of the source piped straight into the client loading the
//! scratch database on the target, then swapped in like a restore. No store,
//! no temp files; the bytes move host-side from one child to the other.

//!
//! When the step sanitises, the dump passes through the plugin on its way to
//! the loader and the rows of the tables the sanitiser wants are rewritten
//! (see `rows.rs`); the target still changes only with the final swap.

use crate::programs::{Client, Dumper};
use crate::swap::{finish_load, replace_target};
use crate::{sanitise, settings};
use envsync_plugin_sdk::{Error, OnFeedError, connection, info};

pub fn copy() -> Result<(), Error> {
    let source = connection("source")?;
    let mut extra = settings::dump_flags()?;
    let plan = sanitise::plan();
    if plan.is_some() {
        extra.extend(sanitise::DUMP_FLAGS.iter().map(|f| f.to_string()));
    }
    let dumper = Dumper::detect()?;
    let client = Client::detect()?;
    let (dump_program, load_program) = (dumper.program, client.program);
    replace_target(&client, |loader| {
        info(format!(
            "copying {:?} from {} with {dump_program} {} into {load_program}",
            source.database,
            source.instance,
            dumper.describe_flags(&extra)
        ));
        let mut dump = dumper.command("source", &source, &extra).spawn()?;
        let mut load = loader.stdin_piped().spawn()?;
        let dump_out = dump.take_stdout()?;
        if let Some(tables) = plan {
            let stdin = load.take_stdin()?;
            let rewritten = sanitise::rewrite(&dump_out, &stdin, &source.database, tables);
            drop(dump_out);
            if let Err(e) = rewritten {
                // The dump's own failure is the cause when it had one; the
                // loader is killed while its input is still open, so it
                // never runs a cut-off statement, unless it had failed by
                // itself first (its error then wins).
                let e = dump.abort_upstream(e);
                load.kill();
                drop(stdin);
                let status = load.wait()?;
                return Err(load.stream_failure(&status, e, true));
            }
            if let Err(e) = dump.finish() {
                load.kill();
                let _ = load.wait();
                return Err(e);
            }
            finish_load(&load, load_program, stdin)?;
            info("copied the sanitised dump");
            return Ok(());
        }
        let fed = load
            .feed(&dump_out, OnFeedError::Kill)
            .and_then(|fed| fed.all());
        drop(dump_out);
        let (stdin, bytes) = match fed {
            Ok(fed) => fed,
            // The dump exited with an error code by itself (not our kill):
            // it is the cause.
            Err(e) => return Err(dump.abort_upstream(e)),
        };
        // The dump's end of output: it must have succeeded before the loader
        // may finish (a failed dump is the cause, whatever the loader says).
        if let Err(e) = dump.finish() {
            load.kill();
            let _ = load.wait();
            return Err(e);
        }
        finish_load(&load, load_program, stdin)?;
        info(format!("copied {bytes} bytes"));
        Ok(())
    })
}
