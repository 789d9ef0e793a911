//! `envsync-host config check FILE`: validates a config file and lists every
//! mistake with its line, column and field.

use crate::failure::{Failure, Kind};
use crate::jobs::config::{self, CheckOptions};
use crate::jobs::diagnostics::Severity;
use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file: every mistake is listed as FILE:LINE:COLUMN with its field; exit code 2 if any.
    Check {
        /// The config file (TOML).
        file: PathBuf,
    },
}

pub fn execute(command: &ConfigCommand, plugin_dir: &Path) -> Result<()> {
    match command {
        ConfigCommand::Check { file } => check(file, plugin_dir),
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
