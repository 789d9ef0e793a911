//! Describing one step of a configured task as [`StepInputs`] for the step
//! request builder ([`super::request`]): which database in which role,
//! which stores may be read and which written, limits, codec, sanitising.

use super::config::{Config, FromStore, StepOp, Task};
use super::request::{self, Origin, StepInputs};
use crate::failure::{Failure, Kind};
use crate::step::StepRequest;
use crate::store::StoreOptions;
use anyhow::Result;

/// Step `index` (0-based) of `task` as the builder's inputs.
/// `store_options` are the command line's; the config's `[environment.s3]`
/// applies on top.
pub fn step_inputs(
    config: &Config,
    task: &Task,
    index: usize,
    store_options: &StoreOptions,
) -> Result<StepInputs> {
    let env = &config.environment;
    let step = &task.steps[index];
    let what = format!(
        "task \"{}\" step {} ({})",
        task.name,
        index + 1,
        step.op.name()
    );
    // Restores read the upper store unless told to read their own; backups
    // write only to the own store. The upper store is always read-only.
    let from_store = match (step.op, step.from) {
        (StepOp::Restore, FromStore::Upper) => Some(env.upper_store.clone().ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "{what}: restores from the upper store, but the environment sets no upper_store"
                ),
            )
        })?),
        _ => None,
    };
    let mut inputs = StepInputs::new(step.op, Origin::Config, what, task.database.clone());
    inputs.environment = env.name.clone();
    // Later entries win (`job.param` looks from the end).
    inputs.params = task.params.clone();
    inputs.params.extend(step.params.iter().cloned());
    if step.op == StepOp::Copy {
        inputs.source = task.source.clone();
    }
    inputs.store = env.store.clone();
    inputs.from_store = from_store;
    inputs.read_only_stores = env.upper_store.iter().cloned().collect();
    inputs.store_options = env.s3.apply(store_options);
    inputs.compression = step.compression;
    inputs.encrypt_to = step.encrypt_to.clone();
    inputs.encrypt_to_files = step.encrypt_to_files.clone();
    inputs.instance = step.instance.clone();
    inputs.identities = step.identities.clone();
    inputs.from_instance = step.from_instance.clone();
    inputs.from_database = step.from_database.clone();
    inputs.artifact = step.artifact.clone();
    inputs.script = step.script.clone();
    inputs.max_runtime = Some(step.max_runtime);
    inputs.memory_cap_mib = task.memory_cap_mib;
    inputs.jobs = task.jobs;
    inputs.allow_programs = task.allow_programs.clone();
    inputs.state_dir = super::history::state_dir(env.state_dir.as_deref());
    // `[task.sanitise]` is the task's: it applies to its backups and copies.
    if matches!(step.op, StepOp::Backup | StepOp::Copy) {
        inputs.sanitise = task.sanitise.clone();
    }
    Ok(inputs)
}

/// The request for step `index` (0-based) of `task`.
pub fn step_request(
    config: &Config,
    task: &Task,
    index: usize,
    store_options: &StoreOptions,
) -> Result<StepRequest> {
    request::build(step_inputs(config, task, index, store_options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::config::{CheckOptions, parse};
    use crate::runtime::bindings::Operation;
    use std::path::Path;

    const TEXT: &str = r#"
[environment]
name = "staging"
store = "s3://staging-backups/db"
upper_store = "s3://prod-backups/db"
[environment.s3]
region = "eu-west-2"

[[task]]
name = "shop"
plugin = "postgres"
params = { owner = "app", swap-retries = "3" }
database = { host = "db1.staging", name = "shop", password_env = "ENVSYNC_TEST_TASK_PASSWORD" }
source = { host = "db1.prod", name = "shop" }
memory_cap_mib = 128
[[task.step]]
op = "restore"
from_instance = "db1.prod"
params = { swap-retries = "9" }
[[task.step]]
op = "restore"
from = "own"
[[task.step]]
op = "backup"
[[task.step]]
op = "copy"
max_runtime = "10m"
"#;

    fn config() -> Config {
        parse(
            TEXT,
            "t.toml",
            Path::new("/etc/t.toml"),
            Path::new("/etc"),
            &CheckOptions::default(),
        )
        .unwrap_or_else(|d| panic!("{d:#?}"))
    }

    #[test]
    fn steps_become_requests_with_the_right_stores_and_roles() {
        // SAFETY: the only test that touches this variable.
        unsafe { std::env::set_var("ENVSYNC_TEST_TASK_PASSWORD", "s3cret") };
        let config = config();
        let task = &config.tasks[0];
        let options = StoreOptions::default();

        let restore = step_request(&config, task, 0, &options).unwrap();
        assert_eq!(restore.operation, Operation::Restore);
        assert_eq!(restore.from_store.as_deref(), Some("s3://prod-backups/db"));
        assert_eq!(restore.read_only_stores, ["s3://prod-backups/db"]);
        assert_eq!(restore.from_instance.as_deref(), Some("db1.prod"));
        assert_eq!(
            restore.store_options.s3.region.as_deref(),
            Some("eu-west-2")
        );
        assert_eq!(restore.memory_cap_mib, 128);
        let target = &restore.job.connections["target"];
        assert_eq!(target.password.as_ref().unwrap().expose(), "s3cret");
        // Step params come after the task's, so they win.
        assert_eq!(
            restore.job.params.last().unwrap(),
            &("swap-retries".to_string(), "9".to_string())
        );

        let own = step_request(&config, task, 1, &options).unwrap();
        assert_eq!(own.from_store, None);
        assert_eq!(own.store.as_deref(), Some("s3://staging-backups/db"));

        let backup = step_request(&config, task, 2, &options).unwrap();
        assert_eq!(backup.operation, Operation::Backup);
        assert_eq!(backup.store.as_deref(), Some("s3://staging-backups/db"));
        assert_eq!(backup.read_only_stores, ["s3://prod-backups/db"]);
        assert!(backup.job.connections.contains_key("source"));

        let copy = step_request(&config, task, 3, &options).unwrap();
        assert_eq!(
            copy.job.connections["source"].host.as_deref(),
            Some("db1.prod")
        );
        assert_eq!(
            copy.job.connections["target"].host.as_deref(),
            Some("db1.staging")
        );
        assert_eq!(copy.max_runtime, std::time::Duration::from_secs(600));

        unsafe { std::env::remove_var("ENVSYNC_TEST_TASK_PASSWORD") };
        let err = step_request(&config, task, 0, &options).unwrap_err();
        assert!(
            format!("{err:#}").contains("password_env ENVSYNC_TEST_TASK_PASSWORD is not set"),
            "{err:#}"
        );
        assert_eq!(crate::failure::exit_code(&err), 2);
    }
}
