//! `envsync-host run --config FILE --task NAME`: a configured task's steps in
//! order; prints one line per step (succeeded, failed, skipped) and exits
//! with the failed step's code.

use crate::jobs::chain::{self, NoObserver};
use crate::jobs::config::{self, CheckOptions};
use crate::logging::LogFormat;
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::store::StoreOptions;
use anyhow::Result;
use std::path::Path;

pub async fn execute(
    runtime: &Runtime,
    registry: &Registry,
    file: &Path,
    task: &str,
    store_options: &StoreOptions,
    format: LogFormat,
) -> Result<()> {
    let config = config::load(file, &CheckOptions::default())?;
    let task = chain::find_task(&config, task)?;
    if task.suspend {
        tracing::warn!(
            "task {} is suspended (suspend = true): the scheduler skips it; running it because it was asked for by name",
            task.name
        );
    }
    let report =
        chain::run_task(runtime, registry, &config, task, store_options, &NoObserver).await?;
    match format {
        LogFormat::Human => print!("{}", report.human()),
        LogFormat::Json => println!("{}", report.json()),
    }
    report.into_result()
}
