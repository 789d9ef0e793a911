//! A chunked backup (docs/decisions/0022): the schema, the rows cut into
//! chunks of whole INSERT statements of one table, and the triggers, each a
//! chunk; the plan as the main stream.
//!
//! The rows come from one `mariadb-dump --single-transaction` (one
//! consistent snapshot, no lock beyond what a plain backup takes); the
//! plugin reads its output and cuts it (`chunk_cut`). The schema is dumped
//! just before it and the triggers just after, as separate dumps: a DDL
//! change to the source during the backup is not covered, as it is not by
//! `--single-transaction` itself.

use crate::chunk_cut::{Cut, Cutter};
use crate::chunk_plan::{DataChunk, Plan};
use crate::programs::Dumper;
use envsync_plugin_sdk::{
    ByteSink, ConnectionInfo, Error, Reader, chunks, connection, info, write_all,
};
use std::io::BufRead;

/// The schema: tables, views, routines and events, no rows, no triggers.
const SCHEMA_FLAGS: &[&str] = &["--no-data", "--skip-triggers"];
/// The rows only (the snapshot comes from `--single-transaction`).
const DATA_FLAGS: &[&str] = &[
    "--no-create-info",
    "--skip-triggers",
    "--skip-routines",
    "--skip-events",
];
/// The triggers only.
const TRIGGER_FLAGS: &[&str] = &[
    "--no-data",
    "--no-create-info",
    "--skip-routines",
    "--skip-events",
    "--triggers",
];

pub fn backup(artifact: &ByteSink, chunk_bytes: u64) -> Result<(), Error> {
    let source = connection("source")?;
    let dumper = Dumper::detect()?;
    let mut plan = Plan {
        id: unique_id(&source.database),
        schema: "schema".into(),
        data: Vec::new(),
        triggers: "triggers".into(),
    };
    info(format!(
        "dumping {:?} on {} as chunks of about {} MiB",
        source.database,
        source.instance,
        chunk_bytes >> 20
    ));
    dump_whole(&dumper, &source, SCHEMA_FLAGS, &plan.schema)?;
    plan.data = dump_rows(&dumper, &source, chunk_bytes)?;
    dump_whole(&dumper, &source, TRIGGER_FLAGS, &plan.triggers)?;
    info(format!("wrote {} data chunk(s)", plan.data.len()));
    write_all(artifact, plan.render().as_bytes())
}

/// One dump into one chunk, unchanged.
fn dump_whole(
    dumper: &Dumper,
    source: &ConnectionInfo,
    flags: &[&str],
    chunk: &str,
) -> Result<(), Error> {
    let extra: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let sink = chunks::create(chunk)?;
    dumper
        .command("source", source, &extra)
        .spawn()?
        .drain_into(&sink)?;
    sink.close()
}

/// The data dump cut into chunks.
fn dump_rows(
    dumper: &Dumper,
    source: &ConnectionInfo,
    chunk_bytes: u64,
) -> Result<Vec<DataChunk>, Error> {
    let extra: Vec<String> = DATA_FLAGS.iter().map(|f| f.to_string()).collect();
    let mut dump = dumper.command("source", source, &extra).spawn()?;
    let stdout = dump.take_stdout()?;
    let cut = cut_rows(&stdout, chunk_bytes);
    drop(stdout);
    match cut {
        Ok(data) => dump.finish().map(|()| data),
        Err(e) => Err(dump.abort_upstream(e)),
    }
}

fn cut_rows(
    stdout: &envsync_plugin_sdk::ByteSource,
    chunk_bytes: u64,
) -> Result<Vec<DataChunk>, Error> {
    let mut reader = Reader::new(stdout);
    let mut cutter = Cutter::new(chunk_bytes);
    let mut data = Vec::new();
    let mut open: Option<ByteSink> = None;
    let mut line = Vec::new();
    let io = |e: std::io::Error| Error::Io(format!("reading the data dump: {e}"));
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        match cutter.line(&line).map_err(Error::Other)? {
            Cut::Skip => continue,
            Cut::Start(table) => {
                if let Some(sink) = open.take() {
                    sink.close()?;
                }
                let chunk = format!("data-{:05}", data.len() + 1);
                open = Some(chunks::create(&chunk)?);
                data.push(DataChunk { chunk, table });
            }
            Cut::Append => {}
        }
        let sink = open.as_ref().expect("a chunk is open after Start");
        write_all(sink, &line)?;
    }
    cutter.finish().map_err(Error::Other)?;
    if let Some(sink) = open.take() {
        sink.close()?;
    }
    Ok(data)
}

/// Tells two backups apart (the restore resumes only the same one).
fn unique_id(database: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09} {database}", now.as_secs(), now.subsec_nanos())
}
