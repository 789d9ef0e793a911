//! backup: `js/dump.js` on the source, its stdout spliced into the artifact
//! (host-side: the bytes never enter the plugin). mongosh exits with an
//! error code on any failure, so a cut dump is never published.

use crate::shell::{self, Script};
use envsync_plugin_sdk::{ByteSink, Error, info};

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let dump = shell::spawn(Script::Dump, "source", false)?;
    let bytes = dump
        .drain_into(artifact)
        .map_err(|e| e.context("dumping the source database"))?;
    info(format!("dumped {bytes} bytes of canonical Extended JSON"));
    Ok(())
}
