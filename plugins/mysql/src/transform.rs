//! transform: an SQL script run against the target, stopping at the first
//! error, in a transaction.
//!
//! The client runs with autocommit off and commits only after the whole
//! script (see `sql::TRANSFORM_TRAILER`); on an error it stops and
//! disconnects, and the server rolls back. MySQL commits implicitly before
//! and after DDL (CREATE, ALTER, DROP, TRUNCATE, RENAME), so what ran before
//! the script's last DDL statement or its own COMMIT stays; scripts of DML
//! statements (UPDATE, DELETE, INSERT) are rolled back entirely (InnoDB keeps
//! AUTO_INCREMENT counters that rolled-back inserts advanced; MyISAM and
//! Aria tables are not transactional at all).
//!
//! The client runs in binary mode and sandboxed: its own commands (`quit`,
//! `source`, `\!`, `system`) are not available, so a script cannot end the
//! session quietly before the COMMIT nor run anything on this machine;
//! `DELIMITER` still works.

use crate::programs::Client;
use crate::sql;
use envsync_plugin_sdk::{
    ByteSource, Error, OnFeedError, check_status, connection, info, write_all,
};

pub fn transform(script: &ByteSource) -> Result<(), Error> {
    let target = connection("target")?;
    let client = Client::detect()?;
    let program = client.program;
    let db = target.database.clone();
    info(format!(
        "running the transform script on {db:?} in a transaction (DDL commits implicitly)"
    ));
    let failed = |e: Error| {
        e.context(format!(
            "transform script failed; its transaction was rolled back (statements before a DDL \
             statement or COMMIT in the script stay), {db:?} is otherwise unchanged"
        ))
    };
    let mut child = client
        .transformer("target", &target, &db)
        .stdin_piped()
        .spawn()?;
    // The script goes in whole before the trailer's COMMIT; on any problem
    // the client is killed while its input is still open, so nothing more is
    // committed.
    let (stdin, bytes) = child
        .feed(script, OnFeedError::Kill)
        .and_then(|fed| fed.all())
        .map_err(failed)?;
    if let Err(e) = script.verify() {
        return Err(failed(child.abort(e)));
    }
    if let Err(e) = write_all(&stdin, sql::TRANSFORM_TRAILER.as_bytes()) {
        return Err(failed(child.abort(e)));
    }
    let closed = stdin.close();
    drop(stdin);
    // All of the tail: an operator's script's messages are worth seeing whole.
    let finished = child
        .wait()
        .and_then(|status| check_status(program, &status));
    finished.and(closed).map_err(failed)?;
    info(format!("transform script ({bytes} bytes) committed"));
    Ok(())
}
