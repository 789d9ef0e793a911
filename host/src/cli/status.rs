//! `envsync-host status`: the steps running now with their progress, then
//! the latest run of each database and operation from the run history, red
//! when it failed or is older than 8 days.

use crate::jobs::history::{self, History, Row};
use crate::logging::LogFormat;
use crate::progress::running::{self, RunningStep};
use crate::step::human_size;
use anyhow::{Context, Result};
use clap::Args;
use std::io::IsTerminal as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// State folder holding history.jsonl [default: $ENVSYNC_STATE_DIR, else ~/.local/state/envsync].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the rows as a JSON array (same as --log-format json).
    #[arg(long)]
    pub json: bool,
    /// Show only the steps running now, with their progress.
    #[arg(long)]
    pub running: bool,
}

pub fn execute(args: &StatusArgs, format: LogFormat) -> Result<()> {
    let dir = history::state_dir(args.state_dir.as_deref())
        .context("no state folder: pass --state-dir or set ENVSYNC_STATE_DIR")?;
    let json = args.json || matches!(format, LogFormat::Json);
    let now_running = running::read_all(&dir);
    if args.running {
        if json {
            println!("{}", serde_json::to_string_pretty(&now_running)?);
        } else if now_running.is_empty() {
            println!("no step is running in {}", dir.display());
        } else {
            print!("{}", running_table(&now_running, chrono::Utc::now()));
        }
        return Ok(());
    }
    let records = History::in_dir(&dir).read()?;
    let rows = history::latest(&records, chrono::Utc::now());
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if !now_running.is_empty() {
        println!("{}", running_table(&now_running, chrono::Utc::now()));
    }
    if rows.is_empty() {
        println!("no runs recorded in {}", dir.display());
        return Ok(());
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", table(&rows, colour));
    Ok(())
}

/// `RUNNING` and one line per running step: what, since when, progress.
fn running_table(steps: &[RunningStep], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::from("RUNNING\n");
    for s in steps {
        let task = s
            .task
            .as_deref()
            .map(|t| format!(" (task {t})"))
            .unwrap_or_default();
        let since =
            history::short_age((now - s.started).to_std().unwrap_or_default().as_secs_f64());
        let progress = match &s.progress {
            Some(p) => crate::progress::line(p),
            None => "no bytes yet".into(),
        };
        out.push_str(&format!(
            "  {} {} of {} on {}{task}, running {since}: {progress}\n",
            s.plugin, s.operation, s.database, s.instance
        ));
    }
    out
}

fn table(rows: &[Row], colour: bool) -> String {
    let header = [
        "INSTANCE",
        "DATABASE",
        "OPERATION",
        "STATE",
        "WHEN (UTC)",
        "DURATION",
        "SIZE",
        "AGE",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let l = &r.last;
            [
                l.instance.clone(),
                l.database.clone(),
                l.operation.clone(),
                l.state.clone(),
                l.time.format("%Y-%m-%d %H:%M").to_string(),
                format!("{:.1}s", l.duration_seconds),
                l.size.map(human_size).unwrap_or_else(|| "-".into()),
                history::short_age(r.age_seconds),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = c
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s
    };
    let mut out = line(&header.map(String::from));
    out.push('\n');
    for (row, c) in rows.iter().zip(&cells) {
        let text = line(c);
        if colour && row.alarm {
            out.push_str(&format!("\x1b[31m{text}\x1b[0m\n"));
        } else {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::history::Record;
    use chrono::TimeZone;

    #[test]
    fn jobs_status_lists_running_steps_first() {
        let started = chrono::Utc.with_ymd_and_hms(2024, 5, 1, 4, 0, 0).unwrap();
        let step = RunningStep {
            pid: 1,
            environment: "staging".into(),
            task: Some("shop".into()),
            plugin: "mysql".into(),
            instance: "db1".into(),
            database: "shop".into(),
            operation: "restore".into(),
            started,
            updated: started,
            progress: None,
        };
        assert_eq!(
            running_table(&[step], started + chrono::Duration::seconds(90)),
            "RUNNING\n  mysql restore of shop on db1 (task shop), running 1m: no bytes yet\n"
        );
    }

    #[test]
    fn jobs_status_table_colours_only_alarms() {
        let record = |db: &str, state: &str| Record {
            time: chrono::Utc.with_ymd_and_hms(2024, 5, 1, 4, 0, 0).unwrap(),
            environment: "staging".into(),
            task: None,
            plugin: "postgres".into(),
            instance: "db1".into(),
            database: db.into(),
            operation: "backup".into(),
            state: state.into(),
            duration_seconds: 2.0,
            size: Some(2048),
            key: None,
            data_time: None,
        };
        let rows = [
            Row {
                last: record("shop", "succeeded"),
                age_seconds: 7200.0,
                alarm: false,
            },
            Row {
                last: record("blog", "failed"),
                age_seconds: 10.0 * 86400.0,
                alarm: true,
            },
        ];
        let plain = table(&rows, false);
        assert!(!plain.contains('\x1b'));
        assert!(plain.starts_with("INSTANCE  DATABASE  OPERATION  STATE"));
        assert!(plain.contains("2h\n"), "{plain}");
        let coloured = table(&rows, true);
        assert_eq!(coloured.matches("\x1b[31m").count(), 1, "{coloured}");
        assert!(coloured.contains("\x1b[31mdb1       blog"), "{coloured}");
    }
}
