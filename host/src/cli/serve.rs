//! `envsync-host serve`: the status page (table and charts), /status.json
//! and /metrics from the run history, until SIGTERM or Ctrl-C.

use crate::jobs::config::{self, CheckOptions};
use crate::jobs::history;
use crate::signals;
use crate::web::{Server, Site};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Show this config's environment (its state folder and name).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State folder holding history.jsonl [default: the config's, else $ENVSYNC_STATE_DIR, else ~/.local/state/envsync].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub async fn execute(args: &ServeArgs) -> Result<()> {
    let config = match &args.config {
        Some(file) => Some(config::load(file, &CheckOptions::default())?),
        None => None,
    };
    let configured = args.state_dir.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|c| c.environment.state_dir.clone())
    });
    let state_dir = history::state_dir(configured.as_deref())
        .context("no state folder: pass --state-dir or set ENVSYNC_STATE_DIR")?;
    let title = config
        .as_ref()
        .map(|c| c.environment.name.clone())
        .unwrap_or_else(|| "status".into());
    let server = Server::bind(
        &args.listen,
        Site {
            state_dir: state_dir.clone(),
            title,
            live: None,
        },
    )
    .await?;
    tracing::info!(
        "status page on http://{}/ (history {})",
        server.local_addr()?,
        state_dir.display()
    );
    server.serve(signals::stop_on_signals()).await;
    Ok(())
}
