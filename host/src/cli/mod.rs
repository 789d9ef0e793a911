//! The command line: `run`, `daemon`, `serve`, `config check|alerts`,
//! `status`, `plugins list|inspect`, `backups list`, `render kubernetes`.

mod backups;
mod config;
mod daemon;
mod plugins;
mod render;
pub(crate) mod run;
mod run_task;
mod sanitise;
mod serve;
mod status;
mod store_args;

use crate::logging::LogFormat;
use crate::runtime::Runtime;
use crate::runtime::compile_cache::CompileCache;
use crate::runtime::registry::{Registry, default_plugin_dir};
use anyhow::Result;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "envsync-host",
    version,
    about = "Fresh, safe copies of production data for non-production environments"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "human", global = true)]
    pub log_format: LogFormat,
    /// More logs (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Folder holding plugin .wasm files [default: plugins/ next to the binary, else ~/.local/share/envsync/plugins].
    #[arg(long, env = "ENVSYNC_PLUGIN_DIR", global = true)]
    pub plugin_dir: Option<PathBuf>,
    /// Folder for compiled plugins [default: ~/.cache/envsync/components].
    #[arg(long, env = "ENVSYNC_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub s3: store_args::S3Args,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one operation (backup, restore, transform, copy) with a plugin, or a configured task's steps (--config FILE --task NAME).
    Run(Box<run::RunArgs>),
    /// Run the config's tasks on their cron schedules until SIGTERM; optionally serve the status page and /metrics.
    Daemon(daemon::DaemonArgs),
    /// Serve the status page (table and charts), /status.json and /metrics from the run history.
    Serve(serve::ServeArgs),
    /// Check that a task's sanitiser rules cover every column of its live database.
    Sanitise {
        #[command(subcommand)]
        command: sanitise::SanitiseCommand,
    },
    /// Check a config file, or print its alert rules.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// List or inspect the installed plugins.
    Plugins {
        #[command(subcommand)]
        command: plugins::PluginsCommand,
    },
    /// The last run of each database and operation, from the run history.
    Status(status::StatusArgs),
    /// List, prune or export the backups in a store.
    Backups {
        #[command(subcommand)]
        command: backups::BackupsCommand,
    },
    /// Render a config file for another system to run: Kubernetes manifests (a CronJob per task).
    Render {
        #[command(subcommand)]
        command: render::RenderCommand,
    },
}

impl Cli {
    /// Parses `args` (the program name first). Unlike [`Parser::parse`], `run`
    /// learns which of its flags were typed rather than taken from the
    /// environment (`ENVSYNC_STORE`, …), so that with `--config` a typed ad-hoc
    /// flag is refused while a variable set for ad-hoc runs is not in the way.
    pub fn try_parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Run(args), Some(("run", run))) = (&mut cli.command, matches.subcommand()) {
            args.typed = run
                .ids()
                .filter(|id| run.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.to_string())
                .collect();
        }
        Ok(cli)
    }

    fn runtime(&self) -> Result<Runtime> {
        let dir = self.cache_dir.clone().or_else(CompileCache::default_dir);
        Runtime::new(CompileCache::new(dir).with_installed(CompileCache::default_installed_dir()))
    }

    fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir.clone().unwrap_or_else(default_plugin_dir)
    }

    /// The plugin folder, whose plugins load as steps ask for them.
    fn registry(&self) -> Registry {
        Registry::open(&self.plugin_dir())
    }

    /// Runs the parsed command.
    pub async fn execute(self) -> Result<()> {
        match &self.command {
            Command::Run(args) => {
                let runtime = self.runtime()?;
                let registry = self.registry();
                run::execute(
                    &runtime,
                    &registry,
                    args,
                    &self.s3.options(),
                    self.log_format,
                )
                .await
            }
            Command::Plugins { command } => {
                let runtime = self.runtime()?;
                plugins::execute(&runtime, &self.plugin_dir(), command).await
            }
            Command::Daemon(args) => {
                let runtime = self.runtime()?;
                let registry = self.registry();
                daemon::execute(runtime, registry, args, &self.s3.options()).await
            }
            Command::Serve(args) => serve::execute(args).await,
            Command::Sanitise { command } => {
                let runtime = self.runtime()?;
                let registry = self.registry();
                sanitise::execute(
                    &runtime,
                    &registry,
                    command,
                    &self.s3.options(),
                    self.log_format,
                )
                .await
            }
            Command::Config { command } => config::execute(command, &self.plugin_dir()),
            Command::Status(args) => status::execute(args, self.log_format),
            Command::Backups { command } => backups::execute(command, &self).await,
            Command::Render { command } => render::execute(command),
        }
    }
}
