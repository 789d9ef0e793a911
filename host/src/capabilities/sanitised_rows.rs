//! The rows of a sanitised backup, written by the host (contract 0.2).
//!
//! The engine's `backup-rows` call never holds the artifact. It hands each
//! batch to `sanitising.write-rows` (or `write-documents`); the batch goes
//! through the step's sanitiser (`SanitiserSession`), and what the sanitiser
//! keeps is turned into artifact bytes by the engine's own `encode`, called
//! in a second sandbox that has no capabilities at all, so its bytes depend
//! only on the rows the sanitiser returned. The structure around the rows
//! comes from `backup-structure` calls that read no rows (`step.rs`). So
//! every row in a sanitised backup went through the sanitiser, whatever the
//! engine does.

use super::streams::ByteSink;
use crate::failure::wit_message;
use crate::runtime::Sandbox;
use crate::runtime::bindings::envsync::plugin::types::{RowBatch, ValueKind};
use crate::runtime::bindings::{
    IndexDocuments, Piece, TableColumns, TableInfo, TableRows, WitError,
};
use crate::sanitiser::SanitiserSession;
use std::collections::{BTreeMap, BTreeSet};

/// Room for an encoded piece beyond what its content accounts for.
const SLACK: usize = 1 << 20;

/// Where `write-rows` and `write-documents` go in `backup-rows`.
pub enum RowsTarget {
    /// The artifact, batch by batch before each call returns.
    One(Box<SanitisedRows>),
    /// Row chunks, sanitised by N workers at once.
    Chunked(Box<super::parallel_rows::ParallelRows>),
}

/// The names a sanitised backup's engine may write, and the kinds its
/// columns have had: checked before a batch reaches the sanitiser, because
/// names and kinds are all that reach `encode` besides the sanitiser's
/// answer.
pub struct NameCheck {
    /// The tables and columns the engine listed before any row was read.
    schema: BTreeMap<String, BTreeSet<String>>,
    /// Each column's kind so far (see `value-kind`: it only moves forward).
    kinds: BTreeMap<(String, String), ValueKind>,
}

impl NameCheck {
    /// `schema`: what the engine's `schema` listed at the start of the step.
    pub fn new(schema: &[TableInfo]) -> Self {
        NameCheck {
            schema: schema
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.columns.iter().map(|c| c.name.clone()).collect(),
                    )
                })
                .collect(),
            kinds: BTreeMap::new(),
        }
    }

    /// Refuses names `schema` did not list and kinds that move backwards.
    pub fn rows(
        &mut self,
        table: &str,
        columns: &[String],
        kinds: &[ValueKind],
    ) -> Result<(), String> {
        let Some(known) = self.schema.get(table) else {
            // The name is the engine's: not repeated, it may be a row.
            return Err(
                "write-rows named a table the plugin's schema did not list at the start of the step"
                    .into(),
            );
        };
        let mut seen = BTreeSet::new();
        if columns
            .iter()
            .any(|c| !known.contains(c) || !seen.insert(c))
        {
            return Err(format!(
                "write-rows named a column of table {table} that the plugin's schema did not list \
                 (or named one twice)"
            ));
        }
        if kinds.len() != columns.len() {
            return Err(format!(
                "write-rows gave {} kinds for {} columns of table {table}",
                kinds.len(),
                columns.len()
            ));
        }
        for (column, &kind) in columns.iter().zip(kinds) {
            let key = (table.to_string(), column.clone());
            let before = self.kinds.get(&key).copied().unwrap_or(ValueKind::Text);
            if rank(kind) < rank(before) {
                return Err(format!(
                    "write-rows changed the kind of column {column} of table {table} back from \
                     {before:?} to {kind:?}"
                ));
            }
            self.kinds.insert(key, kind);
        }
        Ok(())
    }

    /// The index must be one `schema` listed.
    pub fn index(&self, index: &str) -> Result<(), String> {
        if self.schema.contains_key(index) {
            return Ok(());
        }
        Err(
            "write-documents named an index the plugin's schema did not list at the start of the step"
                .into(),
        )
    }
}

/// Turns what the sanitiser kept into bytes of one sink, through the
/// engine's `encode` in a sandbox with nothing granted, opening and closing
/// runs (`table-start` … `table-end`) as the table or its columns change.
pub struct PieceWriter {
    encoder: Sandbox,
    /// The table whose run of batches is open (`table-start` sent).
    run: Option<TableColumns>,
    pub rows: u64,
    pub documents: u64,
    /// Encoded bytes written.
    pub bytes: u64,
}

impl PieceWriter {
    /// `encoder`: a sandbox of the engine with nothing granted.
    pub fn new(encoder: Sandbox) -> Self {
        PieceWriter {
            encoder,
            run: None,
            rows: 0,
            documents: 0,
            bytes: 0,
        }
    }

    /// The table of the open run.
    pub fn open_table(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.table.as_str())
    }

    /// Writes rows the sanitiser kept into `sink`, opening (and closing the
    /// previous) run of `table` when the table or its columns change.
    pub async fn rows(
        &mut self,
        sink: &mut ByteSink,
        table: String,
        columns: Vec<String>,
        kinds: Vec<ValueKind>,
        rows: RowBatch,
    ) -> Result<u32, String> {
        let same_run = self
            .run
            .as_ref()
            .is_some_and(|r| r.table == table && r.columns == columns && r.kinds == kinds);
        if !same_run {
            self.end_run(sink).await?;
            let start = TableColumns {
                table,
                columns,
                kinds,
            };
            let bound = names_size(&start) * 4 + SLACK;
            self.write_piece(sink, Piece::TableStart(start.clone()), bound)
                .await?;
            self.run = Some(start);
        }
        let run = self.run.as_ref().expect("opened above");
        let count = rows.rows;
        // Encoding may escape every byte and add a separator per value.
        let bound = rows.data.len() * 4 + rows.ends.len() * 16 + names_size(run) + SLACK;
        let piece = Piece::Rows(TableRows {
            table: run.clone(),
            rows,
        });
        self.write_piece(sink, piece, bound).await?;
        self.rows += u64::from(count);
        Ok(count)
    }

    /// Writes documents the sanitiser kept into `sink`.
    pub async fn documents(
        &mut self,
        sink: &mut ByteSink,
        index: String,
        documents: Vec<String>,
    ) -> Result<u32, String> {
        self.end_run(sink).await?;
        let count = documents.len() as u32;
        let text: usize = documents.iter().map(String::len).sum();
        let bound = text * 2 + documents.len() * 256 + index.len() * documents.len() + SLACK;
        let piece = Piece::Documents(IndexDocuments { index, documents });
        self.write_piece(sink, piece, bound).await?;
        self.documents += u64::from(count);
        Ok(count)
    }

    /// Closes the open run, if any (`table-end`).
    pub async fn end_run(&mut self, sink: &mut ByteSink) -> Result<(), String> {
        if let Some(run) = self.run.take() {
            let bound = names_size(&run) * 4 + SLACK;
            self.write_piece(sink, Piece::TableEnd(run), bound).await?;
        }
        Ok(())
    }

    async fn write_piece(
        &mut self,
        sink: &mut ByteSink,
        piece: Piece,
        bound: usize,
    ) -> Result<(), String> {
        let what = match &piece {
            Piece::TableStart(t) | Piece::TableEnd(t) => format!("table {}", t.table),
            Piece::Rows(r) => format!("rows of table {}", r.table.table),
            Piece::Documents(d) => format!("documents of index {}", d.index),
        };
        let encoded = match self.encoder.encode(&piece, bound).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(format!("encode of {what} failed: {}", wit_message(&e))),
            Err(e) => {
                return Err(format!(
                    "encode of {what} failed (its answer may hold {}): {e:#}",
                    crate::step::human_size(bound as u64)
                ));
            }
        };
        self.bytes += encoded.len() as u64;
        sink.write(encoded)
            .await
            .map_err(|e| wit_message(&e).to_string())
    }
}

/// The artifact of a sanitised backup in one stream while `backup-rows`
/// runs: every batch is checked, sanitised and encoded before `write-rows`
/// returns.
pub struct SanitisedRows {
    check: NameCheck,
    writer: PieceWriter,
    artifact: ByteSink,
    /// The first failure: the step fails with it even if the engine
    /// ignores the error it got.
    failure: Option<String>,
}

impl SanitisedRows {
    /// `encoder`: a sandbox of the engine with nothing granted; `schema`:
    /// what the engine's `schema` listed at the start of the step.
    pub fn new(encoder: Sandbox, artifact: ByteSink, schema: &[TableInfo]) -> Self {
        SanitisedRows {
            check: NameCheck::new(schema),
            writer: PieceWriter::new(encoder),
            artifact,
            failure: None,
        }
    }

    /// `write-rows`: checked, sent through `session`, written.
    pub async fn write_rows(
        &mut self,
        session: &mut SanitiserSession,
        table: String,
        columns: Vec<String>,
        kinds: Vec<ValueKind>,
        rows: RowBatch,
    ) -> Result<u32, WitError> {
        self.refuse_after_failure()?;
        if let Err(why) = self.check.rows(&table, &columns, &kinds) {
            return Err(WitError::Denied(self.record(why)));
        }
        let kept = session
            .transform_rows(table.clone(), columns.clone(), rows)
            .await
            .map_err(WitError::Other)?;
        let written = self
            .writer
            .rows(&mut self.artifact, table, columns, kinds, kept)
            .await;
        written.map_err(|why| WitError::Other(self.record(why)))
    }

    /// `write-documents`: checked, sent through `session`, written.
    pub async fn write_documents(
        &mut self,
        session: &mut SanitiserSession,
        index: String,
        documents: Vec<String>,
    ) -> Result<u32, WitError> {
        self.refuse_after_failure()?;
        if let Err(why) = self.check.index(&index) {
            return Err(WitError::Denied(self.record(why)));
        }
        let kept = session
            .transform_documents(index.clone(), documents)
            .await
            .map_err(WitError::Other)?;
        let written = self.writer.documents(&mut self.artifact, index, kept).await;
        written.map_err(|why| WitError::Other(self.record(why)))
    }

    /// Closes the open run and gives the artifact back, or the first
    /// failure.
    pub async fn finish(mut self) -> Result<ByteSink, (String, ByteSink)> {
        if self.failure.is_none()
            && let Err(e) = self.writer.end_run(&mut self.artifact).await
        {
            self.failure.get_or_insert(e);
        }
        match self.failure {
            Some(f) => Err((f, self.artifact)),
            None => {
                tracing::debug!(
                    "wrote {} row(s) and {} document(s) the sanitiser kept",
                    self.writer.rows,
                    self.writer.documents
                );
                Ok(self.artifact)
            }
        }
    }

    fn refuse_after_failure(&self) -> Result<(), WitError> {
        match &self.failure {
            Some(f) => Err(WitError::Other(format!(
                "the sanitised artifact failed earlier: {f}"
            ))),
            None => Ok(()),
        }
    }

    /// Logs `why` and keeps the first one: the step fails with it even if
    /// the engine ignores the error it got.
    fn record(&mut self, why: String) -> String {
        tracing::error!("{why}");
        self.failure.get_or_insert_with(|| why.clone());
        why
    }
}

/// `text` < `number` < `binary`: the order a column's kind may move in.
fn rank(kind: ValueKind) -> u8 {
    match kind {
        ValueKind::Text => 0,
        ValueKind::Number => 1,
        ValueKind::Binary => 2,
    }
}

fn names_size(t: &TableColumns) -> usize {
    t.table.len() + t.columns.iter().map(|c| c.len() + 4).sum::<usize>()
}
