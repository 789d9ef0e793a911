//! `envsync:plugin/sanitising`: the engine plugin's way to the step's
//! sanitiser. The host forwards each batch to the sanitiser's own sandbox
//! (`crate::sanitiser::session`), so the engine never sees the sanitiser and
//! the sanitiser never sees anything but rows.

use super::HostResult;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::sanitising::{Host, SanitisePlan};
use crate::runtime::bindings::envsync::plugin::types::{RowBatch, ValueKind};
use crate::runtime::sandbox::StepState;

impl Host for StepState {
    async fn plan(&mut self) -> wasmtime::Result<Option<SanitisePlan>> {
        Ok(self.sanitiser.as_ref().map(|s| SanitisePlan {
            tables: s.plan_tables(),
        }))
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
        let (Some(writer), Some(session)) = (self.sanitised_rows.as_mut(), self.sanitiser.as_mut())
        else {
            return Ok(Err(not_backup_rows()));
        };
        if let Err(e) = writer.check_names(&table, &columns, &kinds) {
            return Ok(Err(e));
        }
        let kept = match session
            .transform_rows(table.clone(), columns.clone(), rows)
            .await
        {
            Ok(kept) => kept,
            Err(e) => return Ok(Err(WitError::Other(e))),
        };
        Ok(writer.rows(table, columns, kinds, kept).await)
    }

    async fn write_documents(&mut self, index: String, documents: Vec<String>) -> HostResult<u32> {
        let (Some(writer), Some(session)) = (self.sanitised_rows.as_mut(), self.sanitiser.as_mut())
        else {
            return Ok(Err(not_backup_rows()));
        };
        if let Err(e) = writer.check_index(&index) {
            return Ok(Err(e));
        }
        let kept = match session.transform_documents(index.clone(), documents).await {
            Ok(kept) => kept,
            Err(e) => return Ok(Err(WitError::Other(e))),
        };
        Ok(writer.documents(index, kept).await)
    }
}

fn not_backup_rows() -> WitError {
    WitError::Denied(
        "write-rows and write-documents are only for backup-rows of a sanitised backup; \
         elsewhere use transform-rows / transform-documents"
            .into(),
    )
}
