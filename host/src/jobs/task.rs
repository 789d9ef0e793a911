//! Turning one step of a configured task into the [`StepRequest`] that
//! `step::run` executes: which database in which role, which stores may be
//! read and which written, limits, codec, credentials.

use super::config::{Config, DatabaseSpec, FromStore, PasswordSource, SaltSource, StepOp, Task};
use crate::capabilities::job::JobContext;
use crate::connection::{Connection, Secret};
use crate::failure::{Failure, Kind};
use crate::runtime::sandbox::DEFAULT_MEMORY_CAP_MIB;
use crate::sanitiser::SanitiseOptions;
use crate::step::StepRequest;
use crate::store::StoreOptions;
use crate::store::codec;
use anyhow::Result;

/// Reads the password of `spec` from where the config says it is.
fn password(spec: &DatabaseSpec, what: &str) -> Result<Option<Secret>> {
    match &spec.password {
        PasswordSource::Default => Ok(None),
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(
                    Kind::Usage,
                    format!("{what}: cannot read password_file {}: {e}", path.display()),
                )
            })?;
            Ok(Some(Secret::new(
                text.trim_end_matches(['\r', '\n']).to_string(),
            )))
        }
        PasswordSource::Env(name) => match std::env::var(name) {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(_) => Err(Failure::new(
                Kind::Usage,
                format!("{what}: password_env {name} is not set in the environment"),
            )
            .into()),
        },
    }
}

fn connection(spec: &DatabaseSpec, what: &str) -> Result<Connection> {
    Ok(Connection {
        database: spec.name.clone(),
        host: spec.host.clone(),
        port: spec.port,
        user: spec.user.clone(),
        password: password(spec, what)?,
    })
}

/// The sanitising of a backup or copy step of `task` (rules and salt read
/// now, so a task that cannot sanitise stops before its first step).
fn sanitise_options(
    config: &Config,
    task: &Task,
    op: StepOp,
    what: &str,
) -> Result<Option<SanitiseOptions>> {
    let Some(spec) = &task.sanitise else {
        return Ok(None);
    };
    if !matches!(op, StepOp::Backup | StepOp::Copy) {
        return Ok(None);
    }
    let rules = std::fs::read_to_string(&spec.rules).map_err(|e| {
        Failure::new(
            Kind::Usage,
            format!(
                "{what}: cannot read the sanitiser rules {}: {e}",
                spec.rules.display()
            ),
        )
    })?;
    let salt: Vec<u8> = match &spec.salt {
        SaltSource::File(path) => std::fs::read(path)
            .map_err(|e| {
                Failure::new(
                    Kind::Usage,
                    format!("{what}: cannot read salt_file {}: {e}", path.display()),
                )
            })?
            .trim_ascii_end()
            .to_vec(),
        SaltSource::Env(name) => std::env::var(name)
            .map_err(|_| {
                Failure::new(
                    Kind::Usage,
                    format!("{what}: salt_env {name} is not set in the environment"),
                )
            })?
            .into_bytes(),
    };
    if salt.len() < 16 {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "{what}: the keyed-hash salt has {} bytes; use at least 16 random bytes \
                 (e.g. `openssl rand -hex 32 > salt.key`), or masked values can be guessed back",
                salt.len()
            ),
        )
        .into());
    }
    Ok(Some(SanitiseOptions {
        sanitiser: spec.sanitiser.clone(),
        rules,
        rules_origin: spec.rules.display().to_string(),
        salt: salt.into(),
        memory_cap_mib: spec
            .memory_cap_mib
            .unwrap_or(crate::sanitiser::DEFAULT_MEMORY_CAP_MIB),
        call_timeout: spec.call_timeout,
        allowed_email_domains: spec.allowed_email_domains.clone(),
        strict: spec.strict,
        environment: config.environment.name.clone(),
    }))
}

/// The request for step `index` (0-based) of `task`. `store_options` are the
/// command line's; the config's `[environment.s3]` applies on top.
pub fn step_request(
    config: &Config,
    task: &Task,
    index: usize,
    store_options: &StoreOptions,
) -> Result<StepRequest> {
    let env = &config.environment;
    let step = &task.steps[index];
    let what = format!(
        "task \"{}\" step {} ({})",
        task.name,
        index + 1,
        step.op.name()
    );
    let mut params = task.params.clone();
    // Later entries win (`job.param` looks from the end).
    params.extend(step.params.iter().cloned());
    let mut job = JobContext {
        params,
        ..Default::default()
    };
    let main = connection(&task.database, &format!("{what} database"))?;
    match step.op {
        StepOp::Backup => {
            job.connections.insert("source".into(), main);
        }
        StepOp::Restore | StepOp::Transform => {
            job.connections.insert("target".into(), main);
        }
        StepOp::Copy => {
            let spec = task.source.as_ref().ok_or_else(|| {
                Failure::new(
                    Kind::Usage,
                    format!("{what}: the task has no [task.source]"),
                )
            })?;
            let mut source = connection(spec, &format!("{what} source"))?;
            // Unset connection facts default to the target's, as on the CLI.
            source.host = source.host.or_else(|| main.host.clone());
            source.port = source.port.or(main.port);
            source.user = source.user.or_else(|| main.user.clone());
            if source.password.is_none() {
                source.password = main.password.clone();
            }
            if source.database == main.database
                && source.display_address() == main.display_address()
            {
                return Err(Failure::new(
                    Kind::Usage,
                    format!("{what}: copy source and target are the same database"),
                )
                .into());
            }
            job.connections.insert("source".into(), source);
            job.connections.insert("target".into(), main);
        }
    }
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
    let mut encrypt_to = step.encrypt_to.clone();
    for file in &step.encrypt_to_files {
        encrypt_to.extend(
            codec::read_recipients_file(file)
                .map_err(|e| Failure::new(Kind::Usage, format!("{what}: {e:#}")))?,
        );
    }
    Ok(StepRequest {
        operation: step.op.operation(),
        job,
        store: env.store.clone(),
        from_store,
        read_only_stores: env.upper_store.iter().cloned().collect(),
        store_options: env.s3.apply(store_options),
        compression: step.compression,
        encrypt_to,
        identities: step.identities.clone(),
        instance: step.instance.clone(),
        from_instance: step.from_instance.clone(),
        from_database: step.from_database.clone(),
        artifact: step.artifact.clone(),
        script: step.script.clone(),
        max_runtime: step.max_runtime,
        memory_cap_mib: task.memory_cap_mib.unwrap_or(DEFAULT_MEMORY_CAP_MIB),
        allow_programs: task.allow_programs.clone(),
        stop: Default::default(),
        sanitise: sanitise_options(config, task, step.op, &what)?,
    })
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
