//! Progress of a long step: the artifact's stored bytes as they stream.
//! On a terminal, a bar (bytes, rate, and ETA when the size is known, i.e.
//! on restore); otherwise a plain log line every [`LOG_EVERY`], so logs
//! collected by cron, systemd or Kubernetes stay readable.

use crate::step::human_size;
use crate::store::checksum::Meter;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often progress is logged when not on a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// How often a bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(250);

/// Shows progress until dropped.
pub struct Progress {
    done: CancellationToken,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// Starts showing the progress of `what` (e.g. "backup of shop"), `total`
/// stored bytes when known.
pub fn show(what: String, meter: Meter, total: Option<u64>) -> Progress {
    let done = CancellationToken::new();
    let stop = done.clone();
    if crate::logging::interactive() {
        tokio::spawn(bar(what, meter, total, stop));
    } else {
        tokio::spawn(log_lines(what, meter, total, stop));
    }
    Progress { done }
}

async fn bar(what: String, meter: Meter, total: Option<u64>, stop: CancellationToken) {
    use indicatif::{ProgressBar, ProgressStyle};
    let (bar, template) = match total {
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
    bar.set_message(what);
    loop {
        bar.set_position(meter.bytes());
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(DRAW_EVERY) => {}
        }
    }
    bar.finish_and_clear();
}

async fn log_lines(what: String, meter: Meter, total: Option<u64>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LOG_EVERY) => {}
        }
        tracing::info!("{}", line(&what, meter.bytes(), total, started.elapsed()));
    }
}

/// `backup of shop: 1.2 GiB of 3.0 GiB (40%), 85.0 MiB/s, ETA 22s`.
pub fn line(what: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let mut out = format!("{what}: {}", human_size(done));
    if let Some(total) = total.filter(|t| *t > 0) {
        let pct = (done as f64 / total as f64 * 100.0).min(100.0);
        out.push_str(&format!(" of {} ({pct:.0}%)", human_size(total)));
        out.push_str(&format!(", {}/s", human_size(rate as u64)));
        if rate > 0.0 && done < total {
            let eta = Duration::from_secs(((total - done) as f64 / rate) as u64);
            out.push_str(&format!(", ETA {}", humantime::format_duration(eta)));
        }
    } else {
        out.push_str(&format!(" so far, {}/s", human_size(rate as u64)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_rate_and_eta_when_the_size_is_known() {
        let mib = 1024 * 1024;
        assert_eq!(
            line(
                "restore of shop",
                100 * mib,
                Some(300 * mib),
                Duration::from_secs(10)
            ),
            "restore of shop: 100.0 MiB of 300.0 MiB (33%), 10.0 MiB/s, ETA 20s"
        );
        assert_eq!(
            line("backup of shop", 50 * mib, None, Duration::from_secs(5)),
            "backup of shop: 50.0 MiB so far, 10.0 MiB/s"
        );
    }
}
