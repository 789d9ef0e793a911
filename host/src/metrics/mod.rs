//! Job metrics: the Pushgateway client, the `/metrics` exposition and the
//! Prometheus alert rules (docs/metrics.md).
//!
//! The step runner builds one [`Pusher`] per process and, per step, calls
//! [`Pusher::started`] before the plugin runs and [`Pusher::finished`] when
//! the step ended — succeeded, failed, timed out or stopped. Neither ever
//! fails the step. The daemon serves [`Registry::render`] of
//! [`Pusher::registry`] as `/metrics` (content type [`CONTENT_TYPE`]).

pub mod exposition;
pub mod names;
pub mod pushgateway;
pub mod rules;

pub use exposition::{CONTENT_TYPE, GroupValues, ProgressValues, Registry, SharedRegistry};
pub use names::{Group, GroupingKey, State};
pub use pushgateway::{DEFAULT_TIMEOUT, Outcome, Pusher};
pub use rules::{AlertSettings, RuntimeClass, ScheduleClass, alert_rules};
