//! `backups export`: any artifact out as one plain SQL script that
//! `psql -1 -f` loads, for users without envsync. A chunked artifact's
//! sections are put back in load order (docs/decisions/0019): the schema
//! before the data (custom format, turned into SQL by `pg_restore -f -`),
//! the session settings its COPY text was dumped with, each data chunk
//! inside its own `COPY … FROM stdin;`, the sequences (through pg_restore
//! too) and the schema after the data as it is. A single-stream custom
//! archive goes through `pg_restore -f -`; a plain SQL artifact (a
//! sanitised backup) passes through. The sandbox reaches no database: the
//! host lets pg_restore run here only as a converter (`-f -`, no `-d`).

use crate::chunked_restore::session_settings;
use crate::format_check::{self, Kind};
use crate::plan::Plan;
use envsync_plugin_sdk::{
    ByteSink, ByteSource, Command, Error, Running, check_status, chunks, info, read_all, read_head,
    splice, start_splice, write_all,
};

/// Bytes read to tell the format (as `restore` does).
const HEAD: usize = 4096;
/// Largest plan read into memory.
const PLAN_LIMIT: usize = 256 << 20;

pub fn export_dump(artifact: &ByteSource, out: ByteSink) -> Result<(), Error> {
    let head = read_head(artifact, HEAD)?;
    match format_check::kind(&head).map_err(Error::BadArtifact)? {
        Kind::Chunked => chunked(artifact, &head, &out)?,
        Kind::Plain => {
            info("the artifact is a plain SQL dump: passing it through");
            write_all(&out, &head)?;
            splice(artifact, &out)?;
            artifact.verify()?;
        }
        Kind::Custom => return custom(artifact, &head, out),
    }
    out.close()
}

/// A single-stream custom archive through `pg_restore -f -`: its output is
/// copied into `out` in the background while the artifact is fed to it.
fn custom(artifact: &ByteSource, head: &[u8], out: ByteSink) -> Result<(), Error> {
    info("turning the custom-format archive into SQL with pg_restore");
    let mut child = converter()?;
    let stdout = child.take_stdout()?;
    let drained = start_splice(stdout, out, &[])?;
    let stdin = child.take_stdin()?;
    let fed = write_all(&stdin, head)
        .and_then(|()| splice(artifact, &stdin))
        .and_then(|_| stdin.close());
    drop(stdin);
    if let Err(e) = fed {
        let e = child.abort_upstream(e);
        let _ = drained.wait();
        return Err(e);
    }
    let status = child.wait()?;
    let copied = drained.wait();
    check_status("pg_restore", &status)?;
    copied?;
    // Output is kept only if the whole artifact is intact.
    artifact.verify()
}

/// The chunked artifact whose plan starts with `head`.
fn chunked(artifact: &ByteSource, head: &[u8], out: &ByteSink) -> Result<(), Error> {
    let mut text = head.to_vec();
    text.extend(read_all(artifact, PLAN_LIMIT)?);
    artifact.verify()?;
    let plan = Plan::parse(&text).map_err(Error::BadArtifact)?;
    info(format!(
        "exporting a chunked artifact: {} data chunks",
        plan.data.len()
    ));
    write_all(
        out,
        b"-- PostgreSQL database dump exported by envsync-host `backups export`\n\
          -- from a chunked artifact: load it with psql -X -v ON_ERROR_STOP=1 -1 -f FILE\n\n",
    )?;
    if plan.sanitised {
        // Every chunk already is SQL (data chunks with their own COPY).
        write_all(out, session_settings(&plan.encoding).as_bytes())?;
        let names = std::iter::once(&plan.pre_data)
            .chain(plan.data.iter().map(|d| &d.chunk))
            .chain([&plan.sequences, &plan.post_data]);
        for name in names {
            section(name, out)?;
        }
        return Ok(());
    }
    convert(&plan.pre_data, out)?;
    // After pg_restore's own settings, those the COPY text was dumped with.
    write_all(out, session_settings(&plan.encoding).as_bytes())?;
    for chunk in &plan.data {
        let columns = if chunk.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", chunk.columns)
        };
        let copy = format!("\nCOPY {}{columns} FROM stdin;\n", chunk.table);
        write_all(out, copy.as_bytes())?;
        copy_chunk(&chunk.chunk, out)?;
        write_all(out, b"\\.\n")?;
    }
    convert(&plan.sequences, out)?;
    section(&plan.post_data, out)
}

/// A chunk copied into `out` as it is, verified at its end.
fn section(name: &str, out: &ByteSink) -> Result<(), Error> {
    copy_chunk(name, out)?;
    write_all(out, b"\n")
}

fn copy_chunk(name: &str, out: &ByteSink) -> Result<(), Error> {
    let source = chunks::open(name)?;
    if let Err(e) = splice(&source, out) {
        // A chunk that cannot be decoded is damaged: verify says so (it
        // reads on and checks), which is the cause to report.
        return Err(match source.verify() {
            Err(damage @ Error::Integrity(_)) => damage,
            _ => e.context(format!("chunk {name}")),
        });
    }
    source.verify()
}

/// `pg_restore -f -`: a custom-format archive on stdin, SQL on stdout.
fn converter() -> Result<Running, Error> {
    Command::new("pg_restore")
        .args(["-f", "-"])
        .stdin_piped()
        .stdout_piped()
        .spawn()
}

/// A custom-format section chunk turned into SQL by pg_restore: the chunk
/// is fed in the background while its output is copied into `out`.
fn convert(name: &str, out: &ByteSink) -> Result<(), Error> {
    let source = chunks::open(name)?;
    let mut child = converter()?;
    let stdin = child.take_stdin()?;
    let fed = start_splice(source, stdin, &[])?;
    let stdout = child.take_stdout()?;
    let drained = splice(&stdout, out);
    drop(stdout);
    if drained.is_err() {
        // It may be blocked writing output nobody reads.
        child.kill();
    }
    let fed = fed.wait();
    let status = child.wait()?;
    let label = format!("pg_restore of chunk {name}");
    match (fed, drained) {
        // A damaged chunk explains whatever pg_restore then did.
        (Err(e), drained) => Err(child.stream_failure(&status, e, drained.is_err())),
        (Ok(_), Err(e)) => Err(child.stream_failure(&status, e, true)),
        (Ok(_), Ok(_)) => check_status("pg_restore", &status),
    }
    .map_err(|e| e.context(label))?;
    write_all(out, b"\n")
}
