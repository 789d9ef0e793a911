//! Running up to `jobs` loaders or dumpers at once. The plugin is single
//! threaded: each session is a child program whose stream the host moves
//! in the background (`start-splice`), and the plugin waits for whichever
//! finishes first (`wait-any`) to start the next.

use envsync_plugin_sdk::{Error, Running, Transfer, wait_any};

/// A running session: its child and the transfer feeding or draining it.
pub struct Session {
    pub label: String,
    pub child: Running,
    pub transfer: Transfer,
}

impl Session {
    /// Waits for the transfer, then the child. The child's own failure is
    /// the cause when both failed.
    fn finish(self) -> Result<(), Error> {
        match self.transfer.wait() {
            Ok(_) => self
                .child
                .finish()
                .map_err(|e| e.context(self.label.clone())),
            Err(e) => {
                // Kill before it can act on a stream that ended early.
                self.child.kill();
                let e = match self.child.wait() {
                    Ok(status) => self.child.stream_failure(&status, e, true),
                    Err(_) => e,
                };
                Err(e.context(self.label))
            }
        }
    }

    fn abandon(self) {
        self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a session for each task with `start`, keeping up to `jobs`
/// running; stops everything at the first failure and returns it.
pub fn run<T>(
    jobs: usize,
    tasks: impl IntoIterator<Item = T>,
    start: impl FnMut(T) -> Result<Session, Error>,
) -> Result<(), Error> {
    run_reporting(jobs, tasks, start, |_| Ok(()))
}

/// [`run`], calling `finished` with the task's position after each
/// session that succeeded (to report progress or start what it unblocks:
/// the plugin gets control back only then); its error stops everything.
pub fn run_reporting<T>(
    jobs: usize,
    tasks: impl IntoIterator<Item = T>,
    mut start: impl FnMut(T) -> Result<Session, Error>,
    mut finished: impl FnMut(usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let jobs = jobs.max(1);
    let mut queue = tasks.into_iter().enumerate();
    let mut running: Vec<(usize, Session)> = Vec::new();
    let fail = |running: Vec<(usize, Session)>, e: Error| {
        for (_, session) in running {
            session.abandon();
        }
        Err(e)
    };
    loop {
        while running.len() < jobs {
            let Some((n, task)) = queue.next() else { break };
            match start(task) {
                Ok(session) => running.push((n, session)),
                Err(e) => return fail(running, e),
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        let transfers: Vec<&Transfer> = running.iter().map(|(_, s)| &s.transfer).collect();
        let done = match wait_any(&transfers) {
            Ok(done) => done as usize,
            Err(e) => return fail(running, e),
        };
        let (n, session) = running.swap_remove(done);
        if let Err(e) = session.finish().and_then(|()| finished(n)) {
            return fail(running, e);
        }
    }
}
