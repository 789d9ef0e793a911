//! The daemon's schedule: when each task runs next, in the environment's
//! time zone (a `30 2 * * *` task in Europe/London runs at 02:30 London
//! time, summer and winter).

use super::config::{Config, Task};
use chrono::{DateTime, Utc};

/// Why a task is not scheduled.
#[derive(Debug, PartialEq, Eq)]
pub enum Unscheduled {
    Suspended,
    NoSchedule,
}

/// The tasks the daemon schedules, and the others with the reason.
pub fn plan(config: &Config) -> (Vec<&Task>, Vec<(&Task, Unscheduled)>) {
    let mut scheduled = Vec::new();
    let mut other = Vec::new();
    for task in &config.tasks {
        match (&task.schedule, task.suspend) {
            (_, true) => other.push((task, Unscheduled::Suspended)),
            (None, false) => other.push((task, Unscheduled::NoSchedule)),
            (Some(_), false) => scheduled.push(task),
        }
    }
    (scheduled, other)
}

/// The first time strictly after `after` that `task`'s schedule fires, in
/// `config`'s time zone; None when it never fires again (or has none).
pub fn next_run(config: &Config, task: &Task, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = task.schedule.as_ref()?;
    let local = after.with_timezone(&config.environment.timezone);
    match schedule.cron.find_next_occurrence(&local, false) {
        Ok(next) => Some(next.with_timezone(&Utc)),
        Err(e) => {
            tracing::warn!(
                "task {}: schedule {:?} has no next run: {e}",
                task.name,
                schedule.text
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::config::{CheckOptions, parse};
    use chrono::TimeZone;

    fn config(timezone: &str) -> Config {
        let text = format!(
            r#"
[environment]
name = "staging"
store = "/srv/b"
timezone = "{timezone}"

[[task]]
name = "nightly"
plugin = "postgres"
schedule = "30 2 * * *"
database = {{ name = "shop" }}
[[task.step]]
op = "backup"

[[task]]
name = "paused"
plugin = "postgres"
schedule = "30 2 * * *"
suspend = true
database = {{ name = "shop" }}
[[task.step]]
op = "backup"

[[task]]
name = "manual"
plugin = "postgres"
database = {{ name = "shop" }}
[[task.step]]
op = "backup"
"#
        );
        let dir = std::path::Path::new("/tmp");
        parse(
            &text,
            "c.toml",
            &dir.join("c.toml"),
            dir,
            &CheckOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn suspended_and_unscheduled_tasks_are_not_planned() {
        let c = config("UTC");
        let (scheduled, other) = plan(&c);
        let names: Vec<&str> = scheduled.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["nightly"]);
        let other: Vec<(&str, &Unscheduled)> = other
            .iter()
            .map(|(t, why)| (t.name.as_str(), why))
            .collect();
        assert_eq!(
            other,
            [
                ("paused", &Unscheduled::Suspended),
                ("manual", &Unscheduled::NoSchedule)
            ]
        );
    }

    #[test]
    fn schedules_follow_the_environment_time_zone_across_dst() {
        let c = config("Europe/London");
        let task = &c.tasks[0];
        // Winter: London is UTC.
        let winter = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        assert_eq!(
            next_run(&c, task, winter),
            Some(Utc.with_ymd_and_hms(2026, 1, 11, 2, 30, 0).unwrap())
        );
        // Summer: London is UTC+1, so 02:30 local is 01:30 UTC.
        let summer = Utc.with_ymd_and_hms(2026, 7, 10, 12, 0, 0).unwrap();
        assert_eq!(
            next_run(&c, task, summer),
            Some(Utc.with_ymd_and_hms(2026, 7, 11, 1, 30, 0).unwrap())
        );
        // Strictly after: at the firing instant, the next day.
        let at = Utc.with_ymd_and_hms(2026, 7, 11, 1, 30, 0).unwrap();
        assert_eq!(
            next_run(&c, task, at),
            Some(Utc.with_ymd_and_hms(2026, 7, 12, 1, 30, 0).unwrap())
        );
        let tokyo = config("Asia/Tokyo");
        assert_eq!(
            next_run(&tokyo, &tokyo.tasks[0], winter),
            Some(Utc.with_ymd_and_hms(2026, 1, 10, 17, 30, 0).unwrap())
        );
        assert_eq!(next_run(&c, &c.tasks[2], winter), None);
    }
}
