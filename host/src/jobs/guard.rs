//! The production guard: a step that writes a database (restore, transform,
//! copy) in a production environment is refused, with exit code 2, before
//! anything runs, unless the operator passed `--allow-production-write`.
//! Every entry point asks here: ad-hoc `run`, `run --config`, the daemon and
//! `render kubernetes` (which refuses to render a CronJob that would be
//! refused every time).

use super::config::{Environment, StepOp, Task};
use crate::failure::{Failure, Kind};
use anyhow::Result;

/// The flag that lets a write into production through.
pub const OVERRIDE_FLAG: &str = "--allow-production-write";

/// Whether an environment is production: what it says explicitly
/// (`production = true|false`, `--production`), else whether its name
/// contains "prod" in any case.
pub fn is_production(name: &str, explicit: Option<bool>) -> bool {
    explicit.unwrap_or_else(|| name.to_lowercase().contains("prod"))
}

/// Whether `op` changes the database it acts on (a backup only reads it).
pub fn writes_database(op: StepOp) -> bool {
    !matches!(op, StepOp::Backup)
}

/// How `op` writes, for messages: "restores into", "copies into", …
pub fn writes_how(op: StepOp) -> &'static str {
    match op {
        StepOp::Restore => "restores into",
        StepOp::Transform => "transforms a database of",
        StepOp::Copy => "copies into",
        StepOp::Backup => "backs up from",
    }
}

/// The first step of `task` (0-based index and op) that writes a database
/// when `env` is production; `None` when the guard has nothing to refuse.
pub fn first_guarded_step(env: &Environment, task: &Task) -> Option<(usize, StepOp)> {
    if !env.is_production() {
        return None;
    }
    task.steps
        .iter()
        .position(|s| writes_database(s.op))
        .map(|i| (i, task.steps[i].op))
}

/// Refuses `task` when it writes into production `env` and `allowed` is not set.
pub fn check_task(env: &Environment, task: &Task, allowed: bool) -> Result<()> {
    match first_guarded_step(env, task) {
        Some((i, op)) if !allowed => Err(refusal(
            &env.name,
            env.production,
            &format!(
                "task {:?} step {} ({}) {} it",
                task.name,
                i + 1,
                op.name(),
                writes_how(op)
            ),
            "set production = false in its [environment]",
        )),
        _ => Ok(()),
    }
}

/// Refuses an ad-hoc `op` into environment `name` (`--environment`) when it
/// is production and `allowed` is not set.
pub fn check_ad_hoc(name: &str, explicit: Option<bool>, op: StepOp, allowed: bool) -> Result<()> {
    if writes_database(op) && is_production(name, explicit) && !allowed {
        return Err(refusal(
            name,
            explicit,
            &format!("this is a {} (--op {})", op.name(), op.name()),
            "pass --production false",
        ));
    }
    Ok(())
}

/// Why the guard says no, and both ways out: the override flag, or (when
/// only the name made it production) saying the environment is not.
fn refusal(name: &str, explicit: Option<bool>, what: &str, not_production: &str) -> anyhow::Error {
    let why = match explicit {
        Some(_) => "is marked production".to_string(),
        None => "counts as production (its name contains \"prod\")".to_string(),
    };
    let unless = match explicit {
        Some(_) => String::new(),
        None => format!("; if it is not production, {not_production}"),
    };
    Failure::new(
        Kind::Usage,
        format!(
            "refusing to write into production: environment {name:?} {why} and {what}. \
             Pass {OVERRIDE_FLAG} if this is really meant{unless}"
        ),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explicit_answer_beats_the_name() {
        assert!(is_production("production", None));
        assert!(is_production("PreProd", None));
        assert!(!is_production("preprod", Some(false)));
        assert!(is_production("staging", Some(true)));
        assert!(!is_production("staging", None));
    }

    #[test]
    fn every_write_is_guarded_and_the_refusal_says_how_out() {
        for op in [StepOp::Restore, StepOp::Transform, StepOp::Copy] {
            let err = check_ad_hoc("nonprod", None, op, false).unwrap_err();
            assert_eq!(crate::failure::exit_code(&err), 2);
            let text = format!("{err:#}");
            assert!(text.contains(OVERRIDE_FLAG), "{text}");
            assert!(text.contains("--production false"), "{text}");
            assert!(check_ad_hoc("nonprod", None, op, true).is_ok());
            assert!(check_ad_hoc("nonprod", Some(false), op, false).is_ok());
        }
        assert!(check_ad_hoc("production", None, StepOp::Backup, false).is_ok());
        let err = check_ad_hoc("staging", Some(true), StepOp::Copy, false).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("is marked production"), "{text}");
        assert!(!text.contains("--production false"), "{text}");
    }
}
