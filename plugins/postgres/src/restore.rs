//! restore: an artifact loaded into a scratch database and swapped in. A
//! custom-format archive goes to pg_restore; a plain SQL dump (a sanitised
//! backup) to psql. The format is told from the first bytes, which then go
//! to the loader ahead of the rest. The artifact passes through the plugin
//! in large chunks rather than host-side, so that between chunks it can ask
//! the server how many rows are loaded (`load_progress`).

use crate::format_check::{self, Kind};
use crate::load_progress::RowMeter;
use crate::sanitised;
use crate::swap::replace_target;
use envsync_plugin_sdk::{
    ByteSource, Error, Fed, Running, copy_through, debug, info, read_head, write_all,
};

/// Bytes read to tell the format (the plain dump's banner fits easily).
const HEAD: usize = 4096;

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let head = read_head(artifact, HEAD)?;
    let kind = format_check::kind(&head).map_err(Error::BadArtifact)?;
    if kind == Kind::Chunked {
        return crate::chunked_restore::restore(artifact, &head);
    }
    replace_target(|job| {
        if kind == Kind::Plain {
            return sanitised::load_plain(job, &head, artifact);
        }
        info("loading the artifact with pg_restore");
        let mut child = job.pg_restore().stdin_piped().spawn()?;
        let mut rows = RowMeter::new(job);
        match feed(&mut child, &head, artifact, &mut rows)? {
            Fed::All(stdin, bytes) => {
                // Only pg_restore's verdict counts: a failed close after it
                // succeeded means it stopped reading what it did not need,
                // and verify() below still checks the whole artifact.
                if let Err(e) = stdin.close() {
                    debug(format!("closing pg_restore's input: {}", e.message()));
                }
                drop(stdin);
                child.finish()?;
                rows.report();
                info(format!("pg_restore loaded {bytes} bytes"));
            }
            Fed::ChildDone(_) => info("pg_restore finished before the end of the artifact"),
        }
        // Reads any rest and checks size and SHA-256 against the manifest:
        // a damaged artifact must never go live.
        info("verifying the artifact against its manifest");
        artifact.verify()
    })
}

/// `Running::feed_through` (with `OnFeedError::CloseInput`) for an
/// artifact whose first bytes `head` were already read: they are written
/// first. `rows` reports the rows loaded between chunks.
fn feed(
    child: &mut Running,
    head: &[u8],
    artifact: &ByteSource,
    rows: &mut RowMeter,
) -> Result<Fed, Error> {
    let stdin = child.take_stdin()?;
    let copied = write_all(&stdin, head).and_then(|()| {
        copy_through(artifact, &stdin, |_| {
            rows.tick();
            Ok(())
        })
    });
    let error = match copied {
        Ok(n) => return Ok(Fed::All(stdin, head.len() as u64 + n)),
        Err(e) => e,
    };
    // Close its input and let it exit by itself, so its own exit status and
    // message survive.
    drop(stdin);
    let status = child.wait()?;
    if status.success {
        return Ok(Fed::ChildDone(error));
    }
    Err(child.stream_failure(&status, error, false))
}
