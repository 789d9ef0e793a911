//! Reporting steps: metrics to the Pushgateway (on start, every progress
//! interval while running, and on end), the running step's file for
//! `status`, and one run-history record per finished step. A chain observer for
//! configured tasks; ad-hoc `run --plugin` steps use [`Reporter`] directly.
//! Nothing here ever fails a step: push and history errors are warnings.

use super::chain::{ChainObserver, StepEvent, StepResult};
use super::config::{Config, StepOp};
use super::history::{self, History, Record};
use crate::metrics::{AlertSettings, Group, GroupingKey, Outcome, ProgressValues, Pusher};
use crate::progress::Tracker;
use crate::progress::running::{RunningFile, RunningStep};
use crate::runtime::LoadedPlugin;
use crate::step::{StepOutcome, StepRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Who a step is, for metrics and history.
#[derive(Clone, Debug)]
pub struct StepIdentity {
    pub task: Option<String>,
    pub plugin: String,
    pub group: Group,
}

impl StepIdentity {
    /// Engine = the plugin's metrics engine label, instance = host of the
    /// database the step acts on (source of a backup, target otherwise;
    /// `localhost` when unset).
    pub fn new(plugin: &LoadedPlugin, request: &StepRequest, op: StepOp) -> StepIdentity {
        Self::with_alerts(plugin, request, op, &AlertSettings::default())
    }

    /// As [`StepIdentity::new`], with the runtime class chosen among
    /// `alerts`' classes.
    pub fn with_alerts(
        plugin: &LoadedPlugin,
        request: &StepRequest,
        op: StepOp,
        alerts: &AlertSettings,
    ) -> StepIdentity {
        let role = if op == StepOp::Backup {
            "source"
        } else {
            "target"
        };
        let conn = request.job.connections.get(role);
        let instance = conn
            .and_then(|c| c.instance())
            .unwrap_or_else(|| "localhost".into());
        let db_name = conn.map(|c| c.database.clone()).unwrap_or_default();
        let engine = plugin.metrics_engine();
        let group = Group::new(GroupingKey::new(engine, instance, db_name, op.name()))
            .with_runtime_class(runtime_class(op, request.max_runtime, alerts));
        StepIdentity {
            task: None,
            plugin: plugin.info.name.clone(),
            group,
        }
    }

    fn of_event(event: &StepEvent<'_>) -> StepIdentity {
        let mut id = StepIdentity::with_alerts(
            event.plugin,
            event.request,
            event.op(),
            &event.config.alerts,
        );
        id.task = Some(event.task.name.clone());
        id.group.schedule_class = event.task.schedule_class.clone();
        id
    }
}

/// The smallest runtime class of `alerts` that holds `max_runtime`, so the
/// "running too long" alert fires no earlier than the step's own deadline
/// would stop it; beyond the largest class, the largest.
pub fn runtime_class(op: StepOp, max_runtime: Duration, alerts: &AlertSettings) -> String {
    let mut classes = alerts.runtime_classes.clone();
    classes.sort_by_key(|c| c.max_runtime);
    classes
        .iter()
        .find(|c| c.max_runtime >= max_runtime)
        .or(classes.last())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| AlertSettings::default_runtime_class(op.name()).to_string())
}

/// `daily` or `weekly` when the cron `text` obviously runs once a day or
/// once a week (a single hour; every day, or one weekday); else none.
pub fn schedule_class(text: &str) -> Option<&'static str> {
    let text = text.trim();
    match text {
        "@daily" | "@midnight" => return Some("daily"),
        "@weekly" => return Some("weekly"),
        _ => {}
    }
    let f: Vec<&str> = text.split_whitespace().collect();
    let single = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    let [minute, hour, dom, month, dow] = f.as_slice() else {
        return None;
    };
    if !(single(minute) && single(hour) && *dom == "*" && *month == "*") {
        return None;
    }
    match *dow {
        "*" => Some("daily"),
        d if single(d) => Some("weekly"),
        _ => None,
    }
}

/// Pushes metrics and writes history for each step, and reports the
/// progress of the running ones.
pub struct Reporter {
    pusher: Arc<Pusher>,
    history: Option<History>,
    environment: String,
    progress_every: Duration,
    /// The progress loop of each running step.
    live: Mutex<HashMap<GroupingKey, Live>>,
}

/// A running step's progress loop.
struct Live {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    tracker: Tracker,
    started: SystemTime,
}

impl Reporter {
    pub fn new(pusher: Pusher, history: Option<History>, environment: &str) -> Reporter {
        Reporter {
            pusher: Arc::new(pusher),
            history,
            environment: environment.to_string(),
            progress_every: crate::progress::PUSH_EVERY,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Progress is pushed and written every `every` while a step runs.
    pub fn with_progress_every(mut self, every: Duration) -> Reporter {
        self.progress_every = every;
        self
    }

    /// The reporter of a configured environment: its Pushgateway (else
    /// local only) and its state folder's history.
    pub fn for_config(config: &Config) -> Reporter {
        let env = &config.environment;
        let pusher = match &env.pushgateway {
            Some(url) => Pusher::new(url, crate::metrics::DEFAULT_TIMEOUT).unwrap_or_else(|e| {
                tracing::warn!("metrics are not pushed: {e:#}");
                Pusher::local_only()
            }),
            None => Pusher::local_only(),
        };
        let history = history::state_dir(env.state_dir.as_deref()).map(|d| History::in_dir(&d));
        Reporter::new(pusher, history, &env.name).with_progress_every(env.progress_interval)
    }

    /// The metrics this reporter pushed (what the daemon serves).
    pub fn registry(&self) -> crate::metrics::SharedRegistry {
        self.pusher.registry()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<GroupingKey, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step starts: its start pushed, and until it ends its progress
    /// (`tracker`) pushed and written for `status` every interval.
    pub async fn started(&self, id: &StepIdentity, tracker: &Tracker) {
        let started = SystemTime::now();
        let previous = self.previous_size(&id.group.key);
        if let Some(size) = previous {
            tracker.expect(size);
        }
        self.registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_progress(&id.group, ProgressValues::starting(previous, unix(started)));
        self.pusher.started(&id.group).await;
        let running = self.running_file(id, started);
        let stop = CancellationToken::new();
        let task = tokio::spawn(progress_loop(
            Arc::clone(&self.pusher),
            id.group.clone(),
            tracker.clone(),
            running,
            self.progress_every,
            stop.clone(),
        ));
        let previous = self.live().insert(
            id.group.key.clone(),
            Live {
                stop,
                task,
                tracker: tracker.clone(),
                started,
            },
        );
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
    }

    /// The size of the last successful run of the group, from the history.
    fn previous_size(&self, key: &GroupingKey) -> Option<u64> {
        let records = self.history.as_ref()?.read().ok()?;
        records
            .iter()
            .filter(|r| {
                r.state == "succeeded"
                    && r.instance == key.instance
                    && r.database == key.db_name
                    && r.operation == key.operation
            })
            .max_by_key(|r| r.time)
            .and_then(|r| r.size)
    }

    /// The step's file in the state folder's `running/`, for `status`.
    fn running_file(
        &self,
        id: &StepIdentity,
        started: SystemTime,
    ) -> Option<(RunningFile, RunningStep)> {
        let dir = self.history.as_ref()?.path().parent()?.to_path_buf();
        let key = &id.group.key;
        let step = RunningStep {
            pid: std::process::id(),
            environment: self.environment.clone(),
            task: id.task.clone(),
            plugin: id.plugin.clone(),
            instance: key.instance.clone(),
            database: key.db_name.clone(),
            operation: key.operation.clone(),
            started: started.into(),
            updated: started.into(),
            progress: None,
        };
        match RunningFile::create(&dir, &step) {
            Ok(file) => Some((file, step)),
            Err(e) => {
                tracing::warn!("`status` will not show this step's progress: {e:#}");
                None
            }
        }
    }

    /// The step ended: its progress loop stopped, its end state pushed and
    /// recorded. Skipped steps did not run: nothing is pushed or recorded.
    pub async fn finished(&self, id: &StepIdentity, result: &StepResult) {
        let live = self.live().remove(&id.group.key);
        if let Some(live) = &live {
            live.stop.cancel();
        }
        let mut data_at = None;
        if let Some(live) = live {
            let _ = live.task.await;
            if let Some(s) = live.tracker.snapshot() {
                self.registry()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record_progress(&id.group, ProgressValues::of(&s, unix(SystemTime::now())));
            }
            if let StepResult::Succeeded(o) = result
                && let Some(at) = data_time(&id.group.key.operation, o, live.started)
            {
                self.pusher.data_from(&id.group, at);
                data_at = Some(at);
            }
        }
        let (outcome, key) = match result {
            StepResult::Succeeded(o) => (
                Outcome::Succeeded {
                    duration: o.duration,
                    size: o.size(),
                },
                o.manifest.as_ref().map(|m| m.key.clone()),
            ),
            StepResult::Failed { duration, .. } => (
                Outcome::Failed {
                    duration: *duration,
                },
                None,
            ),
            StepResult::Skipped => return,
        };
        self.pusher.finished(&id.group, outcome.clone()).await;
        let Some(history) = &self.history else {
            return;
        };
        let key_ = &id.group.key;
        let record = Record {
            time: chrono::Utc::now(),
            environment: self.environment.clone(),
            task: id.task.clone(),
            plugin: id.plugin.clone(),
            instance: key_.instance.clone(),
            database: key_.db_name.clone(),
            operation: key_.operation.clone(),
            state: outcome.state().label().to_string(),
            duration_seconds: outcome.duration().as_secs_f64(),
            size: match &outcome {
                Outcome::Succeeded { size, .. } => *size,
                Outcome::Failed { .. } => None,
            },
            key,
            data_time: data_at.map(chrono::DateTime::<chrono::Utc>::from),
        };
        if let Err(e) = history.append(&record) {
            tracing::warn!("run history not written: {e:#}");
        }
    }
}

/// How old the production data is that a successful step left in its
/// target: a restore's is the restored backup's creation, a copy's is its
/// start (it read the live source); other steps leave none.
fn data_time(operation: &str, outcome: &StepOutcome, started: SystemTime) -> Option<SystemTime> {
    match operation {
        "restore" => outcome.manifest.as_ref().map(|m| m.created_at.into()),
        "copy" => Some(started),
        _ => None,
    }
}

/// Every `every` until `stop`: the tracker's progress pushed (also when
/// nothing streamed yet, so the push's timestamp shows the run is alive)
/// and written to the step's running file.
async fn progress_loop(
    pusher: Arc<Pusher>,
    group: Group,
    tracker: Tracker,
    mut running: Option<(RunningFile, RunningStep)>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = SystemTime::now();
        let snapshot = tracker.snapshot();
        let values = match &snapshot {
            Some(s) => ProgressValues::of(s, unix(now)),
            None => {
                let expected = pusher
                    .registry()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&group.key)
                    .and_then(|g| g.progress.as_ref())
                    .map(|p| p.expected_bytes)
                    .filter(|b| !b.is_nan())
                    .map(|b| b as u64);
                ProgressValues::starting(expected, unix(now))
            }
        };
        if let Some((file, step)) = &mut running {
            step.updated = now.into();
            step.progress = snapshot;
            if let Err(e) = file.write(step) {
                tracing::debug!("running file not updated: {e:#}");
            }
        }
        pusher.progress(&group, values).await;
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[async_trait::async_trait]
impl ChainObserver for Reporter {
    async fn step_started(&self, event: &StepEvent<'_>) {
        self.started(&StepIdentity::of_event(event), &event.request.progress)
            .await;
    }

    async fn step_finished(&self, event: &StepEvent<'_>, result: &StepResult) {
        self.finished(&StepIdentity::of_event(event), result).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_report_runtime_class_from_max_runtime() {
        let m = |n: u64| Duration::from_secs(n * 60);
        let d = AlertSettings::default();
        for op in [StepOp::Backup, StepOp::Restore, StepOp::Transform] {
            let expect = match op {
                StepOp::Backup => "1h",
                StepOp::Transform => "45m",
                _ => "4h",
            };
            assert_eq!(runtime_class(op, op.default_max_runtime(), &d), expect);
        }
        assert_eq!(runtime_class(StepOp::Backup, m(90), &d), "4h");
        assert_eq!(runtime_class(StepOp::Backup, m(24 * 60), &d), "13h");
    }

    #[test]
    fn jobs_report_schedule_class_from_cron() {
        for (cron, class) in [
            ("30 4 * * *", Some("daily")),
            ("0 2 * * 0", Some("weekly")),
            ("0 2 * * sun", Some("weekly")),
            ("@daily", Some("daily")),
            ("@weekly", Some("weekly")),
            ("0 */6 * * *", None),
            ("0 2 1 * *", None),
            ("0 2 * * 1-5", None),
        ] {
            assert_eq!(schedule_class(cron), class, "{cron}");
        }
    }
}
