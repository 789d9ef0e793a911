//! Building a table's indexes as soon as all its rows are in, while the
//! other tables still load (what `pg_restore -j` does), instead of after
//! the last chunk. On a server with cores to spare this hides most of the
//! index builds behind the load.
//!
//! The lane is one more psql session, fed entry by entry as tables
//! complete. The plugin cannot wait for a psql script without a transfer,
//! but it does not need to: it writes each ready table's entries to the
//! session's stdin (psql runs them in order as it reads them) and waits
//! for the session only after the data. Writes never block the loaders'
//! scheduling: the lane takes at most [`LANE_TEXT_LIMIT`] bytes of SQL, far
//! less than a pipe holds; what does not fit is built after the data as
//! before.

use crate::post_data::{self, Entry};
use crate::swap::Replacement;
use envsync_plugin_sdk::{ByteSink, Error, Running, info, write_all};
use std::collections::BTreeMap;

/// SQL text the lane may be given before it is waited for: well below a
/// pipe's 64 KiB, so a write returns at once even while psql is busy.
const LANE_TEXT_LIMIT: usize = 32 << 10;

/// One table's pending index and constraint entries.
struct Table {
    chunks_left: usize,
    entries: Vec<(String, Entry)>,
}

pub struct IndexLane<'j> {
    job: &'j Replacement,
    setup: String,
    /// By [`post_data::table_key`].
    tables: BTreeMap<String, Table>,
    session: Option<(Running, ByteSink)>,
    written: usize,
    /// Entries the lane took; the rest is built after the data.
    pub taken: usize,
}

impl<'j> IndexLane<'j> {
    /// A lane for `entries` (independent ones, not yet built) over the
    /// tables with `chunks` (table names as the plan gives them, one per
    /// pending chunk). Entries of tables with no pending chunk stay out:
    /// their table is complete or empty, and they are built after the data
    /// with the rest. `entries` keeps what the lane did not take.
    pub fn new<'c>(
        job: &'j Replacement,
        setup: &str,
        chunks: impl IntoIterator<Item = &'c str>,
        entries: &mut Vec<(String, Entry)>,
    ) -> IndexLane<'j> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        for table in chunks {
            tables
                .entry(post_data::table_key(table))
                .or_insert(Table {
                    chunks_left: 0,
                    entries: Vec::new(),
                })
                .chunks_left += 1;
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
        IndexLane {
            job,
            setup: setup.to_string(),
            tables,
            session: None,
            written: 0,
            taken: 0,
        }
    }

    /// A chunk of `table` committed: once it was the table's last, its
    /// entries go to the lane (if they fit).
    pub fn chunk_loaded(&mut self, table: &str) -> Result<(), Error> {
        let key = post_data::table_key(table);
        let Some(t) = self.tables.get_mut(&key) else {
            return Ok(());
        };
        t.chunks_left = t.chunks_left.saturating_sub(1);
        if t.chunks_left > 0 {
            return Ok(());
        }
        let ready = std::mem::take(&mut t.entries);
        let script = crate::chunked_restore::entries_script(&ready);
        if ready.is_empty() || self.written + script.len() > LANE_TEXT_LIMIT {
            // Built after the data with the others.
            self.tables.get_mut(&key).expect("present").entries = ready;
            return Ok(());
        }
        if self.session.is_none() {
            self.session = Some(self.start()?);
        }
        let (child, stdin) = self.session.as_ref().expect("started");
        if let Err(e) = write_all(stdin, script.as_bytes()) {
            let status = child.wait()?;
            return Err(child
                .stream_failure(&status, e, false)
                .context("building indexes while the other tables load"));
        }
        self.written += script.len();
        self.taken += ready.len();
        Ok(())
    }

    fn start(&self) -> Result<(Running, ByteSink), Error> {
        info("the indexes of each table are built as soon as its rows are in, in one more session");
        let (cmd, preamble) = self.job.psql_session();
        let mut child = cmd.stdin_piped().spawn()?;
        let stdin = child.take_stdin()?;
        write_all(&stdin, format!("{preamble}{}\n", self.setup).as_bytes())?;
        Ok((child, stdin))
    }

    /// The entries the lane did not take (tables that never completed, or
    /// past its text limit), for building after the data.
    pub fn left_over(&mut self) -> Vec<(String, Entry)> {
        std::mem::take(&mut self.tables)
            .into_values()
            .flat_map(|t| t.entries)
            .collect()
    }

    /// Lets the lane finish what it was given and waits for it.
    pub fn finish(self) -> Result<(), Error> {
        let Some((child, stdin)) = self.session else {
            return Ok(());
        };
        let closed = stdin.close();
        drop(stdin);
        let result = match closed {
            Ok(()) => child.finish(),
            Err(e) => {
                let status = child.wait()?;
                Err(child.stream_failure(&status, e, false))
            }
        };
        result.map_err(|e| e.context("building indexes while the other tables loaded"))
    }

    /// Stops the lane at once (the restore failed); what it committed stays
    /// recorded for a rerun.
    pub fn abandon(self) {
        if let Some((child, stdin)) = self.session {
            drop(stdin);
            child.kill();
            let _ = child.wait();
        }
    }
}
