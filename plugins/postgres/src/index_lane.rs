//! Building a table's indexes as soon as all its rows are in, while the
//! other tables still load (what `pg_restore -j` does), instead of after
//! the last chunk. On a server with cores to spare this hides most of the
//! index builds behind the load.
//!
//! The lanes are up to `jobs` more psql sessions, started as tables
//! complete: each ready entry goes to the lane with the least work queued
//! (psql runs them in order as it reads its stdin), so what is still
//! queued when the data is in is spread over all of them. The plugin
//! cannot wait for a psql script without a transfer, but it need not: it
//! waits for the lanes only after the data. Writes never block the
//! loaders' scheduling: a lane takes at most [`LANE_TEXT_LIMIT`] bytes of
//! SQL, far less than a pipe holds; what does not fit is built after the
//! data as before.

use crate::post_data::{self, Entry};
use crate::swap::Replacement;
use envsync_plugin_sdk::{ByteSink, Error, Running, info, write_all};
use std::collections::BTreeMap;

/// SQL text a lane may be given before it is waited for: well below a
/// pipe's 64 KiB, so a write returns at once even while psql is busy.
const LANE_TEXT_LIMIT: usize = 32 << 10;

/// One table's pending index and constraint entries.
struct Table {
    chunks: usize,
    chunks_left: usize,
    entries: Vec<(String, Entry)>,
}

/// One psql session building indexes.
struct Lane {
    child: Running,
    stdin: ByteSink,
    written: usize,
    /// Work given so far: the chunks of each entry's table.
    queued: usize,
}

pub struct IndexLanes<'j> {
    job: &'j Replacement,
    setup: String,
    /// By [`post_data::table_key`].
    tables: BTreeMap<String, Table>,
    lanes: Vec<Lane>,
    most: usize,
    /// Entries the lanes took; the rest is built after the data.
    pub taken: usize,
}

impl<'j> IndexLanes<'j> {
    /// Up to `most` lanes for `entries` (independent ones, not yet built) over the
    /// tables with `chunks` (table names as the plan gives them, one per
    /// pending chunk). Entries of tables with no pending chunk stay out:
    /// their table is complete or empty, and they are built after the data
    /// with the rest. `entries` keeps what the lane did not take.
    pub fn new<'c>(
        job: &'j Replacement,
        setup: &str,
        most: usize,
        chunks: impl IntoIterator<Item = &'c str>,
        entries: &mut Vec<(String, Entry)>,
    ) -> IndexLanes<'j> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        for table in chunks {
            let t = tables.entry(post_data::table_key(table)).or_insert(Table {
                chunks: 0,
                chunks_left: 0,
                entries: Vec::new(),
            });
            t.chunks += 1;
            t.chunks_left += 1;
        }
        let mut rest = Vec::new();
        for (name, entry) in std::mem::take(entries) {
            let table = post_data::table_of(&entry).map(post_data::table_key);
            match table.and_then(|t| tables.get_mut(&t)) {
                Some(table) => table.entries.push((name, entry)),
                None => rest.push((name, entry)),
            }
        }
        *entries = rest;
        IndexLanes {
            job,
            setup: setup.to_string(),
            tables,
            lanes: Vec::new(),
            most: most.max(1),
            taken: 0,
        }
    }

    /// A chunk of `table` committed: once it was the table's last, each of
    /// its entries goes to the least busy lane (if it fits), so one table's
    /// indexes build side by side (`CREATE INDEX` locks do not conflict).
    pub fn chunk_loaded(&mut self, table: &str) -> Result<(), Error> {
        let key = post_data::table_key(table);
        let Some(t) = self.tables.get_mut(&key) else {
            return Ok(());
        };
        t.chunks_left = t.chunks_left.saturating_sub(1);
        if t.chunks_left > 0 || t.entries.is_empty() {
            return Ok(());
        }
        // A table's chunks stand for its size, and so for each index's cost.
        let weight = t.chunks;
        let ready = std::mem::take(&mut t.entries);
        let mut kept = Vec::new();
        for (name, entry) in ready {
            let script = crate::chunked_restore::entry_script(&name, &entry);
            if self.lanes.len() < self.most && self.lanes.iter().all(|l| l.queued > 0) {
                let lane = self.start()?;
                self.lanes.push(lane);
            }
            let lane = self
                .lanes
                .iter_mut()
                .filter(|l| l.written + script.len() <= LANE_TEXT_LIMIT)
                .min_by_key(|l| l.queued);
            // None has room: built after the data with the others.
            let Some(lane) = lane else {
                kept.push((name, entry));
                continue;
            };
            if let Err(e) = write_all(&lane.stdin, script.as_bytes()) {
                let status = lane.child.wait()?;
                return Err(lane
                    .child
                    .stream_failure(&status, e, false)
                    .context("building indexes while the other tables load"));
            }
            lane.written += script.len();
            lane.queued += weight;
            self.taken += 1;
        }
        self.tables.get_mut(&key).expect("present").entries = kept;
        Ok(())
    }

    fn start(&self) -> Result<Lane, Error> {
        if self.lanes.is_empty() {
            info(format!(
                "the indexes of each table are built as soon as its rows are in, in up to {} \
                 more session(s)",
                self.most
            ));
        }
        let (cmd, preamble) = self.job.psql_session();
        let mut child = cmd.stdin_piped().spawn()?;
        let stdin = child.take_stdin()?;
        let setup = format!("{preamble}{}\n", self.setup);
        write_all(&stdin, setup.as_bytes())?;
        Ok(Lane {
            child,
            stdin,
            written: setup.len(),
            queued: 0,
        })
    }

    /// The entries the lane did not take (tables that never completed, or
    /// past its text limit), for building after the data.
    pub fn left_over(&mut self) -> Vec<(String, Entry)> {
        std::mem::take(&mut self.tables)
            .into_values()
            .flat_map(|t| t.entries)
            .collect()
    }

    /// Lets the lanes finish what they were given and waits for them.
    pub fn finish(self) -> Result<(), Error> {
        let mut first_error = None;
        let mut open = Vec::new();
        for lane in self.lanes {
            match lane.stdin.close() {
                Ok(()) => open.push(lane.child),
                Err(e) => {
                    let failed = lane
                        .child
                        .wait()
                        .map(|status| lane.child.stream_failure(&status, e, false));
                    first_error.get_or_insert(failed.unwrap_or_else(|e| e));
                }
            }
        }
        for child in open {
            if let Err(e) = child.finish() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| {
            Err(e.context("building indexes while the other tables loaded"))
        })
    }

    /// Stops the lanes at once (the restore failed); what they committed
    /// stays recorded for a rerun.
    pub fn abandon(self) {
        for lane in self.lanes {
            drop(lane.stdin);
            lane.child.kill();
            let _ = lane.child.wait();
        }
    }
}
