//! Running up to `jobs` child programs at once: the loaders (or dumpers)
//! of a parallel restore or backup. A plugin is single threaded, so each
//! session is a child whose stream the host moves in the background
//! (`start-splice`), and the plugin waits for whichever transfer ends first
//! (`wait-any`) to reap it and start the next; or, with [`run_in_lanes`],
//! each session is a child that takes task after task (`start-feed`).

use crate::{ByteSink, Error, ExitStatus, Running, Transfer, wait_any, wait_any_within, warn};
use std::time::{Duration, Instant};

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

/// A long-lived session that takes tasks one after another: one child (and
/// one database connection) for many chunks, each fed by `start-feed` and
/// committed by its own trailer, where [`run`] starts a child per task.
pub struct Lane {
    /// What the session is, for messages ("load session 2").
    pub label: String,
    /// The program.
    pub child: Running,
    /// Its stdin, where [`run_in_lanes`] feeds the tasks.
    pub stdin: ByteSink,
}

/// Work [`run_in_lanes`] does at least every `every` while its transfers
/// run, such as a progress report: otherwise the plugin gets control back
/// only when a task's transfer ends, which for a big chunk is minutes.
pub struct Pulse<'a> {
    /// The beat: `tick` is called this long after its last call.
    pub every: Duration,
    /// The work.
    pub tick: &'a mut dyn FnMut(),
}

/// Feeds `tasks` in order to up to `jobs` [`Lane`]s. `open(k)` starts lane
/// `k` (at most `jobs`, and no more than there are tasks; it may write a
/// session preamble). `feed` writes a task's header into the lane's stdin
/// and starts its transfer (`start-feed`). `fed(n)` is called with the
/// task's position once its transfer has ended and its lane has the next
/// task, so no lane waits while the plugin decides. At the end every lane's
/// stdin is closed and its child must exit with 0. The first failure stops
/// everything: every child is killed before it can commit what followed,
/// and the failure is returned with `label` of the task the lane was on.
///
/// `fed` is not "committed": the child may still be working through the
/// last bytes. A caller that starts dependent work on another connection
/// must rely on the database's locks to order the two. `pulse` ticks on
/// its own beat, whether or not transfers end in between.
pub fn run_in_lanes<T>(
    jobs: usize,
    tasks: &[T],
    label: impl Fn(&T) -> String,
    mut open: impl FnMut(usize) -> Result<Lane, Error>,
    mut feed: impl FnMut(&T, ByteSink) -> Result<Transfer, Error>,
    mut fed: impl FnMut(usize) -> Result<(), Error>,
    pulse: Pulse<'_>,
) -> Result<(), Error> {
    // On a steady beat, whenever transfers end in between.
    let mut next_pulse = Instant::now() + pulse.every;
    struct Open {
        label: String,
        child: Running,
        /// The lane's stdin while no transfer holds it.
        stdin: Option<ByteSink>,
        /// The task being fed, and its transfer.
        busy: Option<(usize, Transfer)>,
        /// The last task given, for messages.
        last: usize,
    }
    let fail = |lanes: Vec<Open>, e: Error| {
        for open in lanes {
            open.child.kill();
            let _ = open.child.wait();
        }
        Err(e)
    };
    // Where a lane failed. A child that failed by itself (`program-failed`)
    // may have failed on any earlier task whose bytes had gone in but which
    // it had not finished with (small tasks fit in the pipe's buffer): only
    // the caller can tell which were committed.
    let blame = |open: &Open, e: Error| {
        let on = label(&tasks[open.last]);
        match e {
            Error::ProgramFailed(_) => e.context(format!("{} at or before {on}", open.label)),
            _ => e.context(format!("{on} ({})", open.label)),
        }
    };
    // The failure of a lane whose stream broke: the child's own error when
    // it failed by itself, else the stream's.
    let broken = |open: &Open, e: Error| {
        let child = &open.child;
        child.kill();
        let e = match child.wait() {
            Ok(status) => child.stream_failure(&status, e, true),
            Err(_) => e,
        };
        blame(open, e)
    };
    let mut lanes: Vec<Open> = Vec::new();
    let mut queue = 0..tasks.len();
    // The task whose transfer just ended: reported once its lane has its
    // next task, so the lane does not wait for `fed`.
    let mut just_fed = None;
    loop {
        // Give every idle lane its next task, opening lanes as needed.
        while !queue.is_empty() {
            let k = match lanes.iter().position(|o| o.busy.is_none()) {
                Some(k) => k,
                None if lanes.len() < jobs.max(1) => {
                    match open(lanes.len()) {
                        Ok(Lane {
                            label,
                            child,
                            stdin,
                        }) => lanes.push(Open {
                            label,
                            child,
                            stdin: Some(stdin),
                            busy: None,
                            last: 0,
                        }),
                        Err(e) => return fail(lanes, e),
                    }
                    lanes.len() - 1
                }
                None => break,
            };
            let n = queue.next().expect("checked above");
            let stdin = lanes[k].stdin.take().expect("an idle lane holds its stdin");
            lanes[k].last = n;
            match feed(&tasks[n], stdin) {
                Ok(transfer) => lanes[k].busy = Some((n, transfer)),
                Err(e) => {
                    let e = broken(&lanes[k], e);
                    return fail(lanes, e);
                }
            }
        }
        if let Some(n) = just_fed.take()
            && let Err(e) = fed(n)
        {
            return fail(lanes, e);
        }
        let busy: Vec<usize> = (0..lanes.len())
            .filter(|&k| lanes[k].busy.is_some())
            .collect();
        if busy.is_empty() {
            break;
        }
        let transfers: Vec<&Transfer> = busy
            .iter()
            .map(|&k| &lanes[k].busy.as_ref().expect("busy").1)
            .collect();
        let k = loop {
            let left = next_pulse.saturating_duration_since(Instant::now());
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
            match wait_any_within(&transfers, left_ms) {
                Ok(Some(position)) => break busy[position as usize],
                Ok(None) => {
                    (pulse.tick)();
                    next_pulse = Instant::now() + pulse.every;
                }
                Err(e) => return fail(lanes, e),
            }
        };
        let (n, transfer) = lanes[k].busy.take().expect("busy");
        if let Err(e) = transfer.wait() {
            let e = broken(&lanes[k], e);
            return fail(lanes, e);
        }
        lanes[k].stdin = transfer.output();
        if lanes[k].stdin.is_none() {
            let e = Error::Other("the host did not give back a fed stream".into());
            return fail(lanes, e);
        }
        just_fed = Some(n);
    }
    // Every task is fed: end each lane's input so they all commit side by
    // side, then collect their exits.
    for k in 0..lanes.len() {
        if let Some(stdin) = lanes[k].stdin.take()
            && let Err(e) = stdin.close()
        {
            let e = broken(&lanes[k], e);
            return fail(lanes, e);
        }
    }
    let mut rest = lanes.into_iter();
    while let Some(open) = rest.next() {
        let failed = match open.child.wait() {
            Ok(status) if status.success => continue,
            Ok(status) => open.child.exit_error(&status),
            Err(e) => e,
        };
        let e = blame(&open, failed);
        return fail(rest.collect(), e);
    }
    Ok(())
}

/// Deals `items` (each with its cost) over at most `sessions` sessions,
/// the costliest first to the least loaded, so one big table's work does
/// not all wait in one session while the others idle. Items of equal cost
/// keep their order. Only for items that do not depend on each other;
/// there is always at least one share (empty when `items` is).
pub fn deal<T>(mut items: Vec<(u64, T)>, sessions: usize) -> Vec<Vec<T>> {
    let sessions = sessions.min(items.len()).max(1);
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    let mut load = vec![0u64; sessions];
    let mut shares: Vec<Vec<T>> = (0..sessions).map(|_| Vec::new()).collect();
    for (cost, item) in items {
        let least = (0..sessions)
            .min_by_key(|&k| load[k])
            .expect("at least one session");
        // Nothing costs nothing: free items still spread.
        load[least] += cost.max(1);
        shares[least].push(item);
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costliest_items_go_first_to_the_least_loaded_session() {
        let dealt = deal(vec![(1, "a"), (100, "big"), (60, "b"), (50, "c")], 2);
        assert_eq!(dealt, vec![vec!["big", "a"], vec!["b", "c"]]);
        // Equal costs keep their order; never more sessions than items.
        assert_eq!(
            deal(vec![(5, "x"), (5, "y")], 4),
            vec![vec!["x"], vec!["y"]]
        );
        assert_eq!(deal(Vec::<(u64, u8)>::new(), 4), vec![Vec::<u8>::new()]);
    }
}
