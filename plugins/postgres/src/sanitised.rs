//! Sanitised copies: the source is dumped as plain SQL (`pg_dump -Fp`), its
//! COPY blocks rewritten through the host's `sanitising` interface
//! (`copydata::rewrite_filtered`), and the result loaded with psql into the
//! scratch database. Plain artifacts (sanitised backups, which the host
//! writes: `sanitised_backup`) are restored with psql (`load_plain`).

use crate::copydata::{self, Stats};
use crate::swap::Replacement;
use crate::{settings, sql};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{
    ByteSource, CHUNK, Command, ConnectionInfo, Error, RowBatch, Running, connection, debug, info,
};

/// The tables to sanitise when the step sanitises: `Some(None)` for every
/// table, `Some(Some(list))` for those named, `None` when it does not.
pub fn plan() -> Option<Option<Vec<String>>> {
    sanitising::plan().map(|p| p.tables)
}

/// pg_dump of the source in plain format with `extra` flags, stdout
/// piped; `what` says what it dumps, for the log.
pub fn plain_dump(source: &ConnectionInfo, extra: &[&str], what: &str) -> Result<Running, Error> {
    let mut flags = settings::plain_dump_flags()?;
    flags.extend(extra.iter().map(|f| f.to_string()));
    info(format!(
        "dumping {what} of {:?} on {} with pg_dump {}",
        source.database,
        source.instance,
        flags.join(" ")
    ));
    Command::new("pg_dump")
        .args(flags)
        .arg(format!("--dbname={}", sql::conninfo(&source.database)))
        .connection("source")
        .stdout_piped()
        .spawn()
}

fn transform(table: &str, columns: &[String], batch: RowBatch) -> Result<RowBatch, Error> {
    sanitising::transform_rows(table, columns, &batch)
}

fn describe(stats: &Stats, wanted: &Option<Vec<String>>) -> String {
    format!(
        "rewrote {} bytes of dump into {} bytes: {} row(s) of {} table(s) through the \
         sanitiser in {} batch(es), {} kept; {} table(s) copied unchanged{}",
        stats.bytes_in,
        stats.bytes_out,
        stats.rows_in,
        stats.tables_sanitised,
        stats.batches,
        stats.rows_out,
        stats.tables_passed,
        match wanted {
            None => String::new(),
            Some(list) => format!(" (the sanitiser asked for: {})", list.join(", ")),
        }
    )
}

/// Runs pg_dump's output through the sanitiser into `write`. On any error
/// pg_dump is stopped; its own failure wins when it failed first. For psql
/// (`for_psql`), pg_dump's `\restrict` lines are dropped: the host already
/// started psql restricted, and a second `\restrict` is an error.
fn dump_through(
    wanted: &Option<Vec<String>>,
    for_psql: bool,
    write: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(Running, Result<Stats, Error>), Error> {
    let source = connection("source")?;
    let mut dump = plain_dump(&source, &[], "plain SQL for the sanitiser")?;
    let out = dump.take_stdout()?;
    let result = copydata::rewrite_filtered(
        || out.read(CHUNK as u32),
        write,
        wanted.as_deref(),
        transform,
        |line| !(for_psql && is_restrict_line(line)),
    );
    drop(out);
    Ok((dump, result))
}

/// Sanitised copy: the rewritten plain dump goes into psql on the scratch
/// database.
pub fn copy_into(job: &Replacement, wanted: Option<Vec<String>>) -> Result<(), Error> {
    let (cmd, preamble) = job.psql_load();
    let mut load = cmd.stdin_piped().spawn()?;
    let stdin = load.take_stdin()?;
    if let Err(e) = stdin.write(preamble.as_bytes()) {
        drop(stdin);
        return Err(load_failed(&load, e));
    }
    let (dump, result) = match dump_through(&wanted, true, |bytes| stdin.write(bytes)) {
        Ok(r) => r,
        Err(e) => {
            drop(stdin);
            return Err(load.abort(e));
        }
    };
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            // Kill psql while its input is still open, so it commits
            // nothing; then decide who is to blame.
            let e = dump.abort_upstream(e);
            load.kill();
            drop(stdin);
            let status = load.wait()?;
            return Err(load.stream_failure(&status, e, true));
        }
    };
    if let Err(e) = dump.finish() {
        return Err(load.abort(e));
    }
    if let Err(e) = stdin.close() {
        drop(stdin);
        return Err(load_failed(&load, e));
    }
    drop(stdin);
    load.finish()?;
    info(describe(&stats, &wanted));
    Ok(())
}

/// psql's own failure when writing to it failed, else `e`.
fn load_failed(load: &Running, e: Error) -> Error {
    match load.wait() {
        Ok(status) => load.stream_failure(&status, e, false),
        Err(_) => e,
    }
}

/// Restore of a plain SQL artifact whose first bytes (`head`) were already
/// read: psql loads head and rest into the scratch database in one
/// transaction; the artifact is verified before psql sees the end of its
/// input.
///
/// A plain dump is a psql script, and psql meta-commands (`\!` runs a shell
/// command) in a tampered artifact must not run: the host starts every psql
/// in restricted mode (`\restrict`, psql 15.14/16.10/17.6 and later) with a
/// key neither the plugin nor the artifact knows, so it refuses every
/// meta-command; the dump's own `\restrict`/`\unrestrict` lines are dropped
/// on the way (which is why the artifact passes through the plugin rather
/// than being spliced).
pub fn load_plain(job: &Replacement, head: &[u8], artifact: &ByteSource) -> Result<(), Error> {
    info("loading the plain SQL artifact with psql");
    let (cmd, preamble) = job.psql_load();
    let mut load = cmd.stdin_piped().spawn()?;
    let stdin = load.take_stdin()?;
    let mut head = Some(head.to_vec());
    let mut rows = crate::load_progress::RowMeter::new(job);
    let fed = stdin.write(preamble.as_bytes()).and_then(|()| {
        copydata::rewrite_filtered(
            || match head.take() {
                Some(head) => Ok(head),
                None => {
                    rows.tick();
                    artifact.read(CHUNK as u32)
                }
            },
            |bytes| stdin.write(bytes),
            Some(&[]),
            |table, _, _| {
                Err(Error::Other(format!(
                    "internal error: rows of {table} sent to the sanitiser during a restore"
                )))
            },
            |line| !is_restrict_line(line),
        )
    });
    let stats = match fed {
        Ok(stats) => stats,
        Err(e) => {
            // Kill first: psql must not commit a cut-off dump.
            load.kill();
            drop(stdin);
            let status = load.wait()?;
            return Err(load.stream_failure(&status, e, true));
        }
    };
    info("verifying the artifact against its manifest");
    if let Err(e) = artifact.verify() {
        // Killed while its input is still open: psql commits nothing.
        return Err(load.abort(e));
    }
    if let Err(e) = stdin.close() {
        debug(format!("closing psql's input: {}", e.message()));
    }
    drop(stdin);
    load.finish().map_err(|e| {
        if e.message().contains("invalid command \\restrict") {
            e.context(
                "this psql cannot restrict meta-commands (\\restrict needs psql 15.14, 16.10, \
                 17.6 or later); install a newer PostgreSQL client to restore plain dumps",
            )
        } else {
            e
        }
    })?;
    info(format!("psql loaded {} bytes", stats.bytes_in));
    Ok(())
}

/// `\restrict KEY` / `\unrestrict KEY` as pg_dump writes them.
pub fn is_restrict_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let key = line
        .strip_prefix(b"\\restrict ")
        .or_else(|| line.strip_prefix(b"\\unrestrict "));
    key.is_some_and(|k| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_lines() {
        assert!(is_restrict_line(b"\\restrict abcXYZ09\n"));
        assert!(is_restrict_line(b"\\unrestrict abc"));
        assert!(!is_restrict_line(b"\\restrict \n"));
        assert!(!is_restrict_line(b"\\restrict a b\n"));
        assert!(!is_restrict_line(b"\\! rm -rf /\n"));
    }
}
