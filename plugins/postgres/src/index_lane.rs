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
//!
//! Foreign keys of plain tables follow as soon as both their tables are in:
//! a referenced table's keys all go to one lane, and the foreign key (added
//! `NOT VALID`, then validated) to that lane after them, so psql's order
//! guarantees the key exists. The plugin never learns when a lane commits
//! anything, so this order is the only dependency a lane may rely on.

use crate::chunked_restore::{entry_script, wait_for_chunks_sql};
use crate::post_data::{self, Entry, ForeignKey};
use crate::swap::Replacement;
use envsync_plugin_sdk::{ByteSink, Error, Running, info, write_all};
use std::collections::{BTreeMap, BTreeSet};

/// SQL text a lane may be given before it is waited for: well below a
/// pipe's 64 KiB, so a write returns at once even while psql is busy.
const LANE_TEXT_LIMIT: usize = 32 << 10;

/// One table's pending index and constraint entries.
struct Table {
    chunks: usize,
    chunks_left: usize,
    /// Its chunks' names (a partitioned table's: its partitions').
    chunk_names: Vec<String>,
    entries: Vec<(String, Entry)>,
    /// A foreign key waiting for the lanes references this table.
    referenced: bool,
    /// All its rows are in and its entries were dealt.
    dealt: bool,
    /// The lane its keys went to, if it had any.
    keys_lane: Option<usize>,
    /// A key did not fit in that lane: foreign keys referencing this table
    /// wait for the data.
    keys_kept: bool,
    /// A partitioned table: its chunks are its partitions'.
    partitioned: bool,
}

impl Table {
    fn new(partitioned: bool) -> Table {
        Table {
            chunks: 0,
            chunks_left: 0,
            chunk_names: Vec::new(),
            entries: Vec::new(),
            referenced: false,
            dealt: false,
            keys_lane: None,
            keys_kept: false,
            partitioned,
        }
    }
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
    /// Foreign keys whose tables are not both in yet.
    foreign_keys: Vec<ForeignKey>,
    /// The partitioned tables above each partition, by table key.
    ancestors: BTreeMap<String, Vec<String>>,
    lanes: Vec<Lane>,
    most: usize,
    /// Entries the lanes took; the rest is built after the data.
    pub taken: usize,
    /// Bookkeeping names of the foreign-key entries the lanes took.
    pub foreign_keys_taken: BTreeSet<String>,
    /// Foreign keys the lanes took.
    pub foreign_keys_started: usize,
}

impl<'j> IndexLanes<'j> {
    /// Up to `most` lanes for `entries` (independent ones, not yet built) and
    /// `foreign_keys` over the tables of the plan's `chunks` (each chunk's
    /// table as the plan names it, and whether the chunk is still to load)
    /// and the partitioned tables above them (`ancestors`, by
    /// [`post_data::table_key`]). Entries of other tables (an empty one)
    /// stay out: they are built after the data with the rest; so are
    /// foreign keys on such tables, and those referencing a partitioned
    /// table (its key is complete only once its partitions' indexes are
    /// attached, after the data). `entries` keeps what the lane did not
    /// take. Tables whose chunks are all loaded (a resumed restore) go to
    /// the lanes at [`Self::begin`].
    pub fn new<'c>(
        job: &'j Replacement,
        setup: &str,
        most: usize,
        chunks: impl IntoIterator<Item = (&'c str, &'c str, bool)>,
        ancestors: BTreeMap<String, Vec<String>>,
        entries: &mut Vec<(String, Entry)>,
        foreign_keys: Vec<ForeignKey>,
    ) -> IndexLanes<'j> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        for (table, chunk, pending) in chunks {
            let key = post_data::table_key(table);
            let mut count = |key: &String, partitioned: bool| {
                let t = tables
                    .entry(key.clone())
                    .or_insert_with(|| Table::new(partitioned));
                t.chunks += 1;
                t.chunks_left += usize::from(pending);
                t.chunk_names.push(chunk.to_string());
            };
            count(&key, false);
            for parent in ancestors.get(&key).into_iter().flatten() {
                count(parent, true);
            }
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
        let foreign_keys: Vec<ForeignKey> = foreign_keys
            .into_iter()
            .filter(|fk| {
                let from = post_data::table_key(&fk.table);
                let to = post_data::table_key(&fk.referenced);
                tables.contains_key(&from) && tables.get(&to).is_some_and(|t| !t.partitioned)
            })
            .collect();
        for fk in &foreign_keys {
            let to = post_data::table_key(&fk.referenced);
            tables.get_mut(&to).expect("kept above").referenced = true;
        }
        IndexLanes {
            job,
            setup: setup.to_string(),
            tables,
            foreign_keys,
            ancestors,
            lanes: Vec::new(),
            most: most.max(1),
            taken: 0,
            foreign_keys_taken: BTreeSet::new(),
            foreign_keys_started: 0,
        }
    }

    /// Hands the lanes the entries of tables whose rows were all loaded
    /// before (by the interrupted restore a rerun resumes), and the foreign
    /// keys between them, so they build while the rest loads.
    pub fn begin(&mut self) -> Result<(), Error> {
        let complete: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, t)| t.chunks_left == 0)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &complete {
            self.deal(key)?;
        }
        self.release_foreign_keys()
    }

    /// A chunk of `table` was fed to a load session (its COPY may still be
    /// waiting in that session's pipe): once it was the table's last, each
    /// of its entries goes to the least busy lane (if it fits), so one
    /// table's indexes build side by side (`CREATE INDEX` locks do not
    /// conflict); then the foreign keys whose tables are now both in. Each
    /// waits for the table's COPYs without queueing for its lock
    /// ([`Entry::without_queueing`]), so no COPY waits behind a build.
    /// A partitioned table is in once all its partitions are.
    pub fn chunk_loaded(&mut self, table: &str) -> Result<(), Error> {
        let key = post_data::table_key(table);
        if !self.tables.contains_key(&key) {
            return Ok(());
        }
        let above = self.ancestors.get(&key).cloned().unwrap_or_default();
        for key in std::iter::once(key).chain(above) {
            let t = self
                .tables
                .get_mut(&key)
                .expect("tracked with its partitions");
            t.chunks_left = t.chunks_left.saturating_sub(1);
            if t.chunks_left == 0 {
                self.deal(&key)?;
            }
        }
        self.release_foreign_keys()
    }

    /// Deals the entries of table `key`, whose rows are all in.
    fn deal(&mut self, key: &str) -> Result<(), Error> {
        let t = self.tables.get_mut(key).expect("a tracked table");
        t.dealt = true;
        // A table's chunks stand for its size, and so for each index's cost.
        let weight = t.chunks;
        let referenced = t.referenced;
        let ready = std::mem::take(&mut t.entries);
        let (mut kept, mut keys_lane, mut keys_kept) = (Vec::new(), None, false);
        for (name, entry) in ready {
            let script = entry_script(&name, &entry.without_queueing());
            let one_lane = referenced && entry.is_key();
            let lane = match keys_lane {
                Some(lane) if one_lane => self.has_room(lane, &script).then_some(lane),
                _ => self.least_busy(&script)?,
            };
            // None has room: built after the data with the others.
            let Some(lane) = lane else {
                keys_kept |= one_lane;
                kept.push((name, entry));
                continue;
            };
            self.give(lane, &script, weight)?;
            self.taken += 1;
            if one_lane {
                keys_lane = Some(lane);
            }
        }
        let t = self.tables.get_mut(key).expect("a tracked table");
        t.entries = kept;
        t.keys_lane = keys_lane;
        t.keys_kept = keys_kept;
        Ok(())
    }

    /// Hands each foreign key whose tables are both dealt to the lane of
    /// the referenced table's keys (any lane if it had none): the add and
    /// the validation, each committed with its bookkeeping row.
    fn release_foreign_keys(&mut self) -> Result<(), Error> {
        for fk in std::mem::take(&mut self.foreign_keys) {
            let from = &self.tables[&post_data::table_key(&fk.table)];
            let to = &self.tables[&post_data::table_key(&fk.referenced)];
            if !(from.dealt && to.dealt) {
                self.foreign_keys.push(fk);
                continue;
            }
            if to.keys_kept {
                continue;
            }
            let (weight, keys_lane) = (from.chunks + to.chunks, to.keys_lane);
            // "In" means fed: a last chunk may still wait in a load
            // session's pipe, where no lock shows it. An index built
            // before its COPY is kept up to date by it; a foreign key is
            // not, so it first waits for every chunk of both tables to
            // commit.
            let chunks: Vec<String> = from
                .chunk_names
                .iter()
                .chain(&to.chunk_names)
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let add = Entry {
                kind: fk.add.1.kind.clone(),
                sql: format!(
                    "{}{}{}",
                    wait_for_chunks_sql(&chunks),
                    fk.lock_sql(),
                    fk.add.1.sql
                ),
                index_first: None,
            };
            let mut script = entry_script(&fk.add.0, &add);
            if let Some((name, validate)) = &fk.validate {
                script.push_str(&entry_script(name, validate));
            }
            let lane = match keys_lane {
                Some(lane) => self.has_room(lane, &script).then_some(lane),
                None => self.least_busy(&script)?,
            };
            // No room: added and validated after the data.
            let Some(lane) = lane else { continue };
            self.give(lane, &script, weight)?;
            self.foreign_keys_started += 1;
            self.foreign_keys_taken.insert(fk.add.0);
            self.foreign_keys_taken
                .extend(fk.validate.map(|(name, _)| name));
        }
        Ok(())
    }

    fn has_room(&self, lane: usize, script: &str) -> bool {
        self.lanes[lane].written + script.len() <= LANE_TEXT_LIMIT
    }

    /// The lane with the least work queued that has room for `script`,
    /// after starting another if every lane is busy and more are allowed.
    fn least_busy(&mut self, script: &str) -> Result<Option<usize>, Error> {
        if self.lanes.len() < self.most && self.lanes.iter().all(|l| l.queued > 0) {
            let lane = self.start()?;
            self.lanes.push(lane);
        }
        Ok((0..self.lanes.len())
            .filter(|&lane| self.has_room(lane, script))
            .min_by_key(|&lane| self.lanes[lane].queued))
    }

    /// Writes `script` to `lane` (it has room: see [`Self::has_room`]).
    fn give(&mut self, lane: usize, script: &str, weight: usize) -> Result<(), Error> {
        let lane = &mut self.lanes[lane];
        if let Err(e) = write_all(&lane.stdin, script.as_bytes()) {
            let status = lane.child.wait()?;
            return Err(lane
                .child
                .stream_failure(&status, e, false)
                .context("building indexes while the other tables load"));
        }
        lane.written += script.len();
        lane.queued += weight;
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
