//! Showing a step's progress to the operator: on a terminal, a bar (bytes,
//! rate, and ETA when the size is known); otherwise a plain log line every
//! [`LOG_EVERY`], so logs collected by cron, systemd or Kubernetes stay
//! readable. Both read the step's [`Tracker`].

use super::Tracker;
use crate::step::human_size;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often progress is logged when not on a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// How often a bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(250);

/// Shows progress until dropped; dropping it also ends the tracker's
/// stream (its final byte count stays).
pub struct Display {
    done: CancellationToken,
    tracker: Tracker,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.done.cancel();
        self.tracker.stream_ended();
    }
}

pub(super) fn show(tracker: Tracker) -> Display {
    let done = CancellationToken::new();
    let stop = done.clone();
    if crate::logging::interactive() {
        tokio::spawn(bar(tracker.clone(), stop));
    } else {
        tokio::spawn(log_lines(tracker.clone(), stop));
    }
    Display { done, tracker }
}

async fn bar(tracker: Tracker, stop: CancellationToken) {
    use indicatif::{ProgressBar, ProgressStyle};
    let Some(first) = tracker.snapshot() else {
        return;
    };
    let (bar, template) = match first.expected_bytes.filter(|_| !first.expected_is_estimate) {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(first.what);
    loop {
        if let Some(s) = tracker.snapshot() {
            bar.set_position(s.bytes);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(DRAW_EVERY) => {}
        }
    }
    bar.finish_and_clear();
}

async fn log_lines(tracker: Tracker, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LOG_EVERY) => {}
        }
        if let Some(s) = tracker.snapshot() {
            tracing::info!("{}", line(&s));
        }
    }
}

/// `restore of shop: 1.2 GiB of 3.0 GiB (40%), 85.0 MiB/s, ETA 22s`, with
/// `about` before an expected total that is the previous run's size, and
/// the plugin's rows or documents when it reports them.
pub fn line(s: &super::Snapshot) -> String {
    let mut out = format!("{}: {}", s.what, human_size(s.bytes));
    match s.expected_bytes.filter(|t| *t > 0) {
        Some(total) => {
            let pct = (s.bytes as f64 / total as f64 * 100.0).min(100.0);
            let about = if s.expected_is_estimate { "about " } else { "" };
            out.push_str(&format!(" of {about}{} ({pct:.0}%)", human_size(total)));
        }
        None => out.push_str(" so far"),
    }
    out.push_str(&format!(", {}/s", human_size(s.bytes_per_second as u64)));
    if let (Some(stage), Some(items)) = (&s.stage, s.items) {
        match s.items_total {
            Some(t) => out.push_str(&format!(", {stage} {items} of {t}")),
            None => out.push_str(&format!(", {stage} {items}")),
        }
    }
    if let Some(eta) = s.eta_seconds {
        let eta = Duration::from_secs(eta.round() as u64);
        out.push_str(&format!(", ETA {}", humantime::format_duration(eta)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::progress::Snapshot;

    fn snap(bytes: u64, total: Option<u64>, estimate: bool, secs: f64) -> Snapshot {
        let rate = bytes as f64 / secs;
        Snapshot {
            what: "restore of shop".into(),
            bytes,
            expected_bytes: total,
            expected_is_estimate: estimate,
            stage: None,
            items: None,
            items_total: None,
            elapsed_seconds: secs,
            bytes_per_second: rate,
            eta_seconds: total.map(|t| (t - bytes) as f64 / rate),
        }
    }

    #[test]
    fn progress_lines_give_rate_and_eta_when_the_size_is_known() {
        let mib = 1024 * 1024;
        assert_eq!(
            line(&snap(100 * mib, Some(300 * mib), false, 10.0)),
            "restore of shop: 100.0 MiB of 300.0 MiB (33%), 10.0 MiB/s, ETA 20s"
        );
        assert_eq!(
            line(&snap(50 * mib, None, false, 5.0)),
            "restore of shop: 50.0 MiB so far, 10.0 MiB/s"
        );
        let mut s = snap(100 * mib, Some(200 * mib), true, 10.0);
        s.stage = Some("rows".into());
        s.items = Some(5000);
        assert_eq!(
            line(&s),
            "restore of shop: 100.0 MiB of about 200.0 MiB (50%), 10.0 MiB/s, rows 5000, ETA 10s"
        );
    }
}
