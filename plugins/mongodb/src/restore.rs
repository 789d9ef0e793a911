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
        Err(e) => Err(load::abandon(&loader, e)),
    }
}
