//! Running a task: its steps in order, each in a fresh sandbox through
//! `step::run`. The first failed step stops the chain; the steps after it
//! are reported as skipped. Observers (metrics, run history) hear about every
//! step start and end.

use super::config::{Config, StepOp, Task};
use super::task::step_request;
use crate::failure::{self, Failure, Kind};
use crate::runtime::registry::Registry;
use crate::runtime::{LoadedPlugin, Runtime};
use crate::step::{self, StepOutcome, StepRequest, human_size};
use crate::store::StoreOptions;
use anyhow::Result;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one step of a chain is, for observers.
pub struct StepEvent<'a> {
    pub config: &'a Config,
    pub task: &'a Task,
    /// 0-based.
    pub index: usize,
    pub request: &'a StepRequest,
    pub plugin: &'a LoadedPlugin,
}

impl StepEvent<'_> {
    pub fn op(&self) -> StepOp {
        self.task.steps[self.index].op
    }
}

/// Hears about each step of a chain. Both methods default to doing nothing;
/// an observer's own failures must not fail the step (log them instead).
#[async_trait::async_trait]
pub trait ChainObserver: Send + Sync {
    async fn step_started(&self, _event: &StepEvent<'_>) {}
    async fn step_finished(&self, _event: &StepEvent<'_>, _result: &StepResult) {}
}

/// An observer that does nothing.
pub struct NoObserver;

impl ChainObserver for NoObserver {}

/// How one step ended.
#[derive(Debug)]
pub enum StepResult {
    Succeeded(Box<StepOutcome>),
    Failed {
        error: anyhow::Error,
        duration: Duration,
    },
    /// Not run because an earlier step failed.
    Skipped,
}

impl StepResult {
    pub fn state(&self) -> &'static str {
        match self {
            StepResult::Succeeded(_) => "succeeded",
            StepResult::Failed { .. } => "failed",
            StepResult::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
pub struct StepReport {
    pub op: StepOp,
    pub result: StepResult,
}

/// The result of running a task.
#[derive(Debug)]
pub struct ChainReport {
    pub task: String,
    pub plugin: String,
    pub steps: Vec<StepReport>,
}

impl ChainReport {
    /// The 0-based index of the failed step, if any.
    pub fn failed_index(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| matches!(s.result, StepResult::Failed { .. }))
    }

    pub fn succeeded(&self) -> bool {
        self.failed_index().is_none()
    }

    /// The exit code of the chain: 0, or that of the failed step.
    pub fn exit_code(&self) -> i32 {
        self.steps
            .iter()
            .find_map(|s| match &s.result {
                StepResult::Failed { error, .. } => Some(failure::exit_code(error)),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Human summary, one line per step.
    pub fn human(&self) -> String {
        let total = self.steps.len();
        let mut out = match self.failed_index() {
            None => format!("task {}: all {total} steps succeeded\n", self.task),
            Some(i) => format!("task {}: failed at step {} of {total}\n", self.task, i + 1),
        };
        for (i, s) in self.steps.iter().enumerate() {
            let detail = match &s.result {
                StepResult::Succeeded(o) => {
                    format!("{:>7.1}s  {}", o.duration.as_secs_f64(), o.summary)
                }
                StepResult::Failed { error, duration } => format!(
                    "{:>7.1}s  {}",
                    duration.as_secs_f64(),
                    format!("{error:#}").lines().next().unwrap_or_default()
                ),
                StepResult::Skipped => "          not run: an earlier step failed".to_string(),
            };
            out.push_str(&format!(
                "  {}. {:<9} {:<9} {detail}\n",
                i + 1,
                s.op.name(),
                s.result.state()
            ));
        }
        out
    }

    /// The summary as JSON.
    pub fn json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = serde_json::json!({
                    "step": i + 1,
                    "operation": s.op.name(),
                    "state": s.result.state(),
                });
                match &s.result {
                    StepResult::Succeeded(o) => {
                        v["summary"] = o.summary.clone().into();
                        v["duration_seconds"] = o.duration.as_secs_f64().into();
                        v["artifact"] = serde_json::to_value(&o.manifest).unwrap_or_default();
                        if let Some(m) = &o.manifest {
                            v["size"] = human_size(m.size).into();
                        }
                    }
                    StepResult::Failed { error, duration } => {
                        v["error"] = format!("{error:#}").into();
                        v["exit_code"] = failure::exit_code(error).into();
                        v["duration_seconds"] = duration.as_secs_f64().into();
                    }
                    StepResult::Skipped => {}
                }
                v
            })
            .collect();
        serde_json::json!({
            "task": self.task,
            "plugin": self.plugin,
            "result": if self.succeeded() { "succeeded" } else { "failed" },
            "exit_code": self.exit_code(),
            "steps": steps,
        })
    }

    /// Ok, or the failed step's error (its exit code kept) with the step
    /// named in front.
    pub fn into_result(self) -> Result<()> {
        let task = self.task;
        for (i, s) in self.steps.into_iter().enumerate() {
            if let StepResult::Failed { error, .. } = s.result {
                return Err(error.context(format!(
                    "task {task}: step {} ({}) failed",
                    i + 1,
                    s.op.name()
                )));
            }
        }
        Ok(())
    }
}

/// Finds task `name` in `config`; an unknown name lists the tasks.
pub fn find_task<'c>(config: &'c Config, name: &str) -> Result<&'c Task> {
    config.tasks.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = config.tasks.iter().map(|t| t.name.as_str()).collect();
        Failure::new(
            Kind::Usage,
            format!(
                "no task {name:?} in {}; its tasks are: {}",
                config.file.display(),
                names.join(", ")
            ),
        )
        .into()
    })
}

/// Runs every step of `task` in order and reports each. Errors before any
/// step runs (plugin missing, a password file unreadable) are returned as
/// `Err`: nothing was run. Cancelling `stop` stops the running step (it
/// fails) and skips the rest.
pub async fn run_task(
    runtime: &Runtime,
    registry: &Registry,
    config: &Config,
    task: &Task,
    store_options: &StoreOptions,
    observer: &dyn ChainObserver,
    stop: &CancellationToken,
) -> Result<ChainReport> {
    let plugin = registry.plugin(runtime, &task.plugin).await?;
    let plugin = &*plugin;
    // Build every request first: a step that cannot even be described
    // (unreadable password file, unset variable) stops the task before its
    // first step changes anything.
    let requests = (0..task.steps.len())
        .map(|i| {
            step_request(config, task, i, store_options).map(|mut r| {
                r.stop = stop.clone();
                r
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Sanitisers too: a missing one stops the task before it starts.
    let mut sanitisers = Vec::with_capacity(requests.len());
    for r in &requests {
        sanitisers.push(match &r.sanitise {
            Some(s) => Some(registry.sanitiser(runtime, &s.sanitiser).await?),
            None => None,
        });
    }
    let mut report = ChainReport {
        task: task.name.clone(),
        plugin: plugin.info.name.clone(),
        steps: Vec::new(),
    };
    let mut failed = false;
    for (index, request) in requests.iter().enumerate() {
        let op = task.steps[index].op;
        if failed || stop.is_cancelled() {
            report.steps.push(StepReport {
                op,
                result: StepResult::Skipped,
            });
            continue;
        }
        let event = StepEvent {
            config,
            task,
            index,
            request,
            plugin,
        };
        tracing::info!(
            "task {}: step {} of {} ({})",
            task.name,
            index + 1,
            task.steps.len(),
            op.name()
        );
        observer.step_started(&event).await;
        let started = std::time::Instant::now();
        let result =
            match step::run_sanitised(runtime, plugin, sanitisers[index].as_deref(), request).await
            {
                Ok(outcome) => StepResult::Succeeded(Box::new(outcome)),
                Err(error) => {
                    tracing::error!(
                        "task {}: step {} ({}) failed: {error:#}",
                        task.name,
                        index + 1,
                        op.name()
                    );
                    failed = true;
                    StepResult::Failed {
                        error,
                        duration: started.elapsed(),
                    }
                }
            };
        observer.step_finished(&event, &result).await;
        report.steps.push(StepReport { op, result });
    }
    Ok(report)
}
