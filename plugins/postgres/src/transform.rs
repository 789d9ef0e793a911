//! transform: a SQL script run against the target in one transaction.

use crate::programs::{Fed, OnFeedError, feed, psql};
use envsync_plugin_sdk::{ByteSource, Error, Running, connection, info};

pub fn transform(script: &ByteSource) -> Result<(), Error> {
    let target = connection("target")?.database;
    info(format!(
        "running the transform script on {target:?} in one transaction"
    ));
    let failed = |e: Error| {
        e.context(format!(
            "transform script failed; the transaction was rolled back and {target:?} is unchanged"
        ))
    };
    let mut child = psql(&target)
        .args(["--single-transaction", "-f", "-"])
        .stdin_piped()
        .spawn()?;
    // psql commits whatever it has read when its input ends, so on any
    // problem it is killed while stdin is still open: the server then rolls
    // the transaction back.
    match feed(&mut child, "psql", script, OnFeedError::Kill).map_err(failed)? {
        Fed::All(stdin, bytes) => {
            if let Err(e) = script.verify() {
                return Err(failed(abort(&child, e)));
            }
            if let Err(e) = stdin.close() {
                return Err(failed(abort(&child, e)));
            }
            drop(stdin);
            child.finish().map_err(failed)?;
            info(format!("transform script ({bytes} bytes) committed"));
        }
        Fed::ChildDone => info("psql ended the script early (\\q); what ran was committed"),
    }
    Ok(())
}

/// Kills psql (rolling back) and reaps it; returns `e`.
fn abort(child: &Running, e: Error) -> Error {
    child.kill();
    let _ = child.wait();
    e
}
