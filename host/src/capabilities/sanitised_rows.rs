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
use std::collections::{BTreeMap, BTreeSet};

/// Room for an encoded piece beyond what its content accounts for.
const SLACK: usize = 1 << 20;

/// The artifact of a sanitised backup while `backup-rows` runs.
pub struct SanitisedRows {
    encoder: Sandbox,
    artifact: ByteSink,
    /// The tables and columns the engine listed before any row was read:
    /// the only names `encode` is given.
    schema: BTreeMap<String, BTreeSet<String>>,
    /// Each column's kind so far (see `value-kind`: it only moves forward).
    kinds: BTreeMap<(String, String), ValueKind>,
    /// The table whose run of batches is open (`table-start` sent).
    run: Option<TableColumns>,
    rows: u64,
    documents: u64,
    /// The first failure: the step fails with it even if the engine
    /// ignores the error it got.
    failure: Option<String>,
}

impl SanitisedRows {
    /// `encoder`: a sandbox of the engine with nothing granted; `schema`:
    /// what the engine's `schema` listed at the start of the step.
    pub fn new(encoder: Sandbox, artifact: ByteSink, schema: &[TableInfo]) -> Self {
        SanitisedRows {
            encoder,
            artifact,
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
            run: None,
            rows: 0,
            documents: 0,
            failure: None,
        }
    }

    /// Writes rows the sanitiser kept, opening (and closing the previous)
    /// run of `table` when the table or its columns change.
    pub async fn rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        kinds: Vec<ValueKind>,
        rows: RowBatch,
    ) -> Result<u32, WitError> {
        self.refuse_after_failure()?;
        let same_run = self
            .run
            .as_ref()
            .is_some_and(|r| r.table == table && r.columns == columns && r.kinds == kinds);
        if !same_run {
            self.end_run().await?;
            let start = TableColumns {
                table,
                columns,
                kinds,
            };
            let bound = names_size(&start) * 4 + SLACK;
            self.write_piece(Piece::TableStart(start.clone()), bound)
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
        self.write_piece(piece, bound).await?;
        self.rows += u64::from(count);
        Ok(count)
    }

    /// Refuses names `schema` did not list and kinds that move backwards,
    /// before the batch reaches the sanitiser: names and kinds are all that
    /// reach `encode` besides the sanitiser's answer.
    pub fn check_names(
        &mut self,
        table: &str,
        columns: &[String],
        kinds: &[ValueKind],
    ) -> Result<(), WitError> {
        let Some(known) = self.schema.get(table) else {
            // The name is the engine's: not repeated, it may be a row.
            return Err(self.refuse(
                "write-rows named a table the plugin's schema did not list at the start of the step"
                    .into(),
            ));
        };
        let mut seen = BTreeSet::new();
        if columns
            .iter()
            .any(|c| !known.contains(c) || !seen.insert(c))
        {
            return Err(self.refuse(format!(
                "write-rows named a column of table {table} that the plugin's schema did not list \
                 (or named one twice)"
            )));
        }
        if kinds.len() != columns.len() {
            return Err(self.refuse(format!(
                "write-rows gave {} kinds for {} columns of table {table}",
                kinds.len(),
                columns.len()
            )));
        }
        for (column, &kind) in columns.iter().zip(kinds) {
            let key = (table.to_string(), column.clone());
            let before = self.kinds.get(&key).copied().unwrap_or(ValueKind::Text);
            if rank(kind) < rank(before) {
                return Err(self.refuse(format!(
                    "write-rows changed the kind of column {column} of table {table} back from \
                     {before:?} to {kind:?}"
                )));
            }
            self.kinds.insert(key, kind);
        }
        Ok(())
    }

    /// The index must be one `schema` listed.
    pub fn check_index(&mut self, index: &str) -> Result<(), WitError> {
        if self.schema.contains_key(index) {
            return Ok(());
        }
        Err(self.refuse(
            "write-documents named an index the plugin's schema did not list at the start of the step"
                .into(),
        ))
    }

    /// Records a refusal as the step's failure.
    fn refuse(&mut self, why: String) -> WitError {
        WitError::Denied(self.record(why))
    }

    /// Writes documents the sanitiser kept.
    pub async fn documents(
        &mut self,
        index: String,
        documents: Vec<String>,
    ) -> Result<u32, WitError> {
        self.refuse_after_failure()?;
        self.end_run().await?;
        let count = documents.len() as u32;
        let text: usize = documents.iter().map(String::len).sum();
        let bound = text * 2 + documents.len() * 256 + index.len() * documents.len() + SLACK;
        let piece = Piece::Documents(IndexDocuments { index, documents });
        self.write_piece(piece, bound).await?;
        self.documents += u64::from(count);
        Ok(count)
    }

    /// Closes the open run and gives the artifact back, or the first
    /// failure.
    pub async fn finish(mut self) -> Result<ByteSink, (String, ByteSink)> {
        if self.failure.is_none()
            && let Err(e) = self.end_run().await
        {
            self.failure
                .get_or_insert_with(|| wit_message(&e).to_string());
        }
        match self.failure {
            Some(f) => Err((f, self.artifact)),
            None => {
                tracing::debug!(
                    "wrote {} row(s) and {} document(s) the sanitiser kept",
                    self.rows,
                    self.documents
                );
                Ok(self.artifact)
            }
        }
    }

    /// The artifact, when the step failed before `finish`.
    pub fn into_artifact(self) -> ByteSink {
        self.artifact
    }

    fn refuse_after_failure(&self) -> Result<(), WitError> {
        match &self.failure {
            Some(f) => Err(WitError::Other(format!(
                "the sanitised artifact failed earlier: {f}"
            ))),
            None => Ok(()),
        }
    }

    async fn end_run(&mut self) -> Result<(), WitError> {
        if let Some(run) = self.run.take() {
            let bound = names_size(&run) * 4 + SLACK;
            self.write_piece(Piece::TableEnd(run), bound).await?;
        }
        Ok(())
    }

    async fn write_piece(&mut self, piece: Piece, bound: usize) -> Result<(), WitError> {
        let what = match &piece {
            Piece::TableStart(t) | Piece::TableEnd(t) => format!("table {}", t.table),
            Piece::Rows(r) => format!("rows of table {}", r.table.table),
            Piece::Documents(d) => format!("documents of index {}", d.index),
        };
        let encoded = match self.encoder.encode(&piece, bound).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                return Err(self.fail(format!("encode of {what} failed: {}", wit_message(&e))));
            }
            Err(e) => {
                return Err(self.fail(format!(
                    "encode of {what} failed (its answer may hold {}): {e:#}",
                    crate::step::human_size(bound as u64)
                )));
            }
        };
        if let Err(e) = self.artifact.write(encoded).await {
            return Err(self.fail(wit_message(&e).to_string()));
        }
        Ok(())
    }

    /// Records a failure of the artifact as the step's failure.
    fn fail(&mut self, why: String) -> WitError {
        WitError::Other(self.record(why))
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
