//! Stopping cleanly: SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C)
//! cancel a token that every running step watches. The step's plugin is
//! stopped as at its deadline, its programs are killed, an upload in
//! progress is aborted, and the step is reported failed; the pointer to the
//! latest backup never moves.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits
/// at once (exit code 6) for an operator who cannot wait for the clean stop.
pub fn stop_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let stop = token.clone();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT: a signal will end the process abruptly");
        return token;
    };
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            "{name} received: stopping the running step (it will be reported failed); send it again to exit at once"
        );
        stop.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::error!("second signal: exiting without waiting for the step to stop");
        std::process::exit(crate::failure::Kind::Stopped.exit_code());
    });
    token
}
