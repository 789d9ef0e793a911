//! `envsync-host config check FILE`: validates a config file and lists every
//! mistake with its line, column and field. `config alerts FILE`: the
//! Prometheus alert rules for the config's `[alerts]` classes.

use crate::failure::{Failure, Kind};
use crate::jobs::config::{self, CheckOptions};
use crate::jobs::diagnostics::Severity;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file: every mistake is listed as FILE:LINE:COLUMN with its field; exit code 2 if any.
    Check {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Print the Prometheus alert rules for the config's [alerts] settings (classes, thresholds, severities).
    Alerts {
        /// The config file (TOML).
        file: PathBuf,
        /// Write the rules here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn execute(command: &ConfigCommand, plugin_dir: &Path) -> Result<()> {
    match command {
        ConfigCommand::Check { file } => check(file, plugin_dir),
        ConfigCommand::Alerts { file, output } => alerts(file, output.as_deref()),
    }
}

fn alerts(file: &Path, output: Option<&Path>) -> Result<()> {
    let config = config::load(file, &CheckOptions::default())?;
    let rules = crate::metrics::alert_rules(&config.alerts);
    match output {
        Some(path) => std::fs::write(path, rules)
            .with_context(|| format!("writing the alert rules to {}", path.display())),
        None => {
            print!("{rules}");
            Ok(())
        }
    }
}

fn check(file: &Path, plugin_dir: &Path) -> Result<()> {
    let options = CheckOptions {
        plugin_dir: Some(plugin_dir.to_path_buf()),
    };
    match config::check(file, &options) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("{w}");
            }
            let tasks = config.tasks.len();
            let steps: usize = config.tasks.iter().map(|t| t.steps.len()).sum();
            println!(
                "ok: {tasks} task{} ({steps} step{}) in environment {}",
                if tasks == 1 { "" } else { "s" },
                if steps == 1 { "" } else { "s" },
                config.environment.name
            );
            Ok(())
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            Err(Failure::new(
                Kind::Usage,
                format!(
                    "{}: {errors} mistake{}",
                    file.display(),
                    if errors == 1 { "" } else { "s" }
                ),
            )
            .into())
        }
    }
}
