//! Restoring a chunked artifact (docs/decisions/0019) into the scratch
//! database: the schema before the data, then the data chunks with `jobs`
//! sessions at once, then indexes and constraints with `jobs` sessions,
//! then the rest of the schema; the swap is `swap`'s.
//!
//! Resume: the scratch database holds a bookkeeping schema naming the
//! artifact and every chunk (and post-data entry) already committed. Each
//! chunk's row is inserted in the same transaction as its COPY, so a chunk
//! is either loaded and recorded or neither; a rerun of the same artifact
//! skips what is recorded. The schema is dropped before the swap.

use crate::index_lane::IndexLanes;
use crate::load_progress::RowMeter;
use crate::plan::{DataChunk, Plan};
use crate::post_data::{self, Entry, ForeignKey};
use crate::sql::literal;
use crate::swap::{Replacement, replace_target_resumable};
use envsync_plugin_sdk::sessions::{self, Lane, Session};
use envsync_plugin_sdk::{
    ByteSink, ByteSource, Error, Transfer, chunks, info, job, read_all, start_feed, start_splice,
    write_all,
};
use std::collections::{BTreeMap, BTreeSet};

/// The bookkeeping schema in the scratch database.
const BOOKKEEPING: &str = "envsync_restore";
/// Largest plan or post-data section read into memory.
const TEXT_LIMIT: usize = 256 << 20;

/// Session settings the rows are dumped and loaded with on both sides, so
/// their text form does not depend on server or client defaults (as
/// pg_dump sets them). Row security off: a dump never silently skips rows
/// (it fails instead).
pub const SESSION_SETTINGS: &str = "SET datestyle = ISO;\nSET intervalstyle = postgres;\n\
SET extra_float_digits = 3;\nSET row_security = off;\n";

/// [`SESSION_SETTINGS`] with the source's encoding as client encoding,
/// so COPY text is read as it was written.
pub fn session_settings(encoding: &str) -> String {
    format!(
        "{SESSION_SETTINGS}SET client_encoding TO {};\n",
        literal(encoding)
    )
}

/// Prints `t` when the scratch database has the bookkeeping tables (a
/// single-stream restore's leftover has none; asking them would fail).
pub fn has_bookkeeping_query() -> String {
    format!(
        "SELECT to_regclass('{BOOKKEEPING}.artifact') IS NOT NULL \
         AND to_regclass('{BOOKKEEPING}.loaded') IS NOT NULL;\n"
    )
}

/// Prints the artifact id when the scratch database is resumable: the
/// bookkeeping exists and the schema before the data was loaded.
pub fn resumable_id_query() -> String {
    format!(
        "SELECT id FROM {BOOKKEEPING}.artifact \
         WHERE EXISTS (SELECT 1 FROM {BOOKKEEPING}.loaded WHERE name = 'pre-data');\n"
    )
}

pub fn restore(artifact: &ByteSource, head: &[u8]) -> Result<(), Error> {
    let mut text = head.to_vec();
    text.extend(read_all(artifact, TEXT_LIMIT)?);
    artifact.verify()?;
    let plan = Plan::parse(&text).map_err(Error::BadArtifact)?;
    let stored: BTreeSet<String> = chunks::contents()?.into_iter().map(|c| c.name).collect();
    let named = [&plan.pre_data, &plan.sequences, &plan.post_data]
        .into_iter()
        .chain(plan.data.iter().map(|d| &d.chunk));
    for name in named {
        if !stored.contains(name) {
            return Err(Error::BadArtifact(format!(
                "the artifact's plan names chunk {name:?}, which the artifact does not hold; \
                 restore another backup"
            )));
        }
    }
    let jobs = job::parallelism().jobs.max(1) as usize;
    replace_target_resumable(&plan.id, |job, resumed| load(job, &plan, jobs, resumed))
}

fn load(job: &Replacement, plan: &Plan, jobs: usize, resumed: bool) -> Result<(), Error> {
    if !resumed {
        job.scratch_psql(&bookkeeping_setup(&plan.id))?;
        info("loading the schema (pre-data)");
        load_section(job, plan, &plan.pre_data)?;
    }
    // A fresh load has committed its schema only.
    let done = if resumed {
        loaded(job)?
    } else {
        BTreeSet::from([plan.pre_data.clone()])
    };
    let mut pending: Vec<&DataChunk> = plan
        .data
        .iter()
        .filter(|d| !done.contains(&d.chunk))
        .collect();
    if resumed {
        info(format!(
            "resuming: {} of {} data chunks were already loaded and are skipped",
            plan.data.len() - pending.len(),
            plan.data.len()
        ));
    }
    info(format!(
        "loading {} data chunks with {jobs} session(s)",
        pending.len()
    ));
    let mut post = PostData::read(plan, &done, || partitioned_tables(job))?;
    let foreign_keys = std::mem::take(&mut post.foreign_keys);
    referenced_first(&mut pending, &foreign_keys);
    // Only a partitioned table's foreign key needs to know its partitions.
    let ancestors = match foreign_keys.iter().any(|fk| fk.validate.is_none()) {
        true => partition_ancestors(job)?,
        false => BTreeMap::new(),
    };
    // Sanitised plans written before the host told row chunks' tables name
    // none: those tables' indexes wait for the data.
    let mut lane = IndexLanes::new(
        job,
        &post.setup,
        jobs,
        plan.data
            .iter()
            .filter(|d| !d.table.is_empty())
            .map(|d| (d.table.as_str(), d.chunk.as_str(), !done.contains(&d.chunk))),
        ancestors,
        &mut post.independent,
        foreign_keys,
    );
    if let Err(e) = lane.begin() {
        lane.abandon();
        return Err(e);
    }
    // Rows are counted while the chunks load (see `load_progress`): every
    // 2 s, as each question is a psql run and no lane gets its next chunk
    // while the plugin waits for it.
    let mut rows = RowMeter::new(job);
    let mut tick = || rows.tick();
    // Every chunk given to a session, to name those never committed if a
    // session fails.
    let mut given: Vec<&str> = Vec::new();
    // One psql per session takes chunk after chunk: a psql start and a
    // connection per chunk cost more than the COPY of a small one.
    let loaded = sessions::run_in_lanes(
        jobs,
        &pending,
        |chunk| match chunk.table.is_empty() {
            true => format!("loading chunk {}", chunk.chunk),
            false => format!("loading chunk {} into {}", chunk.chunk, chunk.table),
        },
        |k| open_load_session(job, plan, k),
        |chunk, stdin| {
            given.push(&chunk.chunk);
            feed_chunk(plan, chunk, stdin)
        },
        |n| {
            if pending[n].table.is_empty() {
                return Ok(());
            }
            // Fed, perhaps not yet committed: the index lanes' statements
            // wait for the load's lock on the table (SHARE against ROW
            // EXCLUSIVE), and whatever they build before a late COPY is
            // maintained by it.
            lane.chunk_loaded(&pending[n].table)
        },
        sessions::Pulse {
            every: crate::load_progress::EVERY,
            tick: &mut tick,
        },
    );
    if let Err(e) = loaded {
        lane.abandon();
        return Err(name_uncommitted(job, &given, e));
    }
    rows.report();
    post.independent.extend(lane.left_over());
    post.drop_taken(&lane.foreign_keys_taken);
    if lane.taken > 0 {
        info(format!(
            "{} indexes and constraints were started while the data loaded",
            lane.taken
        ));
    }
    if lane.foreign_keys_started > 0 {
        info(format!(
            "{} foreign keys were started while the data loaded",
            lane.foreign_keys_started
        ));
    }
    if !done.contains(&plan.sequences)
        && let Err(e) = load_section(job, plan, &plan.sequences)
    {
        lane.abandon();
        return Err(e);
    }
    post.build(job, jobs, lane)?;
    job.scratch_psql(&format!("DROP SCHEMA {BOOKKEEPING} CASCADE;\n"))?;
    Ok(())
}

/// A load session's psql that failed by itself may have failed on any chunk
/// it was given and had not committed (a small one fits in the pipe before
/// psql reads it): the bookkeeping, committed with each chunk, tells which.
fn name_uncommitted(job: &Replacement, given: &[&str], e: Error) -> Error {
    let Error::ProgramFailed(message) = e else {
        return e;
    };
    let Ok(done) = loaded(job) else {
        return Error::ProgramFailed(message);
    };
    let open: Vec<&str> = given
        .iter()
        .filter(|c| !done.contains(**c))
        .copied()
        .collect();
    match open.is_empty() {
        true => Error::ProgramFailed(message),
        false => Error::ProgramFailed(format!(
            "{message} (given to the sessions and not committed: {}; the failure is in one of \
             them)",
            open.join(", ")
        )),
    }
}

/// Puts the chunks of small tables a foreign key references first,
/// smallest first; the rest keep the plan's order (largest table first).
/// A big table's own indexes and validations are the longest chains after
/// its data, so it loads early (as pg_restore orders by size); but its
/// foreign keys also wait for the keys of the tables they reference, which
/// that order loads last when they are small. Loading those first costs
/// little. Small: at most a quarter of the chunks to load.
fn referenced_first(pending: &mut [&DataChunk], foreign_keys: &[ForeignKey]) {
    let mut chunks: BTreeMap<String, usize> = BTreeMap::new();
    for d in pending.iter() {
        *chunks.entry(post_data::table_key(&d.table)).or_default() += 1;
    }
    let total = pending.len();
    let small: BTreeSet<String> = foreign_keys
        .iter()
        .map(|fk| post_data::table_key(&fk.referenced))
        .filter(|t| chunks.get(t).is_some_and(|&n| n * 4 <= total))
        .collect();
    // Stable: within a table, and among the others, the plan's order stays.
    pending.sort_by_key(|d| {
        let table = post_data::table_key(&d.table);
        match small.contains(&table) {
            true => (0, chunks[&table]),
            false => (1, 0),
        }
    });
}

fn bookkeeping_setup(id: &str) -> String {
    format!(
        "CREATE SCHEMA {BOOKKEEPING};\n\
         CREATE TABLE {BOOKKEEPING}.artifact (id text NOT NULL);\n\
         INSERT INTO {BOOKKEEPING}.artifact VALUES ({});\n\
         CREATE TABLE {BOOKKEEPING}.loaded (name text PRIMARY KEY, at timestamptz DEFAULT now());\n",
        literal(id)
    )
}

fn mark_sql(name: &str) -> String {
    format!(
        "INSERT INTO {BOOKKEEPING}.loaded (name) VALUES ({});\n",
        literal(name)
    )
}

/// Waits until the chunks `names` are all recorded as committed (each
/// chunk's row commits with its rows), polling every 20 ms: a statement
/// in a transaction that reads READ COMMITTED sees each commit.
pub fn wait_for_chunks_sql(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<String> = names.iter().map(|n| literal(n)).collect();
    format!(
        "DO $envsync_wait$ BEGIN WHILE (SELECT count(*) FROM {BOOKKEEPING}.loaded \
         WHERE name = ANY (ARRAY[{}]::text[])) < {} LOOP PERFORM pg_sleep(0.02); END LOOP; \
         END $envsync_wait$;\n",
        list.join(", "),
        names.len()
    )
}

fn mark(job: &Replacement, name: &str) -> Result<(), Error> {
    job.scratch_psql(&mark_sql(name)).map(drop)
}

/// Names of the chunks and entries already committed.
fn loaded(job: &Replacement) -> Result<BTreeSet<String>, Error> {
    let out = job.scratch_psql(&format!("SELECT name FROM {BOOKKEEPING}.loaded;\n"))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// A section chunk (pre-data, sequences) in one transaction with its
/// bookkeeping row: a custom-format archive through pg_restore, or a
/// sanitised plan's SQL script through psql.
fn load_section(job: &Replacement, plan: &Plan, chunk: &str) -> Result<(), Error> {
    if plan.sanitised {
        return sessions::run(1, [chunk], |chunk| start_script(job, plan, chunk));
    }
    restore_section(job, chunk)?;
    mark(job, chunk)
}

/// pg_restore of a custom-format section chunk in one transaction.
fn restore_section(job: &Replacement, chunk: &str) -> Result<(), Error> {
    let source = chunks::open(chunk)?;
    sessions::run(1, [source], |source| {
        let mut child = job
            .pg_restore()
            .arg("--single-transaction")
            .stdin_piped()
            .spawn()?;
        let stdin = child.take_stdin()?;
        let transfer = start_splice(source, stdin, &[])?;
        Ok(Session {
            label: format!("pg_restore of chunk {chunk}"),
            child,
            transfer,
        })
    })
}

/// A load session: one psql with the restore's session settings, fed
/// chunk after chunk by [`feed_chunk`].
fn open_load_session(job: &Replacement, plan: &Plan, k: usize) -> Result<Lane, Error> {
    let (cmd, preamble) = job.psql_session();
    let mut child = cmd.stdin_piped().spawn()?;
    let stdin = child.take_stdin()?;
    let settings = format!("{preamble}{}", session_settings(&plan.encoding));
    write_all(&stdin, settings.as_bytes())?;
    Ok(Lane {
        label: format!("load session {}", k + 1),
        child,
        stdin,
    })
}

/// One chunk and its bookkeeping row in one transaction, committed only
/// after the host verified the chunk (the trailer). A data chunk is COPY
/// data; a sanitised plan's chunk is an SQL script that carries its own
/// `COPY … FROM stdin;` lines.
fn feed_chunk(plan: &Plan, chunk: &DataChunk, stdin: ByteSink) -> Result<Transfer, Error> {
    let source = chunks::open(&chunk.chunk)?;
    let mut script = format!("BEGIN;\n{}", mark_sql(&chunk.chunk));
    let trailer: &[u8] = match plan.sanitised {
        true => b"COMMIT;\n",
        false => {
            let columns = match chunk.columns.is_empty() {
                true => String::new(),
                false => format!(" ({})", chunk.columns),
            };
            script.push_str(&format!("COPY {}{columns} FROM STDIN;\n", chunk.table));
            b"\\.\nCOMMIT;\n"
        }
    };
    write_all(&stdin, script.as_bytes())?;
    start_feed(source, stdin, trailer)
}

/// One SQL script chunk of a sanitised plan (its section chunks carry
/// their own statements) and its bookkeeping row in one transaction,
/// committed only after the host verified the chunk (the trailer).
fn start_script(job: &Replacement, plan: &Plan, chunk: &str) -> Result<Session, Error> {
    let source = chunks::open(chunk)?;
    let (cmd, preamble) = job.psql_session();
    let mut child = cmd.stdin_piped().spawn()?;
    let stdin = child.take_stdin()?;
    let script = format!(
        "{preamble}{}BEGIN;\n{}",
        session_settings(&plan.encoding),
        mark_sql(chunk),
    );
    write_all(&stdin, script.as_bytes())?;
    let transfer = start_splice(source, stdin, b"COMMIT;\n")?;
    Ok(Session {
        label: format!("loading chunk {chunk}"),
        child,
        transfer,
    })
}

/// The post-data section's entries not yet built, read before the data so
/// that indexes can start as their tables complete ([`IndexLanes`]).
struct PostData {
    setup: String,
    /// Indexes and constraints of one table each, built concurrently.
    independent: Vec<(String, Entry)>,
    /// Everything else, in pg_dump's order.
    rest: Vec<(String, Entry)>,
    /// Foreign keys' validations with the table each references, run
    /// concurrently after the rest.
    validations: Vec<((String, Entry), String)>,
    /// The foreign keys in `rest` (and `validations`) that the index lanes
    /// may take instead (see [`IndexLanes`]): plain tables' with both
    /// halves still to build, and partitioned tables' (whole).
    foreign_keys: Vec<ForeignKey>,
}

impl PostData {
    /// `partitioned` lists the scratch database's partitioned tables (by
    /// [`post_data::table_key`]); asked only when a key could be split.
    fn read(
        plan: &Plan,
        done: &BTreeSet<String>,
        partitioned: impl FnOnce() -> Result<BTreeSet<String>, Error>,
    ) -> Result<PostData, Error> {
        let source = chunks::open(&plan.post_data)?;
        let text = read_all(&source, TEXT_LIMIT)?;
        source.verify()?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::BadArtifact("the post-data chunk is not UTF-8 text".into()))?;
        let (setup, entries) = post_data::split(&text);
        let numbered: Vec<(String, Entry)> = entries
            .into_iter()
            .enumerate()
            .map(|(n, e)| (format!("{}-{n:05}", plan.post_data), e))
            .collect();
        let (independent, rest): (Vec<_>, Vec<_>) =
            numbered.into_iter().partition(|(_, e)| e.independent());
        let independent = split_keys(
            independent
                .into_iter()
                .filter(|(name, _)| !done.contains(name))
                .collect(),
            done,
            partitioned,
        )?;
        // Foreign keys are added NOT VALID in order, then validated
        // concurrently; each half has its own bookkeeping name.
        let mut validations = Vec::new();
        let mut foreign_keys = Vec::new();
        let rest: Vec<(String, Entry)> = rest
            .into_iter()
            .filter_map(|(name, entry)| match post_data::split_validation(&entry) {
                Some((add, validate, referenced)) => {
                    let check = format!("{name}-validate");
                    let (added, checked) = (done.contains(&name), done.contains(&check));
                    if !added
                        && !checked
                        && let Some(table) = post_data::table_of(&validate)
                    {
                        foreign_keys.push(ForeignKey {
                            add: (name.clone(), add.clone()),
                            validate: Some((check.clone(), validate.clone())),
                            table: table.to_string(),
                            referenced: referenced.clone(),
                        });
                    }
                    if !checked {
                        validations.push(((check, validate), referenced));
                    }
                    (!added).then_some((name, add))
                }
                None if done.contains(&name) => None,
                None => {
                    if let (Some(referenced), Some(table)) = (
                        post_data::partitioned_foreign_key(&entry),
                        post_data::table_of(&entry),
                    ) {
                        foreign_keys.push(ForeignKey {
                            add: (name.clone(), entry.clone()),
                            validate: None,
                            table: table.to_string(),
                            referenced,
                        });
                    }
                    Some((name, entry))
                }
            })
            .collect();
        Ok(PostData {
            setup,
            independent,
            rest,
            validations,
            foreign_keys,
        })
    }

    /// Leaves out the entries the index lanes took.
    fn drop_taken(&mut self, taken: &BTreeSet<String>) {
        self.rest.retain(|(name, _)| !taken.contains(name));
        self.validations
            .retain(|((name, _), _)| !taken.contains(name));
    }

    /// The indexes and constraints the lane did not build, with `jobs`
    /// sessions while the lane finishes; then the rest in pg_dump's order;
    /// then the validations with `jobs` sessions. Each entry commits with
    /// its bookkeeping row.
    fn build(self, job: &Replacement, jobs: usize, lane: IndexLanes) -> Result<(), Error> {
        info(format!(
            "building {} indexes and constraints with {jobs} session(s), then {} other entries, \
             then validating {} foreign keys with {jobs} session(s)",
            self.independent.len(),
            self.rest.len(),
            self.validations.len()
        ));
        // Sizes only decide how entries are dealt over sessions; usually the
        // lanes took them all, and asking would cost a psql at the tail.
        let dealt = |n: usize| jobs > 1 && n > 1;
        let sizes = match dealt(self.independent.len()) || dealt(self.validations.len()) {
            true => match table_sizes(job) {
                Ok(sizes) => sizes,
                Err(e) => {
                    lane.abandon();
                    return Err(e);
                }
            },
            false => BTreeMap::new(),
        };
        let independent = run_scripts(job, &self.setup, spread(self.independent, jobs, &sizes));
        let laned = lane.finish();
        independent.and(laned)?;
        run_scripts(job, &self.setup, vec![self.rest])?;
        // A validation reads the referencing table and probes the referenced one.
        let size = |table: &str| sizes.get(table).copied().unwrap_or(0);
        let validations = self
            .validations
            .into_iter()
            .map(|((name, entry), referenced)| {
                let referencing = post_data::table_of(&entry).map_or(0, size);
                (referencing + size(&referenced), (name, entry))
            })
            .collect();
        run_scripts(job, &self.setup, sessions::deal(validations, jobs))
    }
}

/// The independent entries with each plain table's primary key or unique
/// constraint split, its index first (see
/// `post_data::split_unique_constraint`; pg_dump writes a partitioned
/// table's with ONLY too, so `partitioned` is asked when one could be); a
/// rerun after the index committed (`done`) only attaches it.
fn split_keys(
    independent: Vec<(String, Entry)>,
    done: &BTreeSet<String>,
    partitioned: impl FnOnce() -> Result<BTreeSet<String>, Error>,
) -> Result<Vec<(String, Entry)>, Error> {
    let splittable = |entry: &Entry| post_data::split_unique_constraint(entry).is_some();
    let partitioned = match independent.iter().any(|(_, e)| splittable(e)) {
        true => partitioned()?,
        false => BTreeSet::new(),
    };
    let plain = |entry: &Entry| {
        post_data::table_of(entry).is_some_and(|t| !partitioned.contains(&post_data::table_key(t)))
    };
    Ok(independent
        .into_iter()
        .map(|(name, entry)| {
            match post_data::split_unique_constraint(&entry).filter(|_| plain(&entry)) {
                Some(split) if done.contains(&index_step(&name)) => (
                    name,
                    Entry {
                        index_first: None,
                        ..split
                    },
                ),
                Some(split) => (name, split),
                None => (name, entry),
            }
        })
        .collect())
}

/// Entries dealt over up to `jobs` sessions by the size of their table.
fn spread(
    entries: Vec<(String, Entry)>,
    jobs: usize,
    sizes: &BTreeMap<String, u64>,
) -> Vec<Vec<(String, Entry)>> {
    let sized = entries
        .into_iter()
        .map(|(name, entry)| {
            let size = post_data::table_of(&entry)
                .and_then(|t| sizes.get(t))
                .copied()
                .unwrap_or(0);
            (size, (name, entry))
        })
        .collect();
    sessions::deal(sized, jobs)
}

/// The size of every table in the scratch database, by the name pg_dump
/// gives it (schema-qualified, quoted where needed).
fn table_sizes(job: &Replacement) -> Result<BTreeMap<String, u64>, Error> {
    let out = job.scratch_psql(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_relation_size(c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema');\n",
    )?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let (name, size) = line.rsplit_once('|')?;
            Some((name.to_string(), size.trim().parse().ok()?))
        })
        .collect())
}

/// The partitioned tables of the scratch database, by [`post_data::table_key`].
fn partitioned_tables(job: &Replacement) -> Result<BTreeSet<String>, Error> {
    let out = job.scratch_psql(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p';\n",
    )?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(post_data::table_key)
        .collect())
}

/// The partitioned tables above each partition in the scratch database,
/// nearest first, by [`post_data::table_key`].
fn partition_ancestors(job: &Replacement) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let out = job.scratch_psql(
        "SELECT format('%I.%I', cn.nspname, c.relname) || E'\\x1f' || format('%I.%I', pn.nspname, p.relname) \
         FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
         JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
         JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
         WHERE p.relkind = 'p';\n",
    )?;
    Ok(ancestors(
        out.lines().filter_map(|l| l.split_once('\u{1f}')),
    ))
}

/// Each table's ancestors, nearest first, from (child, parent) pairs.
fn ancestors<'a>(
    edges: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, Vec<String>> {
    let parent: BTreeMap<String, String> = edges
        .into_iter()
        .map(|(child, parent)| (post_data::table_key(child), post_data::table_key(parent)))
        .collect();
    parent
        .keys()
        .map(|child| {
            let mut above = Vec::new();
            let mut at = child;
            // A cycle cannot occur in pg_inherits; the bound only guards the loop.
            while let Some(next) = parent.get(at).filter(|_| above.len() < parent.len()) {
                above.push(next.clone());
                at = next;
            }
            (child.clone(), above)
        })
        .collect()
}

/// Post-data entries as a psql script: each in a transaction of its own
/// with its bookkeeping row, so a rerun skips exactly those committed.
pub fn entries_script(entries: &[(String, Entry)]) -> String {
    entries
        .iter()
        .map(|(name, entry)| entry_script(name, entry))
        .collect()
}

/// One post-data entry `name` as a psql script (see [`entries_script`]);
/// a split constraint's index first, in a transaction of its own.
pub fn entry_script(name: &str, entry: &Entry) -> String {
    let index = entry
        .index_first
        .as_ref()
        .map(|index| format!("BEGIN;\n{}{index}\nCOMMIT;\n", mark_sql(&index_step(name))));
    format!(
        "{}BEGIN;\n{}{}\nCOMMIT;\n",
        index.unwrap_or_default(),
        mark_sql(name),
        entry.sql
    )
}

/// The bookkeeping name of the index a split constraint `name` builds first.
fn index_step(name: &str) -> String {
    format!("{name}-index")
}

/// Runs each list of entries in a psql session of its own, all at once.
fn run_scripts(
    job: &Replacement,
    setup: &str,
    scripts: Vec<Vec<(String, Entry)>>,
) -> Result<(), Error> {
    let mut children = Vec::new();
    for entries in scripts.into_iter().filter(|s| !s.is_empty()) {
        let (cmd, preamble) = job.psql_session();
        let mut child = cmd.stdin_piped().spawn()?;
        let script = format!("{preamble}{setup}\n{}", entries_script(&entries));
        let stdin = child.take_stdin()?;
        let written = write_all(&stdin, script.as_bytes()).and_then(|()| stdin.close());
        drop(stdin);
        if let Err(e) = written {
            // psql's own failure is the real cause.
            let status = child.wait()?;
            return Err(child.stream_failure(&status, e, false));
        }
        children.push(child);
    }
    let mut first_error = None;
    for child in children {
        if let Err(e) = child.finish() {
            first_error.get_or_insert(e.context("building the schema after the data"));
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(name: &str, table: &str) -> DataChunk {
        DataChunk {
            chunk: name.into(),
            table: table.into(),
            columns: String::new(),
        }
    }

    fn foreign_key(table: &str, referenced: &str) -> ForeignKey {
        let entry = Entry {
            kind: "FK CONSTRAINT".into(),
            sql: String::new(),
            index_first: None,
        };
        ForeignKey {
            add: ("a".into(), entry.clone()),
            validate: Some(("a-validate".into(), entry)),
            table: table.into(),
            referenced: referenced.into(),
        }
    }

    #[test]
    fn partitions_know_every_partitioned_table_above_them() {
        let found = ancestors([
            ("public.q1", "public.events"),
            ("public.q2_a", "public.q2"),
            ("public.q2", "public.events"),
        ]);
        let key = post_data::table_key;
        assert_eq!(found[&key("public.q1")], [key("public.events")]);
        assert_eq!(
            found[&key("public.q2_a")],
            [key("public.q2"), key("public.events")]
        );
        assert!(!found.contains_key(&key("public.events")));
    }

    #[test]
    fn small_referenced_tables_load_first_smallest_first() {
        let plan = [
            chunk("data-1", "\"public\".\"items\""),
            chunk("data-2", "\"public\".\"items\""),
            chunk("data-3", "\"public\".\"items\""),
            chunk("data-4", "\"public\".\"items\""),
            chunk("data-5", "\"public\".\"orders\""),
            chunk("data-6", "\"public\".\"orders\""),
            chunk("data-7", "\"public\".\"orders\""),
            chunk("data-8", "\"public\".\"log\""),
            chunk("data-9", "\"public\".\"customers\""),
        ];
        let mut pending: Vec<&DataChunk> = plan.iter().collect();
        let keys = [
            foreign_key("public.items", "public.orders"),
            foreign_key("public.orders", "public.customers"),
        ];
        referenced_first(&mut pending, &keys);
        let order: Vec<&str> = pending.iter().map(|d| d.chunk.as_str()).collect();
        // `orders` is referenced but a third of the chunks: it keeps its place.
        assert_eq!(
            order,
            [
                "data-9", "data-1", "data-2", "data-3", "data-4", "data-5", "data-6", "data-7",
                "data-8"
            ]
        );
        // No foreign keys: the plan's order.
        let mut pending: Vec<&DataChunk> = plan.iter().collect();
        referenced_first(&mut pending, &[]);
        assert_eq!(pending[0].chunk, "data-1");
    }

    #[test]
    fn a_split_key_commits_its_index_and_its_attach_each_with_its_own_row() {
        let entry = Entry {
            kind: "CONSTRAINT".into(),
            sql: "ATTACH;\n".into(),
            index_first: Some("BUILD;\n".into()),
        };
        let script = entry_script("post-data-00003", &entry);
        let index = script.find("VALUES ('post-data-00003-index')").unwrap();
        let build = script.find("BUILD;").unwrap();
        let first_commit = script.find("COMMIT;").unwrap();
        let attach_row = script.find("VALUES ('post-data-00003')").unwrap();
        let attach = script.find("ATTACH;").unwrap();
        assert!(index < build && build < first_commit, "{script}");
        assert!(first_commit < attach_row && attach_row < attach, "{script}");
        assert_eq!(script.matches("BEGIN;").count(), 2, "{script}");
    }

    #[test]
    fn keys_of_plain_tables_split_and_a_rerun_only_attaches_a_built_index() {
        let key = |table: &str| Entry {
            kind: "CONSTRAINT".into(),
            sql: format!("ALTER TABLE ONLY {table}\n    ADD CONSTRAINT k PRIMARY KEY (id);\n"),
            index_first: None,
        };
        let entries = vec![
            ("e-1".to_string(), key("public.plain")),
            ("e-2".to_string(), key("public.parted")),
            ("e-3".to_string(), key("public.again")),
        ];
        let done = BTreeSet::from(["e-3-index".to_string()]);
        let parted = || Ok(BTreeSet::from([post_data::table_key("public.parted")]));
        let got = split_keys(entries.clone(), &done, parted).unwrap();
        assert!(got[0].1.index_first.is_some() && got[0].1.sql.contains("USING INDEX"));
        assert_eq!(
            got[1].1, entries[1].1,
            "a partitioned table's key stays whole"
        );
        assert!(got[2].1.index_first.is_none() && got[2].1.sql.contains("USING INDEX"));
        // Nothing to split: the server is not asked.
        let index = vec![(
            "e-4".to_string(),
            Entry {
                kind: "INDEX".into(),
                sql: "CREATE INDEX i ON public.t USING btree (a);\n".into(),
                index_first: None,
            },
        )];
        let unasked = || -> Result<BTreeSet<String>, Error> { panic!("asked") };
        assert_eq!(split_keys(index.clone(), &done, unasked).unwrap(), index);
    }

    #[test]
    fn a_foreign_key_waits_for_every_chunk_of_its_tables_to_commit() {
        let sql = wait_for_chunks_sql(&["data-00001".into(), "data-00007".into()]);
        assert!(
            sql.contains("ARRAY['data-00001', 'data-00007']::text[])) < 2 LOOP"),
            "{sql}"
        );
        assert!(sql.contains("FROM envsync_restore.loaded"));
        assert_eq!(wait_for_chunks_sql(&[]), "");
    }
}
