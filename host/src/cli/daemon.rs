//! `envsync-host daemon --config FILE`: runs the config's tasks on their
//! schedules, serves the status page and `/metrics` when asked to listen,
//! and stops cleanly on SIGTERM.

use crate::failure::{Failure, Kind};
use crate::jobs::config::{self, CheckOptions};
use crate::jobs::daemon::Daemon;
use crate::jobs::guard;
use crate::jobs::report::Reporter;
use crate::jobs::runner;
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::signals;
use crate::store::StoreOptions;
use crate::web::{Server, Site};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// The config file (TOML) whose tasks to schedule.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Serve the status page, /status.json and /metrics on this address (e.g. 0.0.0.0:9187).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Allow scheduled restores, transforms and copies into a production environment; without it the daemon refuses to start (exit 2).
    #[arg(long, alias = "allow-production-restore")]
    pub allow_production_write: bool,
}

pub async fn execute(
    runtime: Runtime,
    registry: Registry,
    args: &DaemonArgs,
    store_options: &StoreOptions,
) -> Result<()> {
    let config = config::load(&args.config, &CheckOptions::default())?;
    for task in &config.tasks {
        guard::check_task(&config.environment, task, args.allow_production_write)?;
    }
    // Load what the tasks name now, not at their first run: a missing or
    // refused plugin shows at start, and nothing else in the folder is compiled.
    for task in &config.tasks {
        if let Err(e) = registry.plugin(&runtime, &task.plugin).await {
            tracing::warn!("task {}: {e:#}", task.name);
        }
        if let Some(spec) = &task.sanitise
            && let Err(e) = registry.sanitiser(&runtime, &spec.sanitiser).await
        {
            tracing::warn!("task {}: {e:#}", task.name);
        }
    }
    let state_dir = runner::state_dir(&config)?;
    let reporter = Arc::new(Reporter::for_config(&config));
    let stop = signals::stop_on_signals();
    let server = match &args.listen {
        Some(addr) => {
            let server = Server::bind(
                addr,
                Site {
                    state_dir: state_dir.clone(),
                    title: config.environment.name.clone(),
                    live: Some(reporter.registry()),
                },
            )
            .await?;
            tracing::info!(
                "status page on http://{}/ (metrics on /metrics)",
                server.local_addr()?
            );
            Some(tokio::spawn(server.serve(stop.clone())))
        }
        None => None,
    };
    tracing::info!(
        "daemon started for environment {} ({} task(s), time zone {}, state {}, busy marker {})",
        config.environment.name,
        config.tasks.len(),
        config.environment.timezone,
        state_dir.display(),
        runner::marker_path(&config)?.display()
    );
    let end = Daemon {
        runtime: Arc::new(runtime),
        registry: Arc::new(registry),
        config: Arc::new(config),
        store_options: store_options.clone(),
        reporter,
        stop: stop.clone(),
    }
    .run()
    .await?;
    if let Some(server) = server {
        let _ = server.await;
    }
    if end.interrupted.is_empty() {
        tracing::info!("daemon stopped");
        Ok(())
    } else {
        Err(Failure::new(
            Kind::Stopped,
            format!(
                "daemon stopped; these task runs were stopped part-way and reported failed: {}",
                end.interrupted.join(", ")
            ),
        )
        .into())
    }
}
