//! A chunked backup (docs/decisions/0022): the schema, the rows cut into
//! chunks of whole INSERT statements of one table, and the triggers, each a
//! chunk; the plan as the main stream.
//!
//! The rows come from `jobs` `mariadb-dump --single-transaction` sessions
//! sharing one snapshot (started under a global read lock, see
//! [`parallel_rows`]), each dumping a share of the tables; the plugin reads
//! their outputs and cuts them (`chunk_cut`). The schema is dumped just
//! before and the triggers just after, as separate dumps: a DDL change to
//! the source during the backup is not covered, as it is not by
//! `--single-transaction` itself.

use crate::chunk_cut::{Cut, Cutter};
use crate::chunk_plan::{DataChunk, Plan, SCHEMA_CHUNK, TRIGGERS_CHUNK};
use crate::load_progress::TupleCounter;
use crate::programs::{Client, Dumper};
use crate::settings;
use crate::sql::hex;
use envsync_plugin_sdk::{
    ByteSink, ByteSource, ConnectionInfo, Error, Reader, chunks, connection, info, warn, write_all,
};
use std::io::BufRead;
use std::time::Instant;

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

/// `chunk_bytes`: the operator's `chunk-mib`, or None for the automatic
/// size (`settings::auto_chunk_bytes`).
pub fn backup(artifact: &ByteSink, jobs: usize, chunk_bytes: Option<u64>) -> Result<(), Error> {
    let source = connection("source")?;
    let dumper = Dumper::detect()?;
    let client = Client::detect()?;
    let tables = list_tables(&client, &source)?;
    let chunk_bytes = chunk_bytes
        .unwrap_or_else(|| settings::auto_chunk_bytes(tables.iter().map(|(_, size)| size).sum()));
    let mut plan = Plan {
        id: unique_id(&source.database),
        schema: SCHEMA_CHUNK.into(),
        data: Vec::new(),
        triggers: TRIGGERS_CHUNK.into(),
    };
    info(format!(
        "dumping {:?} on {} as chunks of about {} MiB",
        source.database,
        source.instance,
        chunk_bytes >> 20
    ));
    dump_whole(&dumper, &source, SCHEMA_FLAGS, &plan.schema)?;
    plan.data = dump_rows(&dumper, &client, &source, &tables, chunk_bytes, jobs)?;
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

/// The rows, cut into chunks: `jobs` data dumps at once when the global
/// read lock can be taken (see [`parallel_rows`]), else one.
fn dump_rows(
    dumper: &Dumper,
    client: &Client,
    source: &ConnectionInfo,
    tables: &[(String, u64)],
    chunk_bytes: u64,
    jobs: usize,
) -> Result<Vec<DataChunk>, Error> {
    let jobs = jobs.min(tables.len());
    if jobs > 1 {
        match GlobalReadLock::take(client, source) {
            Ok(lock) => {
                let groups = balance(tables, jobs);
                return parallel_rows(dumper, source, chunk_bytes, groups, lock);
            }
            Err(e) => warn(format!(
                "one data dump session instead of {jobs}: the global read lock that starts \
                 parallel sessions on one snapshot could not be taken ({}; it needs the \
                 RELOAD privilege)",
                e.message()
            )),
        }
    }
    parallel_rows(
        dumper,
        source,
        chunk_bytes,
        vec![Vec::new()],
        GlobalReadLock::none(),
    )
}

/// Runs one data dump per group of tables (an empty group: every table) and
/// cuts their output. Every dump opens its snapshot while `lock` holds
/// (nothing can commit then, so all snapshots are the same); the lock is
/// released as soon as each dump has written its first table's header,
/// which mariadb-dump writes after `START TRANSACTION WITH CONSISTENT
/// SNAPSHOT`.
fn parallel_rows(
    dumper: &Dumper,
    source: &ConnectionInfo,
    chunk_bytes: u64,
    groups: Vec<Vec<String>>,
    lock: GlobalReadLock,
) -> Result<Vec<DataChunk>, Error> {
    let extra: Vec<String> = DATA_FLAGS.iter().map(|f| f.to_string()).collect();
    let mut dumps = Vec::with_capacity(groups.len());
    for group in &groups {
        match dumper.tables("source", source, &extra, group).spawn() {
            Ok(dump) => dumps.push(dump),
            Err(e) => {
                abandon(&dumps);
                return Err(e);
            }
        }
    }
    let mut stdouts = Vec::with_capacity(dumps.len());
    for dump in &mut dumps {
        match dump.take_stdout() {
            Ok(out) => stdouts.push(out),
            Err(e) => {
                abandon(&dumps);
                return Err(e);
            }
        }
    }
    let mut state = Cutting {
        data: Vec::new(),
        chunk_bytes,
    };
    let cut = state.cut_all(&stdouts, lock);
    drop(stdouts);
    if let Err(e) = cut {
        let mut e = e;
        for dump in &dumps {
            e = dump.abort_upstream(e);
        }
        return Err(e);
    }
    for dump in &dumps {
        dump.finish()?;
    }
    Ok(state.data)
}

fn abandon(dumps: &[envsync_plugin_sdk::Running]) {
    for dump in dumps {
        dump.kill();
        let _ = dump.wait();
    }
}

/// One dump's output being cut.
struct Stream<'a> {
    reader: Reader<'a>,
    cutter: Cutter,
    /// The open chunk, its position in `Cutting::data` and its rows so far.
    open: Option<(ByteSink, usize, TupleCounter)>,
    ended: bool,
    /// Its snapshot exists (it wrote a table's header or rows, or ended).
    started: bool,
}

struct Cutting {
    data: Vec<DataChunk>,
    chunk_bytes: u64,
}

impl Cutting {
    fn cut_all(&mut self, stdouts: &[ByteSource], lock: GlobalReadLock) -> Result<(), Error> {
        let mut streams: Vec<Stream> = stdouts
            .iter()
            .map(|out| Stream {
                reader: Reader::new(out),
                cutter: Cutter::new(self.chunk_bytes),
                open: None,
                ended: false,
                started: false,
            })
            .collect();
        // Until every dump holds its snapshot, under the lock.
        let locked_at = Instant::now();
        for stream in &mut streams {
            while !stream.started {
                self.next_line(stream)?;
            }
        }
        lock.release()?;
        if streams.len() > 1 {
            info(format!(
                "{} data dump sessions share one snapshot; the global read lock was held {} ms",
                streams.len(),
                locked_at.elapsed().as_millis()
            ));
        }
        // Then a line from each in turn: each dump has its own pipe, and
        // the others keep dumping into theirs meanwhile.
        while streams.iter().any(|s| !s.ended) {
            for stream in streams.iter_mut().filter(|s| !s.ended) {
                self.next_line(stream)?;
            }
        }
        Ok(())
    }

    fn next_line(&mut self, stream: &mut Stream) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Io(format!("reading the data dump: {e}"));
        let mut line = Vec::new();
        if stream.reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            stream.cutter.finish().map_err(Error::Other)?;
            self.close(stream)?;
            stream.ended = true;
            stream.started = true;
            return Ok(());
        }
        if line.starts_with(b"-- Dumping data for table") {
            stream.started = true;
        }
        match stream.cutter.line(&line).map_err(Error::Other)? {
            Cut::Skip => return Ok(()),
            Cut::Start(table) => {
                self.close(stream)?;
                let chunk = format!("data-{:05}", self.data.len() + 1);
                let sink = chunks::create(&chunk)?;
                stream.open = Some((sink, self.data.len(), TupleCounter::default()));
                self.data.push(DataChunk {
                    chunk,
                    table,
                    rows: None,
                });
            }
            Cut::Append => {}
        }
        stream.started = true;
        let (sink, _, rows) = stream.open.as_mut().expect("a chunk is open after Start");
        rows.push(&line);
        write_all(sink, &line)
    }

    /// Stores the stream's open chunk with its row count.
    fn close(&mut self, stream: &mut Stream) -> Result<(), Error> {
        if let Some((sink, at, rows)) = stream.open.take() {
            sink.close()?;
            self.data[at].rows = Some(rows.rows());
        }
        Ok(())
    }
}

/// The base tables of the source and their size, largest first.
fn list_tables(client: &Client, source: &ConnectionInfo) -> Result<Vec<(String, u64)>, Error> {
    let script = format!(
        "SELECT TABLE_NAME, COALESCE(DATA_LENGTH, 0) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE' ORDER BY 2 DESC, 1;\n",
        hex(&source.database)
    );
    let rows = client.query("source", source, None, &script)?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            let name = it.next().flatten()?;
            let size = it
                .next()
                .flatten()
                .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
                .unwrap_or(0);
            Some((String::from_utf8_lossy(&name).into_owned(), size))
        })
        .collect())
}

/// Tables split into `jobs` groups of about equal size: largest first,
/// each to the group that is smallest so far.
pub fn balance(tables: &[(String, u64)], jobs: usize) -> Vec<Vec<String>> {
    let mut groups: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); jobs.max(1)];
    let mut sorted: Vec<&(String, u64)> = tables.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, size) in sorted {
        let smallest = groups
            .iter_mut()
            .min_by_key(|(total, _)| *total)
            .expect("at least one group");
        smallest.0 += size;
        smallest.1.push(name.clone());
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

/// A session holding `FLUSH TABLES WITH READ LOCK` (or none).
struct GlobalReadLock {
    session: Option<(envsync_plugin_sdk::Running, ByteSink, ByteSource)>,
}

impl GlobalReadLock {
    fn none() -> GlobalReadLock {
        GlobalReadLock { session: None }
    }

    /// Waits for running statements to end and blocks writes until released.
    fn take(client: &Client, source: &ConnectionInfo) -> Result<GlobalReadLock, Error> {
        let mut child = client
            .own("source", source, None)
            // Its answer is read while the session stays open: unbuffered.
            .arg("--unbuffered")
            .stdin_piped()
            .stdout_piped()
            .spawn()?;
        let stdin = child.take_stdin()?;
        let stdout = child.take_stdout()?;
        write_all(&stdin, b"FLUSH TABLES WITH READ LOCK;\nSELECT 'locked';\n")?;
        let mut answer = Vec::new();
        while !answer.ends_with(b"\n") {
            let more = stdout.read(64)?;
            if more.is_empty() {
                drop(stdin);
                return Err(child.finish().err().unwrap_or_else(|| {
                    Error::Other("the client ended before taking the lock".into())
                }));
            }
            answer.extend_from_slice(&more);
        }
        if answer != b"locked\n" {
            child.kill();
            let _ = child.wait();
            return Err(Error::Other(format!(
                "unexpected answer to FLUSH TABLES WITH READ LOCK: {:?}",
                String::from_utf8_lossy(&answer)
            )));
        }
        Ok(GlobalReadLock {
            session: Some((child, stdin, stdout)),
        })
    }

    fn release(self) -> Result<(), Error> {
        let Some((child, stdin, stdout)) = self.session else {
            return Ok(());
        };
        write_all(&stdin, b"UNLOCK TABLES;\n")?;
        stdin.close()?;
        drop(stdin);
        drop(stdout);
        child.finish()
    }
}

/// Tells two backups apart (the restore resumes only the same one).
pub(crate) fn unique_id(database: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09} {database}", now.as_secs(), now.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_balanced_by_size_largest_first() {
        let t = |n: &str, s: u64| (n.to_string(), s);
        let tables = [t("a", 10), t("b", 60), t("c", 30), t("d", 25), t("e", 5)];
        assert_eq!(
            balance(&tables, 2),
            [
                vec!["b".to_string(), "e".into()],
                vec!["c".into(), "d".into(), "a".into()]
            ]
        );
        assert_eq!(balance(&tables[..1], 4), [vec!["a".to_string()]]);
    }
}
