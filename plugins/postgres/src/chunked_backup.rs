//! A chunked backup (docs/decisions/0019): one exported snapshot shared by
//! every session; the schema before the data, each table's rows (big tables
//! split into block ranges) and the schema after the data as separate
//! chunks, dumped `jobs` at a time; the plan as the main stream.

use crate::plan::{DataChunk, Plan};
use crate::programs::psql;
use crate::sql;
use envsync_plugin_sdk::sessions::{self, Session};
use envsync_plugin_sdk::{
    ByteSink, ByteSource, Command, Error, Running, chunks, connection, info, start_splice,
    write_all,
};

/// Largest query answer read from psql (the table list).
const LIST_LIMIT: usize = 64 << 20;

/// What one dump session produces.
enum Dump {
    /// pg_dump of one section into a chunk.
    Section { chunk: String, args: Vec<String> },
    /// COPY of one table or block range into a chunk.
    Rows { chunk: String, query: String },
}

pub fn backup(artifact: &ByteSink, jobs: usize, chunk_blocks: Option<u64>) -> Result<(), Error> {
    let source = connection("source")?;
    let db = source.database.clone();
    let mut holder = SnapshotHolder::start(&db)?;
    let snapshot = holder.snapshot.clone();
    let result = dump_all(artifact, &db, &snapshot, jobs, chunk_blocks, &mut holder);
    let ended = holder.end();
    result.and(ended)
}

fn dump_all(
    artifact: &ByteSink,
    db: &str,
    snapshot: &str,
    jobs: usize,
    chunk_blocks: Option<u64>,
    holder: &mut SnapshotHolder,
) -> Result<(), Error> {
    let (encoding, tables) = list_tables(db, snapshot)?;
    let chunk_blocks = chunk_blocks.unwrap_or_else(|| {
        crate::settings::auto_chunk_blocks(tables.iter().map(|t| t.blocks).sum())
    });
    let sequences = list_sequences(db, snapshot)?;
    // Like pg_dump: hold a share lock on every table dumped, so none is
    // dropped or rewritten before its rows are read.
    holder.lock(&tables)?;
    let mut plan = Plan {
        id: format!("{snapshot} {}", unique_suffix()),
        encoding: encoding.clone(),
        pre_data: "pre-data".into(),
        sequences: "sequences".into(),
        post_data: "post-data".into(),
        data: Vec::new(),
        sanitised: false,
    };
    let mut dumps = vec![Dump::Section {
        chunk: plan.pre_data.clone(),
        args: vec!["-Fc".into(), "-Z0".into(), "--section=pre-data".into()],
    }];
    let mut rows = 0usize;
    for table in &tables {
        for range in block_ranges(table.blocks, chunk_blocks) {
            rows += 1;
            let chunk = format!("data-{rows:05}");
            let select = if table.columns.is_empty() {
                "SELECT".to_string()
            } else {
                format!("SELECT {}", table.columns)
            };
            let query = format!("COPY ({select} FROM ONLY {}{range}) TO STDOUT;", table.name);
            dumps.push(Dump::Rows {
                chunk: chunk.clone(),
                query,
            });
            plan.data.push(DataChunk {
                chunk,
                table: table.name.clone(),
                columns: table.columns.clone(),
            });
        }
    }
    // Sequence values and large objects: pg_dump's data section without
    // table data. `--exclude-table-data` would drop sequence values too, so
    // the sequences are named (each quoted, so matched literally), and
    // large objects asked for (-b), which naming tables would leave out.
    let mut args: Vec<String> = vec!["-Fc".into(), "-Z0".into(), "--section=data".into()];
    if sequences.is_empty() {
        args.push("--exclude-table-data=*.*".into());
    } else {
        args.push("-b".into());
        args.extend(sequences.iter().map(|s| format!("--table={s}")));
    }
    dumps.push(Dump::Section {
        chunk: plan.sequences.clone(),
        args,
    });
    dumps.push(Dump::Section {
        chunk: plan.post_data.clone(),
        args: vec!["-Fp".into(), "--section=post-data".into()],
    });
    info(format!(
        "dumping {db:?} as {} chunks ({} tables) with {jobs} session(s) sharing snapshot {snapshot}",
        dumps.len(),
        tables.len()
    ));
    sessions::run(jobs, dumps, |dump| {
        start_dump(db, snapshot, &encoding, dump)
    })?;
    write_all(artifact, plan.render().as_bytes())
}

fn start_dump(db: &str, snapshot: &str, encoding: &str, dump: Dump) -> Result<Session, Error> {
    match dump {
        Dump::Section { chunk, args } => {
            let mut child = Command::new("pg_dump")
                .args(args)
                .arg(format!("--snapshot={snapshot}"))
                .arg(format!("--dbname={}", sql::conninfo(db)))
                .connection("source")
                .stdout_piped()
                .spawn()?;
            into_chunk(&mut child, &chunk).map(|transfer| Session {
                label: format!("pg_dump of chunk {chunk}"),
                child,
                transfer,
            })
        }
        Dump::Rows { chunk, query } => {
            let mut child = psql(db)
                .args(["-f", "-"])
                .connection("source")
                .stdin_piped()
                .stdout_piped()
                .spawn()?;
            let script = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n\
                 SET TRANSACTION SNAPSHOT {};\n{}\n{query}\nCOMMIT;\n",
                sql::literal(snapshot),
                crate::chunked_restore::session_settings(encoding)
            );
            let stdin = child.take_stdin()?;
            write_all(&stdin, script.as_bytes())?;
            stdin.close()?;
            drop(stdin);
            into_chunk(&mut child, &chunk).map(|transfer| Session {
                label: format!("psql dumping chunk {chunk}"),
                child,
                transfer,
            })
        }
    }
}

fn into_chunk(child: &mut Running, chunk: &str) -> Result<envsync_plugin_sdk::Transfer, Error> {
    let stdout: ByteSource = child.take_stdout()?;
    let sink = chunks::create(chunk)?;
    start_splice(stdout, sink, &[])
}

/// A table whose rows are dumped.
struct Table {
    /// Quoted, schema-qualified.
    name: String,
    columns: String,
    blocks: u64,
}

/// The server encoding and the tables with rows to dump, largest first (so
/// the longest sessions start first), as the snapshot sees them.
fn list_tables(db: &str, snapshot: &str) -> Result<(String, Vec<Table>), Error> {
    let in_snapshot = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n\
         SET TRANSACTION SNAPSHOT {};\n",
        sql::literal(snapshot)
    );
    let encoding = psql(db)
        .args(["-f", "-"])
        .connection("source")
        .output(Some(b"SHOW server_encoding;\n"), 1024)?;
    let encoding = String::from_utf8_lossy(&encoding).trim().to_string();
    let script = format!("{in_snapshot}{}", sql::LIST_DATA_TABLES);
    let out = psql(db)
        .args(["-F", "\u{1f}", "-R", "\u{1e}", "-f", "-"])
        .connection("source")
        .output(Some(script.as_bytes()), LIST_LIMIT)?;
    let out = String::from_utf8(out)
        .map_err(|_| Error::Other("psql's table list is not UTF-8".into()))?;
    let mut tables = Vec::new();
    let out = out.strip_suffix('\n').unwrap_or(&out);
    for record in out.split('\u{1e}').filter(|r| !r.is_empty()) {
        let fields: Vec<&str> = record.split('\u{1f}').collect();
        let [name, columns, blocks] = fields.as_slice() else {
            return Err(Error::Other(format!(
                "unexpected line in psql's table list: {record:?}"
            )));
        };
        tables.push(Table {
            name: name.to_string(),
            columns: columns.to_string(),
            blocks: blocks.trim().parse().unwrap_or(0),
        });
    }
    Ok((encoding, tables))
}

/// The sequences whose values the backup keeps (quoted, schema-qualified,
/// as pg_dump's `--table` patterns match them literally).
fn list_sequences(db: &str, snapshot: &str) -> Result<Vec<String>, Error> {
    let script = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n\
         SET TRANSACTION SNAPSHOT {};\n{}",
        sql::literal(snapshot),
        sql::LIST_SEQUENCES
    );
    let out = psql(db)
        .args(["-R", "\u{1e}", "-f", "-"])
        .connection("source")
        .output(Some(script.as_bytes()), LIST_LIMIT)?;
    let out = String::from_utf8(out)
        .map_err(|_| Error::Other("psql's sequence list is not UTF-8".into()))?;
    let out = out.strip_suffix('\n').unwrap_or(&out);
    Ok(out
        .split('\u{1e}')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// `WHERE` clauses splitting a table of `blocks` blocks into ranges of
/// `per_chunk` blocks; the last range is open-ended, so rows in blocks
/// added since the size was read are still dumped.
pub fn block_ranges(blocks: u64, per_chunk: u64) -> Vec<String> {
    if per_chunk == 0 || blocks <= per_chunk {
        return vec![String::new()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + per_chunk < blocks {
        let end = start + per_chunk;
        let lower = if start == 0 {
            String::new()
        } else {
            format!("ctid >= '({start},0)'::tid AND ")
        };
        out.push(format!(" WHERE {lower}ctid < '({end},0)'::tid"));
        start = end;
    }
    out.push(format!(" WHERE ctid >= '({start},0)'::tid"));
    out
}

/// Distinguishes two backups of one snapshot id (ids restart with the server).
fn unique_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// The session that exports the snapshot and keeps it (and the table
/// locks) alive until every other session is done.
struct SnapshotHolder {
    child: Running,
    stdin: Option<ByteSink>,
    stdout: ByteSource,
    snapshot: String,
}

impl SnapshotHolder {
    fn start(db: &str) -> Result<SnapshotHolder, Error> {
        let mut child = psql(db)
            .args(["-f", "-"])
            .connection("source")
            .stdin_piped()
            .stdout_piped()
            .spawn()?;
        let stdin = child.take_stdin()?;
        let stdout = child.take_stdout()?;
        write_all(
            &stdin,
            b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n",
        )?;
        let mut holder = SnapshotHolder {
            child,
            stdin: Some(stdin),
            stdout,
            snapshot: String::new(),
        };
        holder.snapshot = match holder.line() {
            Ok(line) if !line.is_empty() => line,
            Ok(_) | Err(_) => {
                let status = holder.child.wait()?;
                return Err(holder.child.exit_error(&status).context(
                    "could not export a snapshot for the parallel backup (pg_export_snapshot)",
                ));
            }
        };
        Ok(holder)
    }

    /// The next line psql prints (it flushes after every result).
    fn line(&self) -> Result<String, Error> {
        let mut out = Vec::new();
        while !out.ends_with(b"\n") {
            let chunk = self.stdout.read(4096)?;
            if chunk.is_empty() {
                return Err(Error::Io("psql ended before answering".into()));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    fn lock(&mut self, tables: &[Table]) -> Result<(), Error> {
        let stdin = self.stdin.as_ref().expect("open until end");
        for batch in tables.chunks(500) {
            let names: Vec<&str> = batch.iter().map(|t| t.name.as_str()).collect();
            let statement = format!("LOCK TABLE {} IN ACCESS SHARE MODE;\n", names.join(", "));
            write_all(stdin, statement.as_bytes())?;
        }
        write_all(stdin, b"SELECT 'locked';\n")?;
        match self.line()?.as_str() {
            "locked" => Ok(()),
            other => Err(Error::Other(format!(
                "unexpected answer while locking the tables: {other:?}"
            ))),
        }
    }

    fn end(mut self) -> Result<(), Error> {
        if let Some(stdin) = self.stdin.take() {
            let _ = write_all(&stdin, b"COMMIT;\n");
            let _ = stdin.close();
        }
        self.child.finish()
    }
}
