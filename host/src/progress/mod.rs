//! Progress of a running step, from one source: a [`Tracker`] per step.
//!
//! The step runner attaches the artifact's byte [`Meter`] (and the exact
//! size on restore), the chunks of a chunked artifact add theirs as they
//! are written or read ([`Tracker::add_chunk`]), the plugin adds its rows or documents through
//! `log.progress`, and the reporter adds the previous success's size as the
//! expected total. Everyone who shows progress reads the same
//! [`Snapshot`]: the terminal bar and log lines ([`display`]), the
//! Pushgateway's progress gauges (`jobs::report`) and the running-step files
//! that `status` and the status page read ([`running`]).

pub mod display;
pub mod running;

use crate::store::checksum::Meter;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use display::{Display, LOG_EVERY, line};

/// How often a running step's progress is pushed and written for `status`
/// unless the environment sets `progress_interval`.
pub const PUSH_EVERY: Duration = Duration::from_secs(30);

/// The progress of one step; cheap to clone, shared by everyone who
/// updates or shows it.
#[derive(Clone, Default)]
pub struct Tracker(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker")
    }
}

#[derive(Default)]
struct Inner {
    what: Option<String>,
    /// When the byte stream began (rates and ETAs count from here).
    streaming_since: Option<Instant>,
    meter: Option<Meter>,
    /// Bytes of a stream that has ended (the meter is gone then).
    bytes_done: u64,
    /// The chunks written or read so far (their meters outlive them).
    chunks: Vec<Meter>,
    /// The artifact's exact stored size (restore).
    exact_total: Option<u64>,
    /// The previous successful run's size (backup, copy).
    expected_total: Option<u64>,
    plugin: Option<PluginProgress>,
}

/// What the plugin last reported through `log.progress`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PluginProgress {
    stage: String,
    done: u64,
    total: Option<u64>,
}

/// The progress of a step at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// E.g. `restore of shop`.
    pub what: String,
    /// Artifact bytes streamed so far, its chunks' included (stored, i.e.
    /// compressed, bytes).
    pub bytes: u64,
    /// The bytes expected in all: the artifact's size on restore (with
    /// its chunks' stored sizes), else the
    /// previous successful run's size; none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
    /// Whether `expected_bytes` is a guess from the previous run.
    #[serde(default)]
    pub expected_is_estimate: bool,
    /// The plugin's stage (e.g. `loading`), rows or documents done and
    /// their total, as it last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_total: Option<u64>,
    /// Seconds since the bytes began to stream.
    pub elapsed_seconds: f64,
    pub bytes_per_second: f64,
    /// Seconds left at the current rate, when a total is known and not yet
    /// reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The artifact's bytes start to stream through `meter`; `total` is
    /// their exact number when known (restore). Shows a bar or log lines
    /// until the returned [`Display`] is dropped, which also ends the
    /// stream's count.
    pub fn stream(&self, what: String, meter: Meter, total: Option<u64>) -> Display {
        {
            let mut inner = self.lock();
            inner.what = Some(what);
            inner.streaming_since = Some(Instant::now());
            inner.meter = Some(meter);
            inner.bytes_done = 0;
            inner.chunks.clear();
            inner.exact_total = total;
        }
        display::show(self.clone())
    }

    /// A chunk of the artifact is being written or read through `meter`:
    /// its stored bytes count with the main stream's.
    pub fn add_chunk(&self, meter: Meter) {
        self.lock().chunks.push(meter);
    }

    /// The stream ended: keep its final count, drop the meter.
    fn stream_ended(&self) {
        let mut inner = self.lock();
        if let Some(meter) = inner.meter.take() {
            inner.bytes_done = meter.bytes();
        }
    }

    /// The previous successful run moved `bytes`: the expected total when
    /// the exact one is unknown.
    pub fn expect(&self, bytes: u64) {
        self.lock().expected_total = Some(bytes).filter(|b| *b > 0);
    }

    /// The plugin reports `done` of `total` rows or documents in `stage`.
    pub fn plugin_progress(&self, stage: &str, done: u64, total: Option<u64>) {
        self.lock().plugin = Some(PluginProgress {
            stage: stage.to_string(),
            done,
            total,
        });
    }

    /// The progress now; `None` before anything streamed or was reported.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let inner = self.lock();
        if inner.what.is_none() && inner.plugin.is_none() {
            return None;
        }
        let bytes = inner.meter.as_ref().map_or(inner.bytes_done, Meter::bytes)
            + inner.chunks.iter().map(Meter::bytes).sum::<u64>();
        let elapsed = inner
            .streaming_since
            .map_or(Duration::ZERO, |s| s.elapsed());
        let (expected, estimate) = match (inner.exact_total, inner.expected_total) {
            (Some(t), _) => (Some(t), false),
            (None, Some(t)) => (Some(t), true),
            (None, None) => (None, false),
        };
        Some(measure(
            inner.what.clone().unwrap_or_else(|| "step".into()),
            bytes,
            expected,
            estimate,
            elapsed,
            inner.plugin.clone(),
        ))
    }
}

/// A snapshot from raw counts: the rate over `elapsed`, and the ETA from
/// the bytes left (or, without a byte total, the plugin's items left).
fn measure(
    what: String,
    bytes: u64,
    expected: Option<u64>,
    estimate: bool,
    elapsed: Duration,
    plugin: Option<PluginProgress>,
) -> Snapshot {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    let left = |done: u64, total: u64| -> Option<f64> {
        // Nothing done yet says nothing about the rate; past an estimated
        // total there is no honest guess either.
        (done > 0 && done < total && secs > 0.0).then(|| (total - done) as f64 * secs / done as f64)
    };
    let eta = expected
        .and_then(|t| left(bytes, t))
        .or_else(|| plugin.as_ref().and_then(|p| left(p.done, p.total?)));
    Snapshot {
        what,
        bytes,
        expected_bytes: expected,
        expected_is_estimate: estimate,
        stage: plugin.as_ref().map(|p| p.stage.clone()),
        items: plugin.as_ref().map(|p| p.done),
        items_total: plugin.as_ref().and_then(|p| p.total),
        elapsed_seconds: secs,
        bytes_per_second: rate,
        eta_seconds: eta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_eta_comes_from_bytes_left_at_the_rate_so_far() {
        let s = measure(
            "restore of shop".into(),
            100,
            Some(300),
            false,
            Duration::from_secs(10),
            None,
        );
        assert_eq!(s.bytes_per_second, 10.0);
        assert_eq!(s.eta_seconds, Some(20.0));
        // Past an estimated total: no ETA rather than a negative one.
        let s = measure(
            "b".into(),
            400,
            Some(300),
            true,
            Duration::from_secs(10),
            None,
        );
        assert_eq!(s.eta_seconds, None);
        // Without a byte total, the plugin's rows give the ETA.
        let rows = PluginProgress {
            stage: "loading".into(),
            done: 25,
            total: Some(100),
        };
        let s = measure(
            "b".into(),
            5,
            None,
            false,
            Duration::from_secs(5),
            Some(rows),
        );
        assert_eq!(s.eta_seconds, Some(15.0));
        assert_eq!(s.items, Some(25));
        assert_eq!(s.stage.as_deref(), Some("loading"));
    }

    #[test]
    fn progress_tracker_prefers_the_exact_total_and_keeps_the_final_count() {
        let t = Tracker::new();
        assert!(t.snapshot().is_none());
        t.expect(1000);
        t.plugin_progress("documents", 7, None);
        let s = t.snapshot().unwrap();
        assert_eq!(
            (s.expected_bytes, s.expected_is_estimate),
            (Some(1000), true)
        );
        assert_eq!(s.items, Some(7));
        t.lock().exact_total = Some(900);
        t.lock().what = Some("restore of x".into());
        let s = t.snapshot().unwrap();
        assert_eq!(
            (s.expected_bytes, s.expected_is_estimate),
            (Some(900), false)
        );
        t.lock().bytes_done = 900;
        t.stream_ended();
        assert_eq!(t.snapshot().unwrap().bytes, 900);
    }
}
