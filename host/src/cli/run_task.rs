//! `envsync-host run --config FILE --task NAME`: a configured task's steps in
//! order; prints one line per step (succeeded, failed, skipped) and exits
//! with the failed step's code.

use crate::jobs::chain;
use crate::jobs::config::{self, CheckOptions};
use crate::jobs::guard;
use crate::jobs::report::Reporter;
use crate::jobs::runner;
use crate::logging::LogFormat;
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::signals;
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
    allow_production_write: bool,
) -> Result<()> {
    let config = config::load(file, &CheckOptions::default())?;
    let task = chain::find_task(&config, task)?;
    guard::check_task(&config.environment, task, allow_production_write)?;
    if task.suspend {
        tracing::warn!(
            "task {} is suspended (suspend = true): the scheduler skips it; running it because it was asked for by name",
            task.name
        );
    }
    let reporter = Reporter::for_config(&config);
    let stop = signals::stop_on_signals();
    let report = runner::run_locked(
        runtime,
        registry,
        &config,
        task,
        store_options,
        &reporter,
        &stop,
    )
    .await?;
    match format {
        LogFormat::Human => print!("{}", report.human()),
        LogFormat::Json => println!("{}", report.json()),
    }
    report.into_result()
}
