//! Running up to `jobs` child programs at once: the loaders (or dumpers)
//! of a parallel restore or backup. A plugin is single threaded, so each
//! session is a child whose stream the host moves in the background
//! (`start-splice`), and the plugin waits for whichever transfer ends first
//! (`wait-any`) to reap it and start the next.

use crate::{Error, ExitStatus, Running, Transfer, wait_any, warn};

/// A running session: its child and the transfer feeding or draining it.
pub struct Session {
    /// What the session does, for messages ("loading chunk data-00003").
    pub label: String,
    /// The program.
    pub child: Running,
    /// The stream into or out of it; its end is what [`run`] waits for.
    pub transfer: Transfer,
}

/// How a run reads its sessions' failures.
pub struct Policy {
    /// The error for a child that exited unsuccessfully after its stream
    /// was whole (e.g. to recognise a truncated input); by default its
    /// exit status and the tail of its stderr.
    pub explain: fn(&Running, &ExitStatus) -> Error,
    /// Failures worth starting the same task again (its transaction was
    /// rolled back whole, e.g. a deadlock victim), up to `retries` times.
    pub retry_when: fn(&Error) -> bool,
    /// How often one task is started again at most.
    pub retries: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            explain: |child, status| child.exit_error(status),
            retry_when: |_| false,
            retries: 0,
        }
    }
}

impl Session {
    /// Waits for the transfer, then the child. The child's own failure is
    /// the cause when both failed.
    fn finish(self, policy: &Policy) -> Result<(), Error> {
        match self.transfer.wait() {
            Ok(_) => {
                let status = self.child.wait()?;
                if status.success {
                    Ok(())
                } else {
                    Err((policy.explain)(&self.child, &status).context(self.label))
                }
            }
            Err(e) => {
                // Killed before it sees end of input (or reads on): a
                // loader's transaction, which never got its COMMIT, is
                // rolled back.
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
    mut start: impl FnMut(T) -> Result<Session, Error>,
) -> Result<(), Error> {
    let mut tasks: Vec<Option<T>> = tasks.into_iter().map(Some).collect();
    let count = tasks.len();
    // The default policy starts each task once.
    drive(
        jobs,
        &Policy::default(),
        count,
        |n| start(tasks[n].take().expect("each task starts once")),
        |_| Ok(()),
    )
}

/// [`run`] under `policy`, calling `finished` with the task's position
/// after each session that succeeded (to report progress or start what it
/// unblocks: the plugin gets control back only then); its error stops
/// everything. A task `policy` retries is started again as soon as a
/// session is free.
pub fn run_with<T>(
    jobs: usize,
    policy: &Policy,
    tasks: &[T],
    mut start: impl FnMut(&T) -> Result<Session, Error>,
    finished: impl FnMut(usize) -> Result<(), Error>,
) -> Result<(), Error> {
    drive(jobs, policy, tasks.len(), |n| start(&tasks[n]), finished)
}

/// The scheduler: tasks are positions `0..count`.
fn drive(
    jobs: usize,
    policy: &Policy,
    count: usize,
    mut start: impl FnMut(usize) -> Result<Session, Error>,
    mut finished: impl FnMut(usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let jobs = jobs.max(1);
    let mut queue = 0..count;
    // Positions to start again, with the tries so far.
    let mut again: Vec<(usize, u32)> = Vec::new();
    let mut running: Vec<(Session, usize, u32)> = Vec::new();
    let fail = |running: Vec<(Session, usize, u32)>, e: Error| {
        for (session, _, _) in running {
            session.abandon();
        }
        Err(e)
    };
    loop {
        while running.len() < jobs {
            let (n, tries) = match again.pop() {
                Some(retry) => retry,
                None => match queue.next() {
                    Some(n) => (n, 0),
                    None => break,
                },
            };
            match start(n) {
                Ok(session) => running.push((session, n, tries)),
                Err(e) => return fail(running, e),
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        let transfers: Vec<&Transfer> = running.iter().map(|(s, _, _)| &s.transfer).collect();
        let done = match wait_any(&transfers) {
            Ok(done) => done as usize,
            Err(e) => return fail(running, e),
        };
        let (session, n, tries) = running.swap_remove(done);
        let label = session.label.clone();
        match session.finish(policy) {
            Ok(()) => {
                if let Err(e) = finished(n) {
                    return fail(running, e);
                }
            }
            Err(e) if (policy.retry_when)(&e) && tries < policy.retries => {
                warn(format!(
                    "{label}: {}; starting it again ({} of {})",
                    e.message(),
                    tries + 1,
                    policy.retries
                ));
                again.push((n, tries + 1));
            }
            Err(e) => return fail(running, e),
        }
    }
}
