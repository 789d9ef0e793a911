//! Sanitised backups and copies: the dump passes through the plugin, and the
//! rows of the tables the step's sanitiser wants go through
//! `sanitising.transform-rows` before they reach the artifact or the target
//! (see `rows.rs` for the parsing and the value conventions).

use crate::rows::{Rewriter, Row, Stats, Target};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{ByteSink, ByteSource, CHUNK, Error, RowBatch, info, log};

/// Flags added after the operator's `dump-flags` when sanitising, so the
/// dump is in the form the rewriter reads: quoted names, extended INSERTs
/// with column lists, binary values as hex, UTF-8 text.
pub const DUMP_FLAGS: &[&str] = &[
    "--quote-names",
    "--extended-insert",
    "--complete-insert",
    "--hex-blob",
    "--default-character-set=utf8mb4",
];

/// The tables to sanitise when the step sanitises: `Some(None)` for every
/// table, `Some(Some(list))` for those, `None` when it does not sanitise.
pub fn plan() -> Option<Option<Vec<String>>> {
    sanitising::plan().map(|p| p.tables)
}

/// Host streams and the step's sanitiser.
struct Host<'a> {
    sink: &'a ByteSink,
}

impl Target for Host<'_> {
    fn transform(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Row],
    ) -> Result<RowBatch, Error> {
        envsync_plugin_sdk::rows::sanitise_rows(table, columns, rows)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.sink.write(bytes)
    }
}

/// Reads the dump of `database` from `dump` and writes it to `sink` with
/// the rows of `tables` (None: all) sanitised. Does not close `sink`.
pub fn rewrite(
    dump: &ByteSource,
    sink: &ByteSink,
    database: &str,
    tables: Option<Vec<String>>,
) -> Result<Stats, Error> {
    let mut rewriter = Rewriter::new(database, tables);
    let mut host = Host { sink };
    let mut read = 0u64;
    let mut reported = 0u64;
    loop {
        let chunk = dump.read(CHUNK as u32)?;
        if chunk.is_empty() {
            break;
        }
        read += chunk.len() as u64;
        rewriter.feed(&chunk, &mut host)?;
        if read - reported >= 64 << 20 {
            reported = read;
            log::progress("sanitising", read, None);
        }
    }
    rewriter.finish(&mut host)?;
    log::progress("sanitising", read, None);
    let stats = rewriter.stats.clone();
    info(format!(
        "sanitised {} rows of {} table(s) ({} kept) in {} batches; read {read} bytes of dump",
        stats.rows_in,
        stats.tables.len(),
        stats.rows_out,
        stats.batches
    ));
    Ok(stats)
}
