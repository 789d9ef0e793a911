//! Sanitised backups (contract 0.2): the host writes the artifact, a plain
//! SQL script `psql` (and `load_plain`) restores.
//!
//! - `structure`: `pg_dump --schema-only --section=pre-data|post-data`,
//!   written as it comes (the host runs pg_dump here only in its
//!   schema-only form, so no row can be in it).
//! - `rows`: `pg_dump --data-only` parsed; every COPY block's rows go to
//!   the host in batches (`sanitising::write_rows`). Sequence positions
//!   (`setval`) are data too and are left behind: the after-rows part ends
//!   with [`RESET_SEQUENCES`], which moves every sequence owned by a column
//!   past the largest value restored into it. Anything else in the data
//!   section fails the backup rather than being lost.
//! - `encode`: COPY headers and COPY lines for the rows the sanitiser kept,
//!   written by the host between the two structure parts.
//!
//! With `--jobs` the backup is chunked (docs/decisions/0021): the schema
//! goes into chunks `pre-data` and `post-data`, the sequence reset into
//! `sequences`, the host writes the rows as chunks `rows-NNNNN` (sanitised
//! by several sanitiser instances at once), and the artifact is a plan
//! naming them (`plan.rs`, kind `sanitised`) for a parallel restore.

use crate::copydata;
use crate::plan::{DataChunk, Plan};
use crate::{sanitised, sql};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::row_chunks;
use envsync_plugin_sdk::{
    ByteSink, CHUNK, Error, Piece, RowBatch, StructurePart, ValueKind, chunks, connection, info,
    job, read_all, write_all,
};

/// Runs at the end of a restore: every sequence owned by a column (serial
/// and identity columns) continues after the largest value in that column,
/// so inserts in the restored copy do not collide with restored rows. Other
/// sequences keep their start value.
const RESET_SEQUENCES: &str = r#"
-- envsync: sequence positions are data, so a sanitised backup carries none;
-- move each column-owned sequence past the largest value restored.
DO $envsync$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT s.seqrelid::regclass AS seq, d.refobjid::regclass AS tbl, a.attname AS col,
               s.seqmin AS lo, s.seqmax AS hi
        FROM pg_catalog.pg_sequence s
        JOIN pg_catalog.pg_depend d
          ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.seqrelid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_catalog.pg_attribute a
          ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.seqincrement > 0
    LOOP
        EXECUTE format(
            'SELECT pg_catalog.setval(%L, LEAST(GREATEST(COALESCE((SELECT max(%I) FROM %s)::numeric + 1, %s), %s), %s)::bigint, false)',
            r.seq, r.col, r.tbl, r.lo, r.lo, r.hi);
    END LOOP;
END
$envsync$;
"#;

/// The schema before or after the rows.
pub fn structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    if job::parallelism().chosen {
        return chunked_structure(part, artifact);
    }
    let source = connection("source")?;
    let section = match part {
        StructurePart::BeforeRows => "pre-data",
        StructurePart::AfterRows => "post-data",
    };
    let section = format!("--section={section}");
    let dump = sanitised::plain_dump(
        &source,
        &["--schema-only", &section],
        "the schema (no rows)",
    )?;
    dump.drain_into(artifact)?;
    if part == StructurePart::AfterRows {
        artifact.write(RESET_SEQUENCES.as_bytes())?;
    }
    Ok(())
}

/// The chunks named in a sanitised plan besides the host's row chunks.
const PRE_DATA: &str = "pre-data";
const POST_DATA: &str = "post-data";
const SEQUENCES: &str = "sequences";
/// Largest post-data section read into memory.
const TEXT_LIMIT: usize = 256 << 20;

/// The structure of a chunked sanitised backup: before the rows, the
/// schema as chunk `pre-data` (creating it tells the host to write the
/// rows as chunks); after them, chunks `post-data` and `sequences` and the
/// plan naming every chunk, as the artifact.
fn chunked_structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    let source = connection("source")?;
    let section = match part {
        StructurePart::BeforeRows => "--section=pre-data",
        StructurePart::AfterRows => "--section=post-data",
    };
    let mut dump =
        sanitised::plain_dump(&source, &["--schema-only", section], "the schema (no rows)")?;
    let stdout = dump.take_stdout()?;
    let text = read_all(&stdout, TEXT_LIMIT);
    drop(stdout);
    let text = match text {
        Ok(text) => text,
        Err(e) => return Err(dump.abort_upstream(e)),
    };
    dump.finish()?;
    // Restores run psql restricted with a key of the host's, where
    // pg_dump's own `\restrict` would be refused.
    let text = without_restrict_lines(&text);
    if part == StructurePart::BeforeRows {
        let sink = chunks::create(PRE_DATA)?;
        write_all(&sink, &text)?;
        return sink.close();
    }
    let post_data = text;
    let encoding = client_encoding(&post_data).ok_or_else(|| {
        Error::Other(
            "pg_dump's schema output sets no client_encoding; cannot tell the rows' encoding"
                .into(),
        )
    })?;
    for (name, text) in [
        (POST_DATA, post_data.as_slice()),
        (SEQUENCES, RESET_SEQUENCES.as_bytes()),
    ] {
        let sink = chunks::create(name)?;
        write_all(&sink, text)?;
        sink.close()?;
    }
    // Each of the host's row chunks holds one table's rows; naming it in
    // the plan lets a restore build that table's indexes while the rest
    // loads.
    let data: Vec<DataChunk> = row_chunks::host_row_chunks()?
        .into_iter()
        .map(|(chunk, described)| DataChunk {
            chunk,
            table: described.map(|d| d.table).unwrap_or_default(),
            columns: String::new(),
        })
        .collect();
    info(format!("the rows are in {} chunk(s)", data.len()));
    let plan = Plan {
        id: format!("sanitised {}", unique_id()),
        encoding,
        pre_data: PRE_DATA.into(),
        data,
        sequences: SEQUENCES.into(),
        post_data: POST_DATA.into(),
        sanitised: true,
    };
    write_all(artifact, plan.render().as_bytes())
}

/// The encoding pg_dump's `SET client_encoding = '…';` names: the one it
/// wrote the rows in too.
fn client_encoding(dump: &[u8]) -> Option<String> {
    dump.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let value = line
            .strip_prefix("SET client_encoding = '")?
            .strip_suffix("';")?;
        Some(value.to_string())
    })
}

/// `text` without pg_dump's `\restrict KEY` / `\unrestrict KEY` lines.
fn without_restrict_lines(text: &[u8]) -> Vec<u8> {
    text.split_inclusive(|&b| b == b'\n')
        .filter(|line| !sanitised::is_restrict_line(line))
        .flatten()
        .copied()
        .collect()
}

/// Unique enough to tell two backups apart in a resumed restore.
fn unique_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// The rows, through the host's `write-rows`.
pub fn rows() -> Result<(), Error> {
    let source = connection("source")?;
    let mut dump = sanitised::plain_dump(&source, &["--data-only"], "the rows for the sanitiser")?;
    let out = dump.take_stdout()?;
    let mut other = OtherStatements::default();
    let result = copydata::rewrite_filtered(
        || out.read(CHUNK as u32),
        // The host writes the artifact; nothing of the dump goes anywhere
        // but `write_rows`.
        |_| Ok(()),
        None,
        |table, columns, rows| {
            check_table_name(table)?;
            let kinds = vec![ValueKind::Text; columns.len()];
            sanitising::write_rows(table, columns, &kinds, &rows)?;
            Ok(RowBatch {
                rows: 0,
                data: Vec::new(),
                ends: Vec::new(),
                nulls: Vec::new(),
            })
        },
        |line| {
            other.read(line);
            false
        },
    )
    .and_then(|stats| {
        other.finish()?;
        Ok(stats)
    });
    drop(out);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => return Err(dump.abort_upstream(e)),
    };
    dump.finish()?;
    info(format!(
        "handed {} row(s) of {} table(s) to the host in {} batch(es)",
        stats.rows_in, stats.tables_sanitised, stats.batches
    ));
    Ok(())
}

/// Artifact bytes for a piece of what the sanitiser kept.
pub fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
    match piece {
        Piece::TableStart(t) => {
            let (schema, table) = split_table(&t.table)?;
            let columns: Vec<String> = t.columns.iter().map(|c| sql::ident(c)).collect();
            let name = match schema {
                Some(schema) => format!("{}.{}", sql::ident(schema), sql::ident(table)),
                None => sql::ident(table),
            };
            Ok(format!("COPY {name} ({}) FROM stdin;\n", columns.join(", ")).into_bytes())
        }
        Piece::Rows(r) => {
            let mut out = Vec::with_capacity(r.rows.data.len() + r.rows.ends.len());
            copydata::encode_rows(&r.table.table, &r.rows, r.table.columns.len(), &mut out)?;
            Ok(out)
        }
        Piece::TableEnd(_) => Ok(b"\\.\n".to_vec()),
        Piece::Documents(d) => Err(Error::Other(format!(
            "PostgreSQL artifacts hold rows, not documents (index {})",
            d.index
        ))),
    }
}

/// `schema.table` as the COPY header named it, split at the first dot
/// (`check_table_name` keeps names with dots out).
fn split_table(table: &str) -> Result<(Option<&str>, &str), Error> {
    match table.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => Ok((Some(schema), name)),
        Some(_) => Err(Error::Other(format!(
            "cannot read the table name {table:?}"
        ))),
        None => Ok((None, table)),
    }
}

/// `schema.table` reaches `encode` unquoted, so a dot inside a name would
/// be split in the wrong place there.
fn check_table_name(table: &str) -> Result<(), Error> {
    if table.matches('.').count() > 1 {
        return Err(Error::Other(format!(
            "table {table}: a schema or table name with a dot in it cannot be written into a \
             sanitised backup; rename it, or leave it out with --exclude-table in dump-flags"
        )));
    }
    Ok(())
}

/// What a data-only dump holds besides COPY blocks: session settings and
/// comments (dropped: the structure part sets them), sequence positions
/// (dropped: [`RESET_SEQUENCES`] stands in), and anything else, which is
/// refused (a sanitised artifact must not lose it silently, and only the
/// host may write into it).
#[derive(Default)]
struct OtherStatements {
    unexpected: Option<String>,
}

impl OtherStatements {
    fn read(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let harmless = text.is_empty()
            || text.starts_with("--")
            || text.starts_with("SET ")
            || text.starts_with("SELECT pg_catalog.set_config(")
            || text.starts_with("SELECT pg_catalog.setval(")
            || text.starts_with("\\restrict ")
            || text.starts_with("\\unrestrict ");
        if !harmless {
            self.unexpected
                .get_or_insert_with(|| text.chars().take(120).collect());
        }
    }

    fn finish(self) -> Result<(), Error> {
        match self.unexpected {
            Some(line) => Err(Error::Other(format!(
                "the data-only dump holds a statement a sanitised backup cannot carry: {line:?}"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_chunks_lose_pg_dumps_restrict_lines_only() {
        let dump = b"--\n\\restrict abc1\nCREATE TABLE t (a int);\n\\unrestrict abc1\n\\restrict\n";
        assert_eq!(
            without_restrict_lines(dump),
            b"--\nCREATE TABLE t (a int);\n\\restrict\n".to_vec()
        );
    }

    #[test]
    fn the_rows_encoding_is_read_from_pg_dumps_settings() {
        let dump = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'LATIN1';\n";
        assert_eq!(client_encoding(dump).as_deref(), Some("LATIN1"));
        assert_eq!(client_encoding(b"SET x = 1;\n"), None);
    }

    #[test]
    fn other_data_statements_are_refused() {
        let mut s = OtherStatements::default();
        for line in [
            "--\n",
            "SET statement_timeout = 0;\n",
            "SELECT pg_catalog.set_config('search_path', '', false);\n",
            "\\restrict abc\n",
            "SELECT pg_catalog.setval('public.users_id_seq', 42, true);\n",
            "\n",
        ] {
            s.read(line.as_bytes());
        }
        assert!(s.unexpected.is_none());
        s.read(b"SELECT pg_catalog.lo_create('16400');\n");
        assert!(s.finish().is_err());
    }

    #[test]
    fn table_names_are_quoted() {
        let piece = Piece::TableStart(envsync_plugin_sdk::TableColumns {
            table: "public.Odd \"name\"".into(),
            columns: vec!["id".into(), "E-mail".into()],
            kinds: vec![ValueKind::Text; 2],
        });
        let out = String::from_utf8(encode(piece).unwrap()).unwrap();
        assert_eq!(
            out,
            "COPY \"public\".\"Odd \"\"name\"\"\" (\"id\", \"E-mail\") FROM stdin;\n"
        );
    }
}
