//! `envsync-host sanitise check --config FILE --task NAME`: reads the live
//! schema of the task's database through its engine plugin and lists every
//! column the sanitiser's rules do not cover (exit code 1 when there is one),
//! so a new column cannot slip into staging unmasked.

use crate::failure::{Failure, Kind};
use crate::jobs::chain;
use crate::jobs::config::{self, CheckOptions, StepOp};
use crate::jobs::task::step_request;
use crate::logging::LogFormat;
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::step;
use crate::store::StoreOptions;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SanitiseCommand {
    /// List the columns of the task's live database that its sanitiser rules do not cover (exit code 1 if any).
    Check {
        /// The config file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The task whose [task.sanitise] to check.
        #[arg(long, value_name = "NAME")]
        task: String,
    },
}

pub async fn execute(
    runtime: &Runtime,
    registry: &Registry,
    command: &SanitiseCommand,
    store_options: &StoreOptions,
    format: LogFormat,
) -> Result<()> {
    let SanitiseCommand::Check { config, task } = command;
    let config = config::load(config, &CheckOptions::default())?;
    let task = chain::find_task(&config, task)?;
    let Some(spec) = &task.sanitise else {
        return Err(Failure::new(
            Kind::Usage,
            format!("task {:?} has no [task.sanitise] table", task.name),
        )
        .into());
    };
    // The step whose source is read: the task's backup or copy.
    let index = task
        .steps
        .iter()
        .position(|s| matches!(s.op, StepOp::Backup | StepOp::Copy))
        .ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "task {:?} has no backup or copy step to sanitise",
                    task.name
                ),
            )
        })?;
    let request = step_request(&config, task, index, store_options)?;
    let plugin = registry.plugin(runtime, &task.plugin).await?;
    let sanitiser = registry.sanitiser(runtime, &spec.sanitiser).await?;
    let (schema, uncovered) =
        step::uncovered_columns(runtime, &plugin, &sanitiser, &request).await?;
    let columns: usize = schema.iter().map(|t| t.columns.len()).sum();
    match format {
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "task": task.name,
                "rules": spec.rules.display().to_string(),
                "tables": schema.len(),
                "columns": columns,
                "uncovered": uncovered,
            })
        ),
        LogFormat::Human => {
            for column in &uncovered {
                println!("uncovered: {column}");
            }
            println!(
                "{} of {columns} columns in {} tables not covered by {}",
                uncovered.len(),
                schema.len(),
                spec.rules.display()
            );
        }
    }
    if uncovered.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            Kind::StepFailed,
            format!(
                "{} column(s) are not covered by the rules in {}: add a rule for each (\"keep\" counts)",
                uncovered.len(),
                spec.rules.display()
            ),
        )
        .into())
    }
}
