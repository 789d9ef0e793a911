//! restore: the artifact is spliced into the loader (shadow collections),
//! verified against its manifest, and only then swapped in.

use crate::load::{self, Loader};
use envsync_plugin_sdk::{ByteSource, Error, OnFeedError};

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let mut loader = Loader::start()?;
    let loaded = (|| {
        let loader = &mut loader;
        let (stdin, _bytes) = loader.child.feed(artifact, OnFeedError::Kill)?.all()?;
        artifact.verify()?;
        loader.finish(stdin)
    })();
    match loaded {
        Ok(loaded) => load::swap(&loaded),
        Err(e) => Err(load::abandon(&loader, damaged(e))),
    }
}

/// The loader script's refusal of the artifact's content (it throws `bad
/// artifact …`, or a line `is cut off`) is a damaged artifact, not a
/// failed program: exit code 5, like a wrong format or checksum.
fn damaged(e: Error) -> Error {
    match e {
        Error::ProgramFailed(m) if m.contains("bad artifact") || m.contains(" is cut off") => {
            Error::BadArtifact(m)
        }
        other => other,
    }
}
