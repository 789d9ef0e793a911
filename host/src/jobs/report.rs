//! Reporting finished steps: metrics to the Pushgateway (on start and end)
//! and one run-history record per finished step. A chain observer for
//! configured tasks; ad-hoc `run --plugin` steps use [`Reporter`] directly.
//! Nothing here ever fails a step: push and history errors are warnings.

use super::chain::{ChainObserver, StepEvent, StepResult};
use super::config::{Config, StepOp};
use super::history::{self, History, Record};
use crate::metrics::{AlertSettings, Group, GroupingKey, Outcome, Pusher};
use crate::runtime::LoadedPlugin;
use crate::step::StepRequest;
use std::time::Duration;

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

/// Pushes metrics and writes history for each step.
pub struct Reporter {
    pusher: Pusher,
    history: Option<History>,
    environment: String,
}

impl Reporter {
    pub fn new(pusher: Pusher, history: Option<History>, environment: &str) -> Reporter {
        Reporter {
            pusher,
            history,
            environment: environment.to_string(),
        }
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
        Reporter::new(pusher, history, &env.name)
    }

    /// The metrics this reporter pushed (what the daemon serves).
    pub fn registry(&self) -> crate::metrics::SharedRegistry {
        self.pusher.registry()
    }

    pub async fn started(&self, id: &StepIdentity) {
        self.pusher.started(&id.group).await;
    }

    /// The step ended: its end state pushed and recorded. Skipped steps
    /// did not run: nothing is pushed or recorded.
    pub async fn finished(&self, id: &StepIdentity, result: &StepResult) {
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
        };
        if let Err(e) = history.append(&record) {
            tracing::warn!("run history not written: {e:#}");
        }
    }
}

#[async_trait::async_trait]
impl ChainObserver for Reporter {
    async fn step_started(&self, event: &StepEvent<'_>) {
        self.started(&StepIdentity::of_event(event)).await;
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
