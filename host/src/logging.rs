//! Human logs by default, one JSON object per line for machines.

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;

/// Human logs on a terminal: progress is drawn as bars, not logged.
static INTERACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether an operator watches: human log format on a terminal.
pub fn interactive() -> bool {
    INTERACTIVE.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Logs go to stderr; stdout is kept for command output. `ENVSYNC_LOG`
/// (e.g. `debug`) overrides the level.
pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("ENVSYNC_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            // aws_config warns, in Debug form, about every credential
            // source it tries; the store names a missing credential itself.
            "{default},wasmtime=warn,cranelift=warn,cranelift_codegen=warn,aws_config=error"
        ))
    });
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    INTERACTIVE.store(
        terminal
            && format == LogFormat::Human
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb"),
        Ordering::Relaxed,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
