//! `envsync-host run`: one operation from the command line.

use crate::failure::{Failure, Kind};
use crate::jobs::chain::StepResult;
use crate::jobs::config::{
    DEFAULT_SANITISER_CALL_TIMEOUT, DatabaseSpec, PasswordSource, SaltSource, SanitiseSpec, StepOp,
};
use crate::jobs::guard;
use crate::jobs::history::{self, History};
use crate::jobs::report::{Reporter, StepIdentity};
use crate::jobs::request::{self, Origin, StepInputs};
use crate::logging::LogFormat;
use crate::metrics::Pusher;
use crate::runtime::registry::Registry;
use crate::runtime::{LoadedPlugin, Runtime};
use crate::sanitiser::LoadedSanitiser;
use crate::step::{self, StepOutcome, StepRequest, human_size};
use crate::store::StoreOptions;
use crate::store::codec::Compression;
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

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Gzip,
    None,
}

impl CompressionArg {
    fn name(self) -> &'static str {
        match self {
            CompressionArg::Zstd => "zstd",
            CompressionArg::Gzip => "gzip",
            CompressionArg::None => "none",
        }
    }
}

/// What each flag that does not apply with `--config` is in a config file:
/// giving one with `--config` is refused, pointing here, rather than ignored.
/// Flags not listed (`--plugin`, `--database`, …) point at the task in general.
const IN_THE_CONFIG: &[(&str, &str)] = &[
    ("environment", "name in [environment]"),
    ("production", "production in [environment]"),
    ("store", "store in [environment]"),
    (
        "from_store",
        "upper_store in [environment] (from = \"upper\" on the restore step)",
    ),
    ("read_only_stores", "upper_store in [environment]"),
    ("max_runtime", "max_runtime on each [[task.step]]"),
    ("memory_cap_mib", "memory_cap_mib in [[task]]"),
    ("jobs", "jobs in [[task]]"),
    ("allow_programs", "allow_programs in [[task]]"),
    ("params", "params in [[task]] or [[task.step]]"),
    ("identities", "identity on the restore step"),
    ("sanitiser", "[task.sanitise]"),
    ("rules", "[task.sanitise]"),
    ("salt_file", "[task.sanitise]"),
    ("salt_env", "[task.sanitise]"),
    ("strict", "[task.sanitise]"),
    ("allowed_email_domains", "[task.sanitise]"),
    ("sanitiser_memory_cap_mib", "[task.sanitise]"),
    ("sanitiser_call_timeout", "[task.sanitise]"),
];

/// The flags of `run` that apply with `--config`.
const WITH_CONFIG: &[&str] = &["config", "task", "allow_production_write"];

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run the steps of a task from this config file (with --task) instead of one ad-hoc operation. Only --task and --allow-production-write apply with it; the file describes everything else.
    #[arg(long, value_name = "FILE", requires = "task")]
    pub config: Option<PathBuf>,
    /// The task of --config to run.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub task: Option<String>,
    /// Allow a restore, transform or copy into a production environment; refused otherwise (exit 2).
    #[arg(long, alias = "allow-production-restore")]
    pub allow_production_write: bool,
    /// Name of the environment this ad-hoc step runs in; one whose name contains "prod" is production (see --production).
    #[arg(long, env = "ENVSYNC_ENVIRONMENT")]
    pub environment: Option<String>,
    /// Whether the environment is production, whatever its name says (with --config: production in [environment]).
    #[arg(
        long,
        env = "ENVSYNC_PRODUCTION",
        value_name = "true|false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub production: Option<bool>,
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
    /// Object-store location (objects plugin): its region, for signing [default: the environment's S3 region].
    #[arg(long)]
    pub db_region: Option<String>,
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
    /// Backup: compression level: zstd 1 to 22 or -7 to -1 (faster) [default: 1], gzip 0 to 9 [default: 6].
    #[arg(long, allow_negative_numbers = true)]
    pub compression_level: Option<i64>,
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
    /// Copy from an object-store location: its region [default: the environment's S3 region].
    #[arg(long)]
    pub source_region: Option<String>,
    /// Plugin parameter NAME=VALUE (repeatable; see `plugins inspect`).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Maximum runtime of the step; the plugin and its programs are stopped after it [default: restore 4h, backup 1h, transform 45m, copy 4h].
    #[arg(long, value_parser = request::parse_duration)]
    pub max_runtime: Option<Duration>,
    /// Cap on the plugin's memory, in MiB (16 to 65536) [default: 256].
    #[arg(long, value_parser = clap::value_parser!(u64).range(*request::MEMORY_CAP_MIB.start()..=*request::MEMORY_CAP_MIB.end()))]
    pub memory_cap_mib: Option<u64>,
    /// Sessions the plugin may run at once (backup and restore of chunked artifacts) [default: the number of cores, at most 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=request::MAX_JOBS as i64))]
    pub jobs: Option<u32>,
    /// Allow only these of the plugin's declared programs (repeatable) [default: all it declares].
    #[arg(long = "allow-program", value_name = "PROGRAM")]
    pub allow_programs: Vec<String>,
    /// Backup, copy: pass the rows through this sanitiser (sanitisers/NAME.wasm in the plugin folder); needs --rules and --salt-file or --salt-env.
    #[arg(long, value_name = "NAME")]
    pub sanitiser: Option<String>,
    /// The sanitiser's rules file.
    #[arg(long, value_name = "FILE", requires = "sanitiser")]
    pub rules: Option<PathBuf>,
    /// File holding the keyed-hash salt (a secret of at least 16 bytes; keep it between runs so masks stay stable).
    #[arg(
        long,
        value_name = "FILE",
        requires = "sanitiser",
        conflicts_with = "salt_env"
    )]
    pub salt_file: Option<PathBuf>,
    /// Environment variable holding the keyed-hash salt.
    #[arg(long, value_name = "VARIABLE", requires = "sanitiser")]
    pub salt_env: Option<String>,
    /// Refuse columns the rules do not cover before dumping, and fail the step when personal data is left after sanitising.
    #[arg(long, requires = "sanitiser")]
    pub strict: bool,
    /// An e-mail domain the residual scan accepts (repeatable; the masks' domains).
    #[arg(
        long = "allowed-email-domain",
        value_name = "DOMAIN",
        requires = "sanitiser"
    )]
    pub allowed_email_domains: Vec<String>,
    /// Cap on the sanitiser's memory, in MiB [default: 256].
    #[arg(long, requires = "sanitiser", value_parser = clap::value_parser!(u64).range(*request::MEMORY_CAP_MIB.start()..=*request::MEMORY_CAP_MIB.end()))]
    pub sanitiser_memory_cap_mib: Option<u64>,
    /// Longest one batch of rows may take in the sanitiser [default: 60s].
    #[arg(long, requires = "sanitiser", value_parser = request::parse_duration)]
    pub sanitiser_call_timeout: Option<Duration>,
    /// The ids of the flags typed on the command line (not taken from the
    /// environment or a default), filled by [`crate::cli::Cli::try_parse_from_args`].
    #[arg(skip)]
    pub typed: Vec<String>,
}

/// A password source for the builder: the file, else the variable when it
/// is set, else the plugin's own variables.
fn password_source(file: Option<&PathBuf>, env: &str) -> PasswordSource {
    match file {
        Some(path) => PasswordSource::File(path.clone()),
        None if std::env::var_os(env).is_some() => PasswordSource::Env(env.to_string()),
        None => PasswordSource::Default,
    }
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Kind::Usage, message).into()
}

impl RunArgs {
    fn typed(&self, id: &str) -> bool {
        self.typed.iter().any(|t| t == id)
    }

    /// Refuses flags typed together with `--config` that the config file
    /// describes instead, naming where each goes (exit code 2).
    pub(crate) fn refuse_with_config(&self) -> Result<()> {
        // This command's own flags (not the global ones), by id, with their names.
        let command = <RunArgs as clap::Args>::augment_args(clap::Command::new("run"));
        let refused: Vec<String> = command
            .get_arguments()
            .filter(|a| {
                let id = a.get_id().as_str();
                self.typed(id) && !WITH_CONFIG.contains(&id)
            })
            .map(|a| {
                let id = a.get_id().as_str();
                let flag = format!("--{}", a.get_long().unwrap_or(id));
                match IN_THE_CONFIG.iter().find(|(i, _)| *i == id) {
                    Some((_, place)) => format!("{flag} (set {place})"),
                    None => format!("{flag} (the task in the file says it)"),
                }
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(usage(format!(
            "these flags do not apply with --config, whose file describes the task: {}. \
             Remove them, or run the step ad hoc with --plugin instead of --config",
            refused.join(", ")
        )))
    }

    fn op(&self) -> Result<StepOp> {
        let op = self
            .op
            .ok_or_else(|| usage("--op is required with --plugin"))?;
        Ok(match op {
            Op::Backup => StepOp::Backup,
            Op::Restore => StepOp::Restore,
            Op::Transform => StepOp::Transform,
            Op::Copy => StepOp::Copy,
        })
    }

    /// The ad-hoc step as the step request builder's inputs.
    pub(crate) fn inputs(&self, store_options: &StoreOptions) -> Result<StepInputs> {
        let op = self.op()?;
        let database = DatabaseSpec {
            name: self
                .database
                .clone()
                .ok_or_else(|| usage("--database is required with --plugin"))?,
            host: self.db_host.clone(),
            port: self.db_port,
            user: self.db_user.clone(),
            password: password_source(self.db_password_file.as_ref(), "ENVSYNC_DB_PASSWORD"),
            region: self.db_region.clone(),
        };
        let mut inputs = StepInputs::new(
            op,
            Origin::CommandLine,
            format!("ad-hoc {}", op.name()),
            database,
        );
        inputs.environment = self.environment.clone().unwrap_or_default();
        inputs.state_dir = history::state_dir(None);
        for p in &self.params {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| usage(format!("--param {p:?} must look like NAME=VALUE")))?;
            inputs.params.push((k.trim().to_string(), v.to_string()));
        }
        let source_given = self.source_database.is_some()
            || self.source_host.is_some()
            || self.source_port.is_some()
            || self.source_user.is_some()
            || self.source_password_file.is_some()
            || self.source_region.is_some();
        if source_given {
            inputs.source = Some(DatabaseSpec {
                name: self.source_database.clone().ok_or_else(|| {
                    usage("--source-host, --source-port, --source-user and --source-password-file describe the copy source: name it with --source-database")
                })?,
                host: self.source_host.clone(),
                port: self.source_port,
                user: self.source_user.clone(),
                password: password_source(
                    self.source_password_file.as_ref(),
                    "ENVSYNC_SOURCE_DB_PASSWORD",
                ),
                region: self.source_region.clone(),
            });
        }
        inputs.store = self.store.clone();
        inputs.from_store = self.from_store.clone();
        inputs.read_only_stores = self.read_only_stores.clone();
        inputs.store_options = store_options.clone();
        inputs.compression = Compression::parse(
            self.compression.map(CompressionArg::name),
            self.compression_level,
        )
        .map_err(|why| usage(format!("--compression: {why}")))?;
        inputs.encrypt_to = self.encrypt_to.clone();
        inputs.encrypt_to_files = self.encrypt_to_file.clone();
        inputs.instance = self.instance.clone();
        // $ENVSYNC_AGE_IDENTITY is for restores; typed, it must fit the op.
        if op == StepOp::Restore || self.typed("identities") {
            inputs.identities = self.identities.clone();
        }
        inputs.from_instance = self.from_instance.clone();
        inputs.from_database = self.from_database.clone();
        inputs.artifact = self.artifact.clone();
        inputs.script = self.script.clone();
        inputs.max_runtime = self.max_runtime;
        inputs.memory_cap_mib = self.memory_cap_mib;
        inputs.jobs = self.jobs;
        inputs.allow_programs =
            (!self.allow_programs.is_empty()).then(|| self.allow_programs.clone());
        inputs.sanitise = self.sanitise()?;
        Ok(inputs)
    }

    /// `--sanitiser …` as the `[task.sanitise]` table it stands for.
    fn sanitise(&self) -> Result<Option<SanitiseSpec>> {
        let Some(sanitiser) = &self.sanitiser else {
            return Ok(None);
        };
        let rules = self
            .rules
            .clone()
            .ok_or_else(|| usage("--sanitiser needs its rules file: --rules FILE"))?;
        let salt = match (&self.salt_file, &self.salt_env) {
            (Some(file), _) => SaltSource::File(file.clone()),
            (None, Some(env)) => SaltSource::Env(env.clone()),
            (None, None) => {
                return Err(usage(
                    "--sanitiser needs the keyed-hash salt: --salt-file FILE or --salt-env VARIABLE \
                     (a secret of at least 16 bytes; keep it between runs so masks stay stable)",
                ));
            }
        };
        Ok(Some(SanitiseSpec {
            sanitiser: sanitiser.clone(),
            rules,
            salt,
            strict: self.strict,
            allowed_email_domains: self.allowed_email_domains.clone(),
            memory_cap_mib: self.sanitiser_memory_cap_mib,
            call_timeout: self
                .sanitiser_call_timeout
                .unwrap_or(DEFAULT_SANITISER_CALL_TIMEOUT),
        }))
    }

    fn request(&self, store_options: &StoreOptions) -> Result<StepRequest> {
        let mut request = request::build(self.inputs(store_options)?)?;
        request.stop = crate::signals::stop_on_signals();
        Ok(request)
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
        args.refuse_with_config()?;
        let task = args.task.as_deref().unwrap_or_default();
        return crate::cli::run_task::execute(
            runtime,
            registry,
            file,
            task,
            store_options,
            format,
            args.allow_production_write,
        )
        .await;
    }
    guard::check_ad_hoc(
        args.environment.as_deref().unwrap_or_default(),
        args.production,
        args.op()?,
        args.allow_production_write,
    )?;
    let request = args.request(store_options)?;
    let name = args
        .plugin
        .as_deref()
        .ok_or_else(|| usage("pass --plugin NAME or --config FILE"))?;
    let plugin = registry.plugin(runtime, name).await?;
    let sanitiser = match request.sanitise.as_ref() {
        Some(s) => Some(registry.sanitiser(runtime, &s.sanitiser).await?),
        None => None,
    };
    let outcome = run_recorded(runtime, &plugin, sanitiser.as_deref(), &request, args).await?;
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
    sanitiser: Option<&LoadedSanitiser>,
    request: &StepRequest,
    args: &RunArgs,
) -> Result<StepOutcome> {
    let op = StepOp::parse(step::operation_name(request.operation)).unwrap_or(StepOp::Backup);
    let id = StepIdentity::new(plugin, request, op);
    let reporter = Reporter::new(
        Pusher::local_only(),
        history::state_dir(None).map(|d| History::in_dir(&d)),
        args.environment.as_deref().unwrap_or_default(),
    );
    reporter.started(&id, &request.progress).await;
    let started = std::time::Instant::now();
    let result = match step::run_sanitised(runtime, plugin, sanitiser, request).await {
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
