//! Sanitised backups (contract 0.2): the host writes the artifact, the
//! same plain SQL a normal backup is (restored the same way).
//!
//! - `structure`: before the rows, the dump with `--no-data --skip-triggers`
//!   (tables, views, routines, events); after them, only the triggers
//!   (`--no-data --no-create-info --triggers`), so none fires while rows
//!   load. The host runs the dump program here only with `--no-data`.
//! - `rows`: the dump with `--no-create-info` read by the `Rewriter`; every
//!   INSERT's rows go to the host in batches (`sanitising::write_rows`)
//!   with how the dump wrote each column (number, hex), nothing else.
//! - `encode`: one extended INSERT per batch the sanitiser kept.
//!
//! With `--jobs` the backup is chunked (docs/decisions/0021): the schema
//! goes into chunk `schema`, the host writes the rows as chunks
//! `rows-NNNNN` (sanitised by several sanitiser instances at once; each
//! holds the whole INSERTs of one table's run, as `encode` makes them), the
//! triggers go into chunk `triggers`, and the artifact is the chunked plan
//! (`chunk_plan.rs`) naming them, restored by `chunked_restore.rs`.

use crate::chunk_plan::{DataChunk, Plan, SCHEMA_CHUNK, TRIGGERS_CHUNK};
use crate::chunked_backup::unique_id;
use crate::programs::Dumper;
use crate::rows::{self, HEX, NUM, Rewriter, Row, Target};
use crate::{sanitise, settings, sql};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::row_chunks;
use envsync_plugin_sdk::{
    ByteSink, CHUNK, Error, Piece, RowBatch, Running, StructurePart, ValueKind, chunks, connection,
    info, job, write_all,
};

/// Starts a sanitised plan's id: the plan says what made it.
const SANITISED_ID: &str = "sanitised";

/// The schema before or after the rows.
pub fn structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    // The host allows chunks here only when the step has jobs.
    if job::parallelism().chosen {
        return chunked_structure(part, artifact);
    }
    structure_dump(part)?.drain_into(artifact).map(drop)
}

/// The structure of a chunked sanitised backup: before the rows, the
/// schema as chunk `schema` (creating it tells the host to write the rows
/// as chunks); after them, chunk `triggers` and, as the artifact, the plan
/// naming every chunk.
fn chunked_structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    let name = match part {
        StructurePart::BeforeRows => SCHEMA_CHUNK,
        StructurePart::AfterRows => TRIGGERS_CHUNK,
    };
    let sink = chunks::create(name)?;
    structure_dump(part)?.drain_into(&sink)?;
    sink.close()?;
    if part == StructurePart::BeforeRows {
        return Ok(());
    }
    // Each of the host's row chunks holds one table's rows; the plan names
    // it and counts them, so a restore reports rows as chunks load. (The
    // chunk's INSERTs name their table themselves.)
    let data: Vec<DataChunk> = row_chunks::host_row_chunks()?
        .into_iter()
        .map(|(chunk, described)| DataChunk {
            chunk,
            table: described
                .as_ref()
                .map(|d| d.table.clone())
                .unwrap_or_default(),
            rows: described.map(|d| d.rows),
        })
        .collect();
    info(format!("the sanitised rows are in {} chunk(s)", data.len()));
    let source = connection("source")?;
    let plan = Plan {
        id: format!("{SANITISED_ID} {}", unique_id(&source.database)),
        schema: SCHEMA_CHUNK.into(),
        data,
        triggers: TRIGGERS_CHUNK.into(),
    };
    write_all(artifact, plan.render().as_bytes())
}

/// The dump of the schema (before the rows) or the triggers (after them),
/// started; no rows in either.
fn structure_dump(part: StructurePart) -> Result<Running, Error> {
    let source = connection("source")?;
    let mut extra = settings::dump_flags()?;
    let (what, flags): (&str, &[&str]) = match part {
        StructurePart::BeforeRows => ("tables", &["--no-data", "--skip-triggers"]),
        StructurePart::AfterRows => (
            "triggers",
            &[
                "--no-data",
                "--no-create-info",
                "--skip-routines",
                "--skip-events",
                "--triggers",
            ],
        ),
    };
    extra.extend(flags.iter().map(|f| f.to_string()));
    let dumper = Dumper::detect()?;
    info(format!(
        "dumping the {what} of {:?} on {} without rows: {} {}",
        source.database,
        source.instance,
        dumper.program,
        dumper.describe_flags(&extra)
    ));
    dumper.command("source", &source, &extra).spawn()
}

/// The rows, through the host's `write-rows`.
pub fn rows() -> Result<(), Error> {
    let source = connection("source")?;
    let mut extra = settings::dump_flags()?;
    extra.extend(sanitise::DUMP_FLAGS.iter().map(|f| f.to_string()));
    extra.extend(
        [
            "--no-create-info",
            "--skip-triggers",
            "--skip-routines",
            "--skip-events",
        ]
        .map(String::from),
    );
    let dumper = Dumper::detect()?;
    info(format!(
        "dumping the rows of {:?} on {} for the sanitiser: {} {}",
        source.database,
        source.instance,
        dumper.program,
        dumper.describe_flags(&extra)
    ));
    let mut dump = dumper.command("source", &source, &extra).spawn()?;
    let out = dump.take_stdout()?;
    let mut rewriter = Rewriter::new(&source.database, None);
    let mut host = ToHost;
    let fed = (|| {
        loop {
            let chunk = out.read(CHUNK as u32)?;
            if chunk.is_empty() {
                break;
            }
            rewriter.feed(&chunk, &mut host)?;
        }
        rewriter.finish(&mut host)
    })();
    drop(out);
    if let Err(e) = fed {
        return Err(dump.abort_upstream(e));
    }
    dump.finish()?;
    let stats = &rewriter.stats;
    info(format!(
        "handed {} row(s) of {} table(s) to the host in {} batch(es)",
        stats.rows_in,
        stats.tables.len(),
        stats.batches
    ));
    Ok(())
}

/// Rows go to the host; the rest of the data-only dump (comments, session
/// settings, LOCK TABLES) is dropped: the structure parts carry their own.
struct ToHost;

impl Target for ToHost {
    fn transform(&mut self, table: &str, columns: &[String], _: &[Row]) -> Result<RowBatch, Error> {
        Err(Error::Other(format!(
            "internal error: rows of {table} ({} columns) sent without their kinds",
            columns.len()
        )))
    }

    fn transform_kinds(
        &mut self,
        table: &str,
        columns: &[String],
        kinds: &[u8],
        rows: &[Row],
    ) -> Result<RowBatch, Error> {
        let kinds: Vec<ValueKind> = kinds.iter().map(|&k| value_kind(k)).collect();
        let batch = envsync_plugin_sdk::rows::pack(columns.len(), rows);
        sanitising::write_rows(table, columns, &kinds, &batch)?;
        // Nothing comes back to write: the host wrote what the sanitiser kept.
        Ok(envsync_plugin_sdk::rows::pack(columns.len(), &[]))
    }

    fn write(&mut self, _bytes: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

fn value_kind(flags: u8) -> ValueKind {
    if flags & HEX != 0 {
        ValueKind::Binary
    } else if flags & NUM != 0 {
        ValueKind::Number
    } else {
        ValueKind::Text
    }
}

fn kind_flags(kind: ValueKind) -> u8 {
    match kind {
        ValueKind::Text => 0,
        ValueKind::Number => NUM,
        ValueKind::Binary => HEX,
    }
}

/// Artifact bytes for a piece of what the sanitiser kept.
pub fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
    match piece {
        // The structure part's trailer resets the character set; rows are
        // UTF-8 text (the dump ran with --default-character-set=utf8mb4).
        Piece::TableStart(_) => Ok(b"/*!40101 SET NAMES utf8mb4 */;\n".to_vec()),
        Piece::TableEnd(_) => Ok(Vec::new()),
        Piece::Rows(r) => {
            let t = &r.table;
            let width = t.columns.len();
            envsync_plugin_sdk::rows::check(&r.rows, width)
                .map_err(|e| e.context(format!("the sanitiser's answer for table {}", t.table)))?;
            if r.rows.rows == 0 {
                return Ok(Vec::new());
            }
            let columns: Vec<String> = t.columns.iter().map(|c| sql::ident(c)).collect();
            let kinds: Vec<u8> = t.kinds.iter().map(|&k| kind_flags(k)).collect();
            let mut out = format!(
                "INSERT INTO {} ({}) VALUES",
                sql::ident(&t.table),
                columns.join(",")
            )
            .into_bytes();
            out.reserve(r.rows.data.len() * 2 + r.rows.ends.len() * 4);
            let mut column = 0;
            let mut row = 0;
            for value in envsync_plugin_sdk::rows::values(&r.rows) {
                if column == 0 {
                    out.extend_from_slice(if row == 0 { b"\n(" } else { b",\n(" });
                } else {
                    out.push(b',');
                }
                rows::encode_value(value, kinds.get(column).copied().unwrap_or(0), &mut out);
                column += 1;
                if column == width {
                    out.push(b')');
                    column = 0;
                    row += 1;
                }
            }
            out.extend_from_slice(b";\n");
            Ok(out)
        }
        Piece::Documents(d) => Err(Error::Other(format!(
            "MySQL artifacts hold rows, not documents (index {})",
            d.index
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envsync_plugin_sdk::{TableColumns, TableRows};

    #[test]
    fn batches_become_one_extended_insert() {
        let rows: Vec<Row> = vec![
            vec![Some("1".into()), Some("it's".into()), Some("0xCAFE".into())],
            vec![Some("2".into()), None, Some("0x".into())],
        ];
        let piece = Piece::Rows(TableRows {
            table: TableColumns {
                table: "odd`name".into(),
                columns: vec!["id".into(), "note".into(), "blob".into()],
                kinds: vec![ValueKind::Number, ValueKind::Text, ValueKind::Binary],
            },
            rows: envsync_plugin_sdk::rows::pack(3, &rows),
        });
        let sql = String::from_utf8(encode(piece).unwrap()).unwrap();
        assert_eq!(
            sql,
            "INSERT INTO `odd``name` (`id`,`note`,`blob`) VALUES\n(1,'it\\'s',0xCAFE),\n(2,NULL,X'');\n"
        );
    }

    #[test]
    fn text_that_looks_like_hex_stays_text() {
        let piece = Piece::Rows(TableRows {
            table: TableColumns {
                table: "t".into(),
                columns: vec!["v".into()],
                kinds: vec![ValueKind::Text],
            },
            rows: envsync_plugin_sdk::rows::pack(1, &[vec![Some("0x41".into())]]),
        });
        let sql = String::from_utf8(encode(piece).unwrap()).unwrap();
        assert!(sql.contains("('0x41')"), "{sql}");
    }
}
