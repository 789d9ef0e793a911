//! Running pg_dump, pg_restore and psql, and moving bytes between them and
//! host streams, with errors that name the real cause.

use crate::sql;
use envsync_plugin_sdk::{
    ByteSink, ByteSource, Command, Error, ExitStatus, Running, check_status, debug, read_all,
    splice, write_all,
};

/// psql stdout we read back (owner names, `1`): small by construction.
const PSQL_OUTPUT_LIMIT: usize = 64 * 1024;

/// psql without ~/.psqlrc, quiet, stopping at the first error, printing bare
/// values, on `database` of the `target` connection.
pub fn psql(database: &str) -> Command {
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
        .arg(format!("--dbname={}", sql::conninfo(database)))
        .connection("target")
}

/// Runs `script` with psql on `database` and returns what it printed.
/// The script goes through stdin (`-f -`), so psql sends its statements one
/// by one, as CREATE/DROP DATABASE need. psql's own failure (e.g. it could
/// not connect and closed its input early) wins over a broken pipe.
pub fn run_psql(database: &str, script: &str) -> Result<String, Error> {
    let mut child = psql(database)
        .args(["-f", "-"])
        .stdin_piped()
        .stdout_piped()
        .spawn()?;
    let stdin = child.take_stdin()?;
    let stdout = child.take_stdout()?;
    // Scripts and answers are tiny, so writing all before reading cannot
    // fill both pipes and deadlock.
    let wrote = write_all(&stdin, script.as_bytes()).and_then(|()| stdin.close());
    drop(stdin);
    let out = read_all(&stdout, PSQL_OUTPUT_LIMIT);
    drop(stdout);
    let status = child.wait()?;
    if !status.success {
        return Err(exit_error("psql", &status));
    }
    wrote?;
    Ok(String::from_utf8_lossy(&out?).into_owned())
}

/// What to do with a child whose input stream failed part-way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnFeedError {
    /// Kill it before it can see end of input: psql would run (and commit)
    /// a partial script.
    Kill,
    /// Close its input and let it exit by itself, so its own exit status
    /// and message survive (pg_restore stops at a truncated archive).
    CloseInput,
}

/// How feeding a child ended.
pub enum Fed {
    /// All of the source went in; stdin is still open, so the caller decides
    /// (e.g. after `verify`) when the child may see end of input.
    All(ByteSink, u64),
    /// The child exited successfully before reading everything: pg_restore
    /// does this when flags such as --schema-only make the rest useless.
    ChildDone,
}

/// Copies `source` into the child's stdin.
pub fn feed(
    child: &mut Running,
    program: &str,
    source: &ByteSource,
    on_error: OnFeedError,
) -> Result<Fed, Error> {
    let stdin = child.take_stdin()?;
    let splice_error = match splice(source, &stdin) {
        Ok(n) => return Ok(Fed::All(stdin, n)),
        Err(e) => e,
    };
    // Kill (when asked) while stdin is still open, then let go of stdin.
    if on_error == OnFeedError::Kill {
        child.kill();
    }
    drop(stdin);
    let status = child.wait()?;
    if status.success {
        return Ok(Fed::ChildDone);
    }
    let killed = on_error == OnFeedError::Kill;
    Err(stream_failure(program, &status, splice_error, killed))
}

/// Copies a child's stdout into `sink` and waits for the child; Ok only when
/// both the copy and the child succeeded. Returns the bytes copied.
pub fn drain_into(mut child: Running, program: &str, sink: &ByteSink) -> Result<u64, Error> {
    let stdout = child.take_stdout()?;
    let copied = splice(&stdout, sink);
    drop(stdout);
    match copied {
        Ok(n) => child.finish().map(|()| n),
        Err(e) => {
            // The child is likely blocked writing to a pipe nobody reads.
            child.kill();
            let status = child.wait()?;
            Err(stream_failure(program, &status, e, true))
        }
    }
}

/// The error for a stream that failed while `program` was at its other end.
/// A child that exited with an error code by itself usually caused the
/// failure (e.g. pg_restore hit an SQL error and closed its input), so its
/// stderr comes first; a child we killed ourselves has nothing to add.
pub fn stream_failure(
    program: &str,
    status: &ExitStatus,
    stream_error: Error,
    we_killed: bool,
) -> Error {
    if status.success || (we_killed && status.code.is_none()) {
        return stream_error;
    }
    // The stream error (typically a broken pipe) is only the consequence.
    debug(format!(
        "{program} failed; the stream then failed too: {}",
        stream_error.message()
    ));
    exit_error(program, status)
}

/// A `program-failed` error describing an unsuccessful exit: how it ended
/// and the tail of its stderr.
pub fn exit_error(program: &str, status: &ExitStatus) -> Error {
    match check_status(program, status) {
        Err(e) => e,
        Ok(()) => Error::ProgramFailed(format!("{program} failed")),
    }
}

/// `first` (the cause) with `then` (a consequence) appended, keeping the
/// kind of `first`.
pub fn also(first: Error, then: &Error) -> Error {
    let suffix = format!("; also: {}", then.message());
    match first {
        Error::ProgramFailed(m) => Error::ProgramFailed(m + &suffix),
        Error::Io(m) => Error::Io(m + &suffix),
        Error::Other(m) => Error::Other(m + &suffix),
        other => other,
    }
}
