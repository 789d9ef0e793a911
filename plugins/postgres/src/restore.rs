//! restore: an artifact loaded into a scratch database and swapped in.

use crate::swap::replace_target;
use envsync_plugin_sdk::{ByteSource, Error, Fed, OnFeedError, debug, info};

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    replace_target(|pg_restore| {
        info("loading the artifact with pg_restore");
        let mut child = pg_restore.stdin_piped().spawn()?;
        match child.feed(artifact, OnFeedError::CloseInput)? {
            Fed::All(stdin, bytes) => {
                // Only pg_restore's verdict counts: a failed close after it
                // succeeded means it stopped reading what it did not need,
                // and verify() below still checks the whole artifact.
                if let Err(e) = stdin.close() {
                    debug(format!("closing pg_restore's input: {}", e.message()));
                }
                drop(stdin);
                child.finish()?;
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
