//! transform: a SQL script run against the target in one transaction.

use crate::programs::psql;
use envsync_plugin_sdk::{ByteSource, Error, Fed, OnFeedError, connection, info};

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
    match child.feed(script, OnFeedError::Kill).map_err(failed)? {
        Fed::All(stdin, bytes) => {
            if let Err(e) = script.verify() {
                return Err(failed(child.abort(e)));
            }
            if let Err(e) = stdin.close() {
                return Err(failed(child.abort(e)));
            }
            drop(stdin);
            child.finish().map_err(failed)?;
            info(format!("transform script ({bytes} bytes) committed"));
        }
        Fed::ChildDone(_) => info("psql ended the script early (\\q); what ran was committed"),
    }
    Ok(())
}
