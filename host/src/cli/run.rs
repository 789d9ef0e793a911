//! `envsync-host run`: one operation from the command line.

use crate::capabilities::job::JobContext;
use crate::connection::{Connection, Secret};
use crate::failure::{Failure, Kind};
use crate::jobs::chain::StepResult;
use crate::jobs::config::{StepOp, is_production_name};
use crate::jobs::history::{self, History};
use crate::jobs::report::{Reporter, StepIdentity};
use crate::logging::LogFormat;
use crate::metrics::Pusher;
use crate::runtime::bindings::Operation;
use crate::runtime::registry::Registry;
use crate::runtime::sandbox::DEFAULT_MEMORY_CAP_MIB;
use crate::runtime::{LoadedPlugin, Runtime};
use crate::step::{self, StepOutcome, StepRequest, human_size};
use crate::store::StoreOptions;
use crate::store::codec::{self, Compression};
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Op {
    Backup,
    Restore,
    Transform,
    Copy,
}

impl From<Op> for Operation {
    fn from(op: Op) -> Self {
        match op {
            Op::Backup => Operation::Backup,
            Op::Restore => Operation::Restore,
            Op::Transform => Operation::Transform,
            Op::Copy => Operation::Copy,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Gzip,
    None,
}

/// Flags of the ad-hoc form (`--plugin … --op …`) that a config file sets
/// instead; giving them with `--config` is an error.
const AD_HOC: &[&str] = &[
    "plugin",
    "op",
    "database",
    "db_host",
    "db_port",
    "db_user",
    "db_password_file",
    "instance",
    "from_store",
    "compression",
    "compression_level",
    "encrypt_to",
    "encrypt_to_file",
    "from_instance",
    "from_database",
    "artifact",
    "script",
    "source_database",
    "source_host",
    "source_port",
    "source_user",
    "source_password_file",
    "params",
];

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run the steps of a task from this config file (with --task) instead of one ad-hoc operation.
    #[arg(long, value_name = "FILE", conflicts_with_all = AD_HOC, requires = "task")]
    pub config: Option<PathBuf>,
    /// The task of --config to run.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub task: Option<String>,
    /// Allow a restore into a production environment (a name containing "prod"); refused otherwise.
    #[arg(long)]
    pub allow_production_restore: bool,
    /// Name of the environment this ad-hoc step runs in; a restore into one whose name contains "prod" needs --allow-production-restore (with --config the file's name applies).
    // Not in AD_HOC: clap counts a value from the environment variable as
    // given, and a set ENVSYNC_ENVIRONMENT must not break `run --config`.
    #[arg(long, env = "ENVSYNC_ENVIRONMENT")]
    pub environment: Option<String>,
    /// Plugin name (see `plugins list`).
    #[arg(long, required_unless_present = "config")]
    pub plugin: Option<String>,
    /// Operation to run.
    #[arg(long, value_enum, required_unless_present = "config")]
    pub op: Option<Op>,
    /// Database the step acts on: the source of a backup, the target of a restore, transform or copy.
    #[arg(long, required_unless_present = "config")]
    pub database: Option<String>,
    /// Database server host.
    #[arg(long)]
    pub db_host: Option<String>,
    /// Database server port.
    #[arg(long)]
    pub db_port: Option<u16>,
    /// Database user.
    #[arg(long)]
    pub db_user: Option<String>,
    /// File holding the database password (else $ENVSYNC_DB_PASSWORD, else the plugin's standard variables such as PGPASSWORD).
    #[arg(long)]
    pub db_password_file: Option<PathBuf>,
    /// Store: a folder path or file:// URL.
    #[arg(long, env = "ENVSYNC_STORE")]
    pub store: Option<String>,
    /// Backup: folder of the key in the store [default: --db-host, else localhost].
    #[arg(long)]
    pub instance: Option<String>,
    /// Restore: read backups from this store instead of --store (e.g. the environment above); restores never write to a store.
    #[arg(long)]
    pub from_store: Option<String>,
    /// A store of another environment (repeatable): it may be read, and a backup into it is refused.
    #[arg(
        long = "read-only-store",
        value_name = "URL",
        env = "ENVSYNC_READ_ONLY_STORES",
        value_delimiter = ','
    )]
    pub read_only_stores: Vec<String>,
    /// Backup: compression of the stored artifact [default: zstd, or none for formats that are already compressed].
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,
    /// Backup: compression level [default: zstd 1, gzip 6].
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// Backup: encrypt to this age recipient (age1…; repeatable).
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Backup: encrypt to the age recipients listed in FILE (repeatable).
    #[arg(long = "encrypt-to-file", value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,
    /// Restore: age identity file to decrypt with (repeatable).
    #[arg(long = "identity", value_name = "FILE", env = "ENVSYNC_AGE_IDENTITY")]
    pub identities: Vec<PathBuf>,
    /// Restore: instance whose backups to read [default: --db-host, else localhost].
    #[arg(long)]
    pub from_instance: Option<String>,
    /// Restore: database whose backups to read [default: --database].
    #[arg(long)]
    pub from_database: Option<String>,
    /// Restore: this artifact (a key or a file name) instead of the latest.
    #[arg(long)]
    pub artifact: Option<String>,
    /// Transform: the script to run.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Copy: the source database.
    #[arg(long)]
    pub source_database: Option<String>,
    /// Copy: source host [default: --db-host].
    #[arg(long)]
    pub source_host: Option<String>,
    /// Copy: source port [default: --db-port].
    #[arg(long)]
    pub source_port: Option<u16>,
    /// Copy: source user [default: --db-user].
    #[arg(long)]
    pub source_user: Option<String>,
    /// Copy: file holding the source password (else $ENVSYNC_SOURCE_DB_PASSWORD, else the target's).
    #[arg(long)]
    pub source_password_file: Option<PathBuf>,
    /// Plugin parameter NAME=VALUE (repeatable; see `plugins inspect`).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Maximum runtime of the step; the plugin and its programs are stopped after it.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub max_runtime: Duration,
    /// Cap on the plugin's memory, in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_CAP_MIB)]
    pub memory_cap_mib: u64,
    /// Allow only these of the plugin's declared programs (repeatable) [default: all it declares].
    #[arg(long = "allow-program", value_name = "PROGRAM")]
    pub allow_programs: Vec<String>,
}

fn read_password(file: Option<&PathBuf>, env: &str) -> Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                Kind::Usage,
                format!("cannot read password file {}: {e}", path.display()),
            )
        })?;
        return Ok(Some(Secret::new(
            text.trim_end_matches(['\r', '\n']).to_string(),
        )));
    }
    Ok(std::env::var(env).ok().map(Secret::new))
}

impl RunArgs {
    fn compression(&self) -> Result<Option<Compression>> {
        let level = self.compression_level;
        Ok(match self.compression {
            None if level.is_some() => {
                return Err(Failure::new(
                    Kind::Usage,
                    "--compression-level needs --compression zstd|gzip",
                )
                .into());
            }
            None => None,
            Some(CompressionArg::None) => Some(Compression::None),
            Some(CompressionArg::Zstd) => Some(Compression::Zstd {
                level: level.unwrap_or(3),
            }),
            Some(CompressionArg::Gzip) => Some(Compression::Gzip {
                level: level.unwrap_or(6) as u32,
            }),
        })
    }

    fn recipients(&self) -> Result<Vec<String>> {
        let mut recipients = self.encrypt_to.clone();
        for file in &self.encrypt_to_file {
            recipients.extend(
                codec::read_recipients_file(file)
                    .map_err(|e| Failure::new(Kind::Usage, format!("{e:#}")))?,
            );
        }
        Ok(recipients)
    }

    fn request(&self, store_options: &StoreOptions) -> Result<StepRequest> {
        let mut params = Vec::new();
        for p in &self.params {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Failure::new(
                    Kind::Usage,
                    format!("--param {p:?} must look like NAME=VALUE"),
                )
            })?;
            params.push((k.trim().to_string(), v.to_string()));
        }
        let main = Connection {
            database: self
                .database
                .clone()
                .ok_or_else(|| Failure::new(Kind::Usage, "--database is required with --plugin"))?,
            host: self.db_host.clone(),
            port: self.db_port,
            user: self.db_user.clone(),
            password: read_password(self.db_password_file.as_ref(), "ENVSYNC_DB_PASSWORD")?,
        };
        let mut job = JobContext {
            params,
            ..Default::default()
        };
        let op: Operation = self
            .op
            .ok_or_else(|| Failure::new(Kind::Usage, "--op is required with --plugin"))?
            .into();
        match op {
            Operation::Backup => {
                job.connections.insert("source".into(), main);
            }
            Operation::Restore | Operation::Transform => {
                job.connections.insert("target".into(), main);
            }
            Operation::Copy => {
                let database = self.source_database.clone().ok_or_else(|| {
                    Failure::new(
                        Kind::Usage,
                        "copy needs --source-database (the database to copy from)",
                    )
                })?;
                let source = Connection {
                    database,
                    host: self.source_host.clone().or_else(|| main.host.clone()),
                    port: self.source_port.or(main.port),
                    user: self.source_user.clone().or_else(|| main.user.clone()),
                    password: read_password(
                        self.source_password_file.as_ref(),
                        "ENVSYNC_SOURCE_DB_PASSWORD",
                    )?
                    .or_else(|| main.password.clone()),
                };
                if source.database == main.database
                    && source.display_address() == main.display_address()
                {
                    return Err(Failure::new(
                        Kind::Usage,
                        "copy source and target are the same database",
                    )
                    .into());
                }
                job.connections.insert("source".into(), source);
                job.connections.insert("target".into(), main);
            }
        }
        Ok(StepRequest {
            operation: op,
            job,
            store: self.store.clone(),
            from_store: self.from_store.clone(),
            read_only_stores: self.read_only_stores.clone(),
            store_options: store_options.clone(),
            compression: self.compression()?,
            encrypt_to: self.recipients()?,
            identities: self.identities.clone(),
            instance: self.instance.clone(),
            from_instance: self.from_instance.clone(),
            from_database: self.from_database.clone(),
            artifact: self.artifact.clone(),
            script: self.script.clone(),
            max_runtime: self.max_runtime,
            memory_cap_mib: self.memory_cap_mib,
            allow_programs: (!self.allow_programs.is_empty()).then(|| self.allow_programs.clone()),
            stop: crate::signals::stop_on_signals(),
            sanitise: None,
        })
    }
}

pub async fn execute(
    runtime: &Runtime,
    registry: &Registry,
    args: &RunArgs,
    store_options: &StoreOptions,
    format: LogFormat,
) -> Result<()> {
    if let Some(file) = &args.config {
        let task = args.task.as_deref().unwrap_or_default();
        return crate::cli::run_task::execute(
            runtime,
            registry,
            file,
            task,
            store_options,
            format,
            args.allow_production_restore,
        )
        .await;
    }
    if let (Some(Op::Restore), Some(env)) = (args.op, &args.environment)
        && is_production_name(env)
        && !args.allow_production_restore
    {
        return Err(crate::cli::run_task::production_refusal(
            env,
            "this is a restore (--op restore)",
        ));
    }
    let request = args.request(store_options)?;
    let name = args
        .plugin
        .as_deref()
        .ok_or_else(|| Failure::new(Kind::Usage, "pass --plugin NAME or --config FILE"))?;
    let plugin = registry.plugin(runtime, name).await?;
    let outcome = run_recorded(runtime, &plugin, &request, args).await?;
    match format {
        LogFormat::Human => println!(
            "{} in {:.1}s",
            outcome.summary,
            outcome.duration.as_secs_f64()
        ),
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "result": "succeeded",
                "operation": step::operation_name(request.operation),
                "plugin": plugin.info.name,
                "summary": outcome.summary,
                "duration_seconds": outcome.duration.as_secs_f64(),
                "artifact": outcome.manifest,
                "host_peak_rss_bytes": peak_rss_bytes(),
            })
        ),
    }
    if let Some(m) = &outcome.manifest {
        tracing::debug!("artifact {} is {}", m.key, human_size(m.size));
    }
    Ok(())
}

/// Runs the step and appends it to the run history of the state folder
/// (`$ENVSYNC_STATE_DIR`, else the user's), so `status` shows ad-hoc runs too.
async fn run_recorded(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    request: &StepRequest,
    args: &RunArgs,
) -> Result<StepOutcome> {
    let op = StepOp::parse(step::operation_name(request.operation)).unwrap_or(StepOp::Backup);
    let id = StepIdentity::new(&plugin.info.name, request, op);
    let reporter = Reporter::new(
        Pusher::local_only(),
        history::state_dir(None).map(|d| History::in_dir(&d)),
        args.environment.as_deref().unwrap_or_default(),
    );
    let started = std::time::Instant::now();
    let result = match step::run(runtime, plugin, request).await {
        Ok(outcome) => StepResult::Succeeded(Box::new(outcome)),
        Err(error) => StepResult::Failed {
            error,
            duration: started.elapsed(),
        },
    };
    reporter.finished(&id, &result).await;
    match result {
        StepResult::Succeeded(outcome) => Ok(*outcome),
        StepResult::Failed { error, .. } => Err(error),
        StepResult::Skipped => unreachable!("an ad-hoc step always runs"),
    }
}

/// The host process's peak resident memory (VmHWM), for benchmarks.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
