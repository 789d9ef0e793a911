//! restore: the artifact loaded into a scratch file and renamed over the
//! target (see `swap`).

use crate::settings::Settings;
use crate::swap::{finish_load, replace_target};
use envsync_plugin_sdk::{ByteSource, Error, OnFeedError, info};

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let settings = Settings::read()?;
    let target = settings.path("target")?;
    replace_target(&settings, &target, |loader| {
        info("loading the artifact with sqlite3");
        let mut child = loader.stdin_piped().spawn()?;
        // The bytes go host-side from the store into sqlite3. On a failure
        // it is killed while its input is still open.
        let (stdin, bytes) = child.feed(artifact, OnFeedError::Kill)?.all()?;
        finish_load(&child, stdin)?;
        info(format!("sqlite3 loaded {bytes} bytes"));
        // Reads any rest and checks size and SHA-256 against the manifest:
        // a damaged artifact must never go live.
        info("verifying the artifact against its manifest");
        artifact.verify()
    })
}
