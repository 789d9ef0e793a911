//! `envsync-host daemon`: runs each task on its cron schedule until asked to
//! stop. Every run goes through [`runner::run_locked`] (lock, busy marker,
//! metrics, history), so a run that is still going when its next time comes,
//! or that a manual `run --config` holds, is skipped with a warning rather
//! than doubled. SIGTERM stops the running steps (they are reported failed,
//! nothing is published) and the daemon exits once they have stopped.

use super::chain::ChainReport;
use super::config::Config;
use super::report::Reporter;
use super::{runner, scheduler};
use crate::failure::{self, Kind};
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::store::StoreOptions;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest the loop sleeps: wall-clock jumps (NTP, a suspended VM) are
/// noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub store_options: StoreOptions,
    pub reporter: Arc<Reporter>,
    pub stop: CancellationToken,
}

/// How the daemon ended.
#[derive(Debug, Default)]
pub struct DaemonEnd {
    /// Task runs that were stopped by the stop request.
    pub interrupted: Vec<String>,
}

impl Daemon {
    /// Runs until `stop` is cancelled, then waits for running tasks to stop.
    pub async fn run(self) -> Result<DaemonEnd> {
        let config = Arc::clone(&self.config);
        let (scheduled, other) = scheduler::plan(&config);
        for (task, why) in &other {
            match why {
                scheduler::Unscheduled::Suspended => {
                    tracing::info!(
                        "task {}: suspended (suspend = true), not scheduled",
                        task.name
                    )
                }
                scheduler::Unscheduled::NoSchedule => {
                    tracing::info!(
                        "task {}: no schedule, runs only when asked (run --config)",
                        task.name
                    )
                }
            }
        }
        if scheduled.is_empty() {
            tracing::warn!("no task has an active schedule: the daemon has nothing to run");
        }
        let now = Utc::now();
        let mut next: Vec<(String, Option<DateTime<Utc>>)> = scheduled
            .iter()
            .map(|t| {
                let at = scheduler::next_run(&config, t, now);
                log_next(&config, &t.name, at);
                (t.name.clone(), at)
            })
            .collect();
        let mut running: JoinSet<(String, Result<ChainReport>)> = JoinSet::new();
        let mut end = DaemonEnd::default();
        loop {
            let now = Utc::now();
            for (name, at) in next.iter_mut() {
                let Some(due) = *at else { continue };
                if due > now {
                    continue;
                }
                self.spawn(&mut running, name.clone());
                let task = config
                    .tasks
                    .iter()
                    .find(|t| t.name == *name)
                    .expect("planned");
                *at = scheduler::next_run(&config, task, now.max(due));
                log_next(&config, name, *at);
            }
            let sleep = next
                .iter()
                .filter_map(|(_, at)| *at)
                .min()
                .map(|at| (at - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    finished(joined, &mut end);
                }
            }
        }
        if !running.is_empty() {
            tracing::warn!(
                "stopping: waiting for {} running task(s) to stop",
                running.len()
            );
        }
        while let Some(joined) = running.join_next().await {
            finished(joined, &mut end);
        }
        Ok(end)
    }

    fn spawn(&self, running: &mut JoinSet<(String, Result<ChainReport>)>, name: String) {
        let runtime = Arc::clone(&self.runtime);
        let registry = Arc::clone(&self.registry);
        let config = Arc::clone(&self.config);
        let reporter = Arc::clone(&self.reporter);
        let store_options = self.store_options.clone();
        let stop = self.stop.clone();
        tracing::info!("task {name}: starting (scheduled)");
        running.spawn(async move {
            let task = config
                .tasks
                .iter()
                .find(|t| t.name == name)
                .expect("planned");
            let result = runner::run_locked(
                &runtime,
                &registry,
                &config,
                task,
                &store_options,
                reporter.as_ref(),
                &stop,
            )
            .await;
            (name, result)
        });
    }
}

fn log_next(config: &Config, name: &str, at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => tracing::info!(
            "task {name}: next run {} ({})",
            at.with_timezone(&config.environment.timezone)
                .format("%Y-%m-%d %H:%M:%S %Z"),
            at.format("%H:%M:%S UTC")
        ),
        None => tracing::warn!("task {name}: its schedule never fires again"),
    }
}

/// Logs how a task run ended; notes runs that the stop request cut short.
fn finished(
    joined: Result<(String, Result<ChainReport>), tokio::task::JoinError>,
    end: &mut DaemonEnd,
) {
    match joined {
        Ok((name, Ok(report))) => {
            if report.succeeded() {
                tracing::info!("task {name}: succeeded\n{}", report.human().trim_end());
            } else {
                tracing::error!("task {name}: failed\n{}", report.human().trim_end());
                if report.exit_code() == Kind::Stopped.exit_code() {
                    end.interrupted.push(name);
                }
            }
        }
        Ok((name, Err(error))) if failure::exit_code(&error) == Kind::Busy.exit_code() => {
            tracing::warn!("task {name}: skipped this time: {error:#}");
        }
        Ok((name, Err(error))) => {
            tracing::error!("task {name}: could not start: {error:#}");
        }
        Err(e) => tracing::error!("a task run ended abnormally: {e}"),
    }
}
