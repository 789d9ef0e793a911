//! `envsync-host run --config FILE --task NAME`: a configured task's steps in
//! order; prints one line per step (succeeded, failed, skipped) and exits
//! with the failed step's code.

use crate::failure::{Failure, Kind};
use crate::jobs::chain;
use crate::jobs::config::{self, CheckOptions, Config, StepOp, Task};
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
    allow_production_restore: bool,
) -> Result<()> {
    let config = config::load(file, &CheckOptions::default())?;
    let task = chain::find_task(&config, task)?;
    guard_production(&config, task, allow_production_restore)?;
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

/// Refuses a task that restores into a production environment unless the
/// operator passed the override.
pub fn guard_production(config: &Config, task: &Task, allowed: bool) -> Result<()> {
    if let Some(i) = task.steps.iter().position(|s| s.op == StepOp::Restore)
        && config.environment.is_production()
        && !allowed
    {
        return Err(production_refusal(
            &config.environment.name,
            &format!("task {:?} step {} restores into it", task.name, i + 1),
        ));
    }
    Ok(())
}

/// The production guard's refusal (exit 2): a restore overwrites the
/// environment's databases, so production needs an explicit override.
pub fn production_refusal(environment: &str, what: &str) -> anyhow::Error {
    Failure::new(
        Kind::Usage,
        format!(
            "refusing to restore into production: environment {environment:?} is production and {what}; \
             pass --allow-production-restore if this is really meant"
        ),
    )
    .into()
}
