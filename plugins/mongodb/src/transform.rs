//! transform: the operator's mongosh script, fed on stdin to
//! `js/transform.js`, which runs it against the target with `db` set to the
//! target database. The first uncaught error stops mongosh with an error
//! code and the step fails; what ran before it stays (MongoDB has no
//! rollback across statements outside a transaction: a script that needs
//! all-or-nothing opens a session and a transaction itself).

use crate::shell::{self, Script};
use envsync_plugin_sdk::{ByteSource, Error, OnFeedError, info};

pub fn transform(script: &ByteSource) -> Result<(), Error> {
    let mut runner = shell::spawn(Script::Transform, "target", true)?;
    // The script must arrive whole before it starts: a cut one is killed
    // before it sees the end of its input.
    let (stdin, bytes) = runner.feed(script, OnFeedError::Kill)?.all()?;
    stdin.close()?;
    drop(stdin);
    let stdout = runner.take_stdout()?;
    let printed = envsync_plugin_sdk::read_all(&stdout, 1 << 20);
    drop(stdout);
    runner.finish().map_err(|e| {
        e.context("the transform script failed; statements before the error stay applied")
    })?;
    let printed = printed.unwrap_or_default();
    info(format!(
        "ran a {bytes}-byte mongosh script{}",
        if printed.is_empty() {
            String::new()
        } else {
            format!(
                "; it printed: {}",
                String::from_utf8_lossy(&printed[..printed.len().min(2000)]).trim()
            )
        }
    ));
    Ok(())
}
