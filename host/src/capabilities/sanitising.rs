//! `envsync:plugin/sanitising`: the engine plugin's way to the step's
//! sanitiser. The host forwards each batch to the sanitiser's own sandbox
//! (`crate::sanitiser::session`), so the engine never sees the sanitiser and
//! the sanitiser never sees anything but rows.

use super::HostResult;
use super::sanitised_rows::RowsTarget;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::sanitising::{Host, SanitisePlan};
use crate::runtime::bindings::envsync::plugin::types::{RowBatch, ValueKind};
use crate::runtime::sandbox::StepState;

impl Host for StepState {
    async fn plan(&mut self) -> wasmtime::Result<Option<SanitisePlan>> {
        // In a chunked backup the workers hold the sanitiser instances.
        let chunked = matches!(self.sanitised_rows, Some(RowsTarget::Chunked(_)));
        Ok(match &self.sanitiser {
            Some(s) => Some(SanitisePlan {
                tables: s.plan_tables(),
            }),
            None if chunked => Some(SanitisePlan { tables: None }),
            None => None,
        })
    }

    async fn transform_rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        rows: RowBatch,
    ) -> HostResult<RowBatch> {
        let Some(session) = self.sanitiser.as_mut() else {
            return Ok(Err(WitError::Denied(
                "this step has no sanitiser: call sanitising.plan() first and sanitise only when it returns a plan"
                    .into(),
            )));
        };
        Ok(session
            .transform_rows(table, columns, rows)
            .await
            .map_err(WitError::Other))
    }

    async fn transform_documents(
        &mut self,
        index: String,
        documents: Vec<String>,
    ) -> HostResult<Vec<String>> {
        let Some(session) = self.sanitiser.as_mut() else {
            return Ok(Err(WitError::Denied(
                "this step has no sanitiser: call sanitising.plan() first".into(),
            )));
        };
        Ok(session
            .transform_documents(index, documents)
            .await
            .map_err(WitError::Other))
    }

    async fn write_rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        kinds: Vec<ValueKind>,
        rows: RowBatch,
    ) -> HostResult<u32> {
        Ok(
            match (self.sanitised_rows.as_mut(), self.sanitiser.as_mut()) {
                (Some(RowsTarget::One(writer)), Some(session)) => {
                    writer
                        .write_rows(session, table, columns, kinds, rows)
                        .await
                }
                (Some(RowsTarget::Chunked(rows_out)), _) => {
                    rows_out.write_rows(table, columns, kinds, rows).await
                }
                _ => Err(not_backup_rows()),
            },
        )
    }

    async fn write_documents(&mut self, index: String, documents: Vec<String>) -> HostResult<u32> {
        Ok(
            match (self.sanitised_rows.as_mut(), self.sanitiser.as_mut()) {
                (Some(RowsTarget::One(writer)), Some(session)) => {
                    writer.write_documents(session, index, documents).await
                }
                (Some(RowsTarget::Chunked(_)), _) => Err(WitError::Denied(
                    "write-documents: a chunked sanitised backup holds rows only; create no chunk \
                 in backup-structure to write documents"
                        .into(),
                )),
                _ => Err(not_backup_rows()),
            },
        )
    }
}

fn not_backup_rows() -> WitError {
    WitError::Denied(
        "write-rows and write-documents are only for backup-rows of a sanitised backup; \
         elsewhere use transform-rows / transform-documents"
            .into(),
    )
}
