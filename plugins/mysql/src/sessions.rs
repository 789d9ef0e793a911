//! Running up to `jobs` loaders at once. The plugin is single threaded:
//! each session is a client whose input the host moves in the background
//! (`start-splice`), and the plugin waits for whichever finishes first
//! (`wait-any`) to start the next.

use crate::swap::load_error;
use envsync_plugin_sdk::{Error, Running, Transfer, wait_any, warn};

/// A running session: its child and the transfer feeding it.
pub struct Session {
    pub label: String,
    pub program: &'static str,
    pub child: Running,
    pub transfer: Transfer,
}

impl Session {
    /// Waits for the transfer, then the child. The child's own failure is
    /// the cause when both failed.
    fn finish(self) -> Result<(), Error> {
        match self.transfer.wait() {
            Ok(_) => {
                let status = self.child.wait()?;
                if status.success {
                    Ok(())
                } else {
                    Err(load_error(self.program, &status).context(self.label))
                }
            }
            Err(e) => {
                // Killed before it sees end of input: its transaction, which
                // never got its COMMIT, is rolled back.
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

/// How often one task is started again after InnoDB chose it as a
/// deadlock victim.
const DEADLOCK_RETRIES: u32 = 5;

/// Starts a session for each task with `start`, keeping up to `jobs`
/// running; stops everything at the first failure and returns it. A task
/// whose load InnoDB broke off as a deadlock victim (sessions inserting
/// into one table can lock each other's index gaps) is started again: its
/// transaction, bookkeeping row included, was rolled back whole.
pub fn run<T: Clone>(
    jobs: usize,
    tasks: impl IntoIterator<Item = T>,
    mut start: impl FnMut(T) -> Result<Session, Error>,
) -> Result<(), Error> {
    let jobs = jobs.max(1);
    let mut queue = tasks.into_iter();
    let mut again: Vec<(T, u32)> = Vec::new();
    let mut running: Vec<(Session, T, u32)> = Vec::new();
    let fail = |running: Vec<(Session, T, u32)>, e: Error| {
        for (session, _, _) in running {
            session.abandon();
        }
        Err(e)
    };
    loop {
        while running.len() < jobs {
            let (task, tries) = match again.pop() {
                Some(retry) => retry,
                None => match queue.next() {
                    Some(task) => (task, 0),
                    None => break,
                },
            };
            match start(task.clone()) {
                Ok(session) => running.push((session, task, tries)),
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
        let (session, task, tries) = running.swap_remove(done);
        let label = session.label.clone();
        if let Err(e) = session.finish() {
            if is_deadlock(&e) && tries < DEADLOCK_RETRIES {
                warn(format!(
                    "{label}: chosen as a deadlock victim by the server; loading it again ({} of {DEADLOCK_RETRIES})",
                    tries + 1
                ));
                again.push((task, tries + 1));
                continue;
            }
            return fail(running, e);
        }
    }
}

/// MariaDB's "Deadlock found when trying to get lock" (1213, SQLSTATE 40001).
fn is_deadlock(e: &Error) -> bool {
    let message = e.message();
    message.contains("ERROR 1213") || message.contains("Deadlock found when trying to get lock")
}
