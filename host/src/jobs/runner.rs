//! Running a configured task the way every entry point does (`run --config`,
//! the daemon): under the task's cross-process lock, inside the busy marker,
//! reporting every step, stoppable by SIGTERM.

use super::chain::{self, ChainObserver, ChainReport};
use super::config::{Config, Task};
use super::history;
use super::lock::TaskLock;
use super::marker::BusyMarker;
use crate::failure::{Failure, Kind};
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::store::StoreOptions;
use anyhow::Result;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// File name of the busy marker in the state folder when the config sets no
/// `marker_file`.
pub const DEFAULT_MARKER: &str = "busy";

/// The state folder of `config` (locks, history, default marker).
pub fn state_dir(config: &Config) -> Result<PathBuf> {
    history::state_dir(config.environment.state_dir.as_deref()).ok_or_else(|| {
        Failure::new(
            Kind::Usage,
            "no state folder for locks and history: set environment.state_dir in the config, or ENVSYNC_STATE_DIR",
        )
        .into()
    })
}

/// Where the busy marker of `config` lives.
pub fn marker_path(config: &Config) -> Result<PathBuf> {
    match &config.environment.marker_file {
        Some(path) => Ok(path.clone()),
        None => Ok(state_dir(config)?.join(DEFAULT_MARKER)),
    }
}

/// Runs `task` under its lock (refused with exit code 7 naming the holder
/// when another process runs it) and inside the busy marker.
pub async fn run_locked(
    runtime: &Runtime,
    registry: &Registry,
    config: &Config,
    task: &Task,
    store_options: &StoreOptions,
    observer: &dyn ChainObserver,
    stop: &CancellationToken,
) -> Result<ChainReport> {
    let lock = TaskLock::acquire(&state_dir(config)?, &config.environment.name, &task.name)?;
    tracing::debug!("task {}: lock {} taken", task.name, lock.path().display());
    let marker = BusyMarker::enter(&marker_path(config)?, &task.name)?;
    tracing::debug!("busy marker {} entered", marker.path().display());
    let report = chain::run_task(
        runtime,
        registry,
        config,
        task,
        store_options,
        observer,
        stop,
    )
    .await;
    drop(marker);
    drop(lock);
    report
}
