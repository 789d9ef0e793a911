//! restore: an artifact loaded into a scratch database and swapped in. The
//! artifact passes through the plugin in large chunks, rather than
//! host-side, so its rows are counted on their way (`load_progress`).

use crate::load_progress::RowMeter;
use crate::programs::Client;
use crate::swap::{finish_load, looks_damaged, replace_target};
use envsync_plugin_sdk::{ByteSource, Error, OnFeedError, info};

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let client = Client::detect()?;
    let program = client.program;
    replace_target(&client, |loader| {
        info(format!("loading the artifact with {program}"));
        let mut child = loader.stdin_piped().spawn()?;
        // Killed on a failure while its input is still open, so it never
        // runs a cut-off last statement.
        let mut rows = RowMeter::new();
        let loaded = child
            .feed_through(artifact, OnFeedError::Kill, |chunk| {
                rows.push(chunk);
                Ok(())
            })
            .and_then(|fed| fed.all())
            .and_then(|(stdin, bytes)| finish_load(&child, program, stdin).map(|()| bytes));
        match loaded {
            Ok(bytes) => {
                rows.report();
                info(format!(
                    "{program} loaded {bytes} bytes, {} rows",
                    rows.counter.rows()
                ));
            }
            Err(e) => {
                // Bytes the client could not parse: is the artifact damaged?
                // Its manifest says so better than an SQL error.
                if looks_damaged(&e)
                    && let Err(damaged) = artifact.verify()
                {
                    return Err(damaged.context(format!("{program} stopped ({})", e.message())));
                }
                return Err(e);
            }
        }
        // Reads any rest and checks size and SHA-256 against the manifest:
        // a damaged artifact must never go live.
        info("verifying the artifact against its manifest");
        artifact.verify()
    })
}
