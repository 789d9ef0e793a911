//! `envsync:plugin/log`: plugin log lines and progress, tagged with the
//! plugin's name.

use crate::runtime::bindings::envsync::plugin::log::{Host, Level};
use crate::runtime::sandbox::StepState;

/// Longest log line a plugin may emit; longer lines are cut so a plugin
/// cannot flood the operator's logs.
const MAX_LINE: usize = 8 * 1024;

impl Host for StepState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = self.plugin_name.as_str();
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        stage: String,
        done: u64,
        total: Option<u64>,
    ) -> wasmtime::Result<()> {
        let plugin = self.plugin_name.as_str();
        match total {
            Some(total) => tracing::debug!(plugin, stage, done, total, "progress"),
            None => tracing::debug!(plugin, stage, done, "progress"),
        }
        // The step's tracker shows it (bar, log lines, pushes, status).
        if let Some(tracker) = &self.progress {
            let mut stage = stage;
            stage.truncate(stage.floor_char_boundary(64));
            tracker.plugin_progress(&stage, done, total);
        }
        Ok(())
    }
}
