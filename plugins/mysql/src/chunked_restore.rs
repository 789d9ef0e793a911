//! Restoring a chunked artifact (docs/decisions/0022) into the scratch
//! database: the schema, then the data chunks with `jobs` client sessions
//! at once, then the triggers; the verified swap is `swap`'s.
//!
//! Resume: the scratch database holds two bookkeeping tables, the
//! artifact's id and one row per step committed (`schema`, each data
//! chunk, `triggers`). A data chunk's row is inserted in the same
//! transaction as its rows, and its `COMMIT` is the transfer's trailer,
//! written only after the host verified the chunk against the manifest: a
//! chunk is loaded and recorded, or neither; a damaged chunk never commits.
//! The row's primary key refuses a second load of a chunk. A rerun on the
//! same artifact skips what is recorded; the tables are dropped before the
//! swap. Exactly-once holds for transactional (InnoDB) tables.
//!
//! Secondary keys and foreign keys of the tables with rows are taken out
//! with the schema step and put back after the last chunk
//! (`deferred_keys`).

use crate::chunk_plan::{DataChunk, Plan};
use crate::deferred_keys::{self, Facts, TableKeys};
use crate::programs::Client;
use crate::sql::{hex, ident};
use crate::swap::{finish_load, load_error, looks_damaged, replace_target_resumable};
use envsync_plugin_sdk::sessions::{self, Policy, Session};
use envsync_plugin_sdk::{
    ByteSource, Command, ConnectionInfo, Error, OnFeedError, chunks, connection, info, job, log,
    read_all, start_splice, write_all,
};
use std::collections::{BTreeMap, BTreeSet};

/// How a chunk's load fails: a truncated input is named as such, and a
/// load InnoDB broke off as a deadlock victim (sessions inserting into one
/// table can lock each other's index gaps) is started again, up to 5 times:
/// its transaction, bookkeeping row included, was rolled back whole.
const LOAD_POLICY: Policy = Policy {
    explain: |child, status| load_error(child.program(), status),
    retry_when: is_deadlock,
    retries: 5,
};

/// MariaDB's "Deadlock found when trying to get lock" (1213, SQLSTATE 40001).
fn is_deadlock(e: &Error) -> bool {
    let message = e.message();
    message.contains("ERROR 1213") || message.contains("Deadlock found when trying to get lock")
}

const ARTIFACT_TABLE: &str = "envsync-restore-artifact";
const LOADED_TABLE: &str = "envsync-restore-loaded";
/// Largest plan read into memory.
const PLAN_LIMIT: usize = 64 << 20;
/// Bookkeeping names of the steps that are not data chunks.
const SCHEMA_STEP: &str = "schema";
const TRIGGERS_STEP: &str = "triggers";

/// What every data chunk is loaded with, as the dump's own header sets it:
/// TIMESTAMP values were dumped in UTC (`--tz-utc`), and a 0 in an
/// AUTO_INCREMENT column stays 0. Per session only; foreign-key and unique
/// checks are already off (`sql::LOAD_INIT`).
pub const ROW_SESSION: &str =
    "SET SESSION time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n";

/// Prints the artifact id when the database holds a resumable load: the
/// bookkeeping exists and the schema step committed.
/// Whether a database's `tables` include the bookkeeping of a chunked
/// restore (then [`resumable_id_query`] can be asked there).
pub fn has_bookkeeping(tables: &[String]) -> bool {
    [ARTIFACT_TABLE, LOADED_TABLE]
        .iter()
        .all(|t| tables.iter().any(|have| have == t))
}

pub fn resumable_id_query() -> String {
    format!(
        "SELECT id FROM {} WHERE EXISTS (SELECT 1 FROM {} WHERE name = {});\n",
        ident(ARTIFACT_TABLE),
        ident(LOADED_TABLE),
        hex(SCHEMA_STEP)
    )
}

/// Reads and checks the plan: every chunk it names must be stored.
pub fn read_plan(artifact: &ByteSource) -> Result<Plan, Error> {
    read_plan_after(&[], artifact)
}

/// [`read_plan`] of an artifact whose first bytes `head` were already read.
pub fn read_plan_after(head: &[u8], artifact: &ByteSource) -> Result<Plan, Error> {
    let mut text = head.to_vec();
    text.extend(read_all(artifact, PLAN_LIMIT)?);
    artifact.verify()?;
    let plan = Plan::parse(&text).map_err(Error::BadArtifact)?;
    let stored: BTreeSet<String> = chunks::contents()?.into_iter().map(|c| c.name).collect();
    for name in plan.chunks() {
        if !stored.contains(name) {
            return Err(Error::BadArtifact(format!(
                "the artifact's plan names chunk {name:?}, which the artifact does not hold; \
                 restore another backup"
            )));
        }
    }
    Ok(plan)
}

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let plan = read_plan(artifact)?;
    let client = Client::detect()?;
    let conn = connection("target")?;
    let jobs = job::parallelism().jobs.max(1) as usize;
    replace_target_resumable(&client, &plan.id, |loader, db, resumed| {
        let job = Load {
            client: &client,
            conn: &conn,
            db,
            loader,
        };
        job.run(&plan, jobs, resumed)
    })
}

/// Rows committed so far, from the counts the backup wrote into the plan
/// (the chunks pass through the host, not the plugin), reported as each
/// chunk commits (`log.progress`, stage `loading`). Sanitised plans and
/// plans from before the counts have none: then nothing is reported.
struct ChunkRows {
    done: u64,
    total: Option<u64>,
}

impl ChunkRows {
    fn new(plan: &Plan, loaded: &BTreeSet<String>) -> ChunkRows {
        let counted: Option<Vec<(bool, u64)>> = plan
            .data
            .iter()
            .map(|d| Some((loaded.contains(&d.chunk), d.rows?)))
            .collect();
        let counted = counted.unwrap_or_default();
        ChunkRows {
            done: counted.iter().filter(|(l, _)| *l).map(|(_, r)| r).sum(),
            total: (!plan.data.is_empty() && counted.len() == plan.data.len())
                .then(|| counted.iter().map(|(_, r)| r).sum()),
        }
    }

    /// Counts `chunk` in; the progress to report, when there are counts.
    fn loaded(&mut self, chunk: &DataChunk) -> Option<(u64, u64)> {
        let (total, rows) = (self.total?, chunk.rows?);
        self.done += rows;
        Some((self.done, total))
    }

    fn finish(&self) {
        if self.total.is_some() {
            info(format!("{} rows loaded", self.done));
        }
    }
}

struct Load<'a> {
    client: &'a Client,
    conn: &'a ConnectionInfo,
    db: &'a str,
    loader: Command,
}

impl Load<'_> {
    fn execute(&self, script: &str) -> Result<(), Error> {
        self.client
            .execute("target", self.conn, Some(self.db), script.as_bytes())
    }

    fn run(&self, plan: &Plan, jobs: usize, resumed: bool) -> Result<(), Error> {
        if !resumed {
            self.execute(&bookkeeping_setup(&plan.id))?;
            info("loading the schema");
            self.load_whole(&plan.schema)?;
            self.defer_keys(plan)?;
            self.execute(&mark(SCHEMA_STEP))?;
        } else {
            // Scratch databases of versions that deferred nothing lack it.
            self.execute(&deferred_keys::create_table())?;
        }
        let done = self.loaded()?;
        let pending: Vec<&DataChunk> = plan
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
            "loading {} data chunk(s) with {jobs} session(s)",
            pending.len()
        ));
        let mut rows = ChunkRows::new(plan, &done);
        sessions::run_with(
            jobs,
            &LOAD_POLICY,
            &pending,
            |chunk| self.start_chunk(chunk),
            |n| {
                if let Some((done, total)) = rows.loaded(pending[n]) {
                    log::progress("loading", done, Some(total));
                }
                Ok(())
            },
        )?;
        rows.finish();
        self.add_keys(plan, jobs)?;
        if !done.contains(TRIGGERS_STEP) {
            info("loading the triggers");
            self.load_whole(&plan.triggers)?;
            self.execute(&mark(TRIGGERS_STEP))?;
        }
        self.execute(&format!(
            "DROP TABLE {}, {}, {};\n",
            ident(LOADED_TABLE),
            ident(ARTIFACT_TABLE),
            ident(deferred_keys::KEYS_TABLE)
        ))
    }

    fn query(&self, script: &str) -> Result<Vec<crate::batch::Row>, Error> {
        self.client
            .query("target", self.conn, Some(self.db), script)
    }

    /// Takes the keys out of the tables that have rows to load (all
    /// tables, for a sanitised plan, whose chunks name none), recording
    /// them first.
    fn defer_keys(&self, plan: &Plan) -> Result<(), Error> {
        let facts = Facts::from_rows(&self.query(&deferred_keys::facts_query())?)
            .map_err(|e| Error::Other(format!("reading the restored schema's keys: {e}")))?;
        let with_rows: BTreeSet<String> = if plan.data.iter().any(|d| d.table.is_empty()) {
            facts.tables()
        } else {
            plan.data.iter().map(|d| d.table.clone()).collect()
        };
        let deferrable = facts.deferrable(&with_rows);
        let names: Vec<String> = deferrable.iter().map(|(t, ..)| t.clone()).collect();
        let mut rows = Vec::new();
        for script in deferred_keys::show_create_scripts(&names) {
            rows.extend(self.query(&script)?);
        }
        let creates = deferred_keys::definitions(&rows)
            .map_err(|e| Error::Other(format!("reading the restored tables' definitions: {e}")))?;
        let mut tables = Vec::new();
        for (table, keys, fks) in deferrable {
            let create = creates.get(&table).map(String::as_str).unwrap_or_default();
            if let Some(clauses) = deferred_keys::clauses(create, &keys, &fks) {
                tables.push(TableKeys { table, clauses });
            }
        }
        if tables.is_empty() {
            return Ok(());
        }
        let count: usize = tables.iter().map(|t| t.clauses.len()).sum();
        info(format!(
            "{count} secondary key(s) and foreign key(s) of {} table(s) are built after the rows",
            tables.len()
        ));
        self.execute(&deferred_keys::defer_script(&tables))
    }

    /// Puts back what [`Self::defer_keys`] took out and the tables do not
    /// have yet, up to `jobs` tables at once.
    fn add_keys(&self, plan: &Plan, jobs: usize) -> Result<(), Error> {
        let missing = deferred_keys::missing(&self.query(&deferred_keys::recorded_query())?)
            .map_err(|e| Error::Other(format!("reading the deferred keys: {e}")))?;
        if missing.is_empty() {
            return Ok(());
        }
        let mut weight: BTreeMap<&str, u64> = BTreeMap::new();
        for d in &plan.data {
            *weight.entry(d.table.as_str()).or_default() += d.rows.unwrap_or(1);
        }
        let tables = missing.len();
        let scripts = deferred_keys::deal(missing, jobs, |t| {
            weight.get(t).copied().unwrap_or_default()
        });
        info(format!(
            "building the keys of {tables} table(s) with {} session(s)",
            scripts.len()
        ));
        // Every client starts before any is waited for; each script is a
        // statement per table, small enough for the pipe.
        let mut running = Vec::new();
        for script in &scripts {
            let mut child = self
                .client
                .own("target", self.conn, Some(self.db))
                .stdin_piped()
                .spawn()?;
            let stdin = child.take_stdin()?;
            let wrote = write_all(&stdin, script.as_bytes()).and_then(|()| stdin.close());
            running.push((child, wrote));
        }
        let mut first_error = None;
        for (child, wrote) in running {
            let outcome = match (child.wait(), wrote) {
                (Ok(status), _) if !status.success => {
                    Err(crate::programs::exit_error(self.client.program, &status))
                }
                (Ok(_), wrote) => wrote,
                (Err(e), _) => Err(e),
            };
            if let Err(e) = outcome
                && first_error.is_none()
            {
                first_error = Some(e.context("building the keys deferred until after the rows"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The steps already committed.
    fn loaded(&self) -> Result<BTreeSet<String>, Error> {
        let rows = self.client.query(
            "target",
            self.conn,
            Some(self.db),
            &format!("SELECT name FROM {};\n", ident(LOADED_TABLE)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect())
    }

    /// A whole dump chunk (schema, triggers) through one client, then
    /// checked against the manifest.
    fn load_whole(&self, name: &str) -> Result<(), Error> {
        let program = self.client.program;
        let source = chunks::open(name)?;
        let mut child = self.loader.clone().stdin_piped().spawn()?;
        let loaded = child
            .feed(&source, OnFeedError::Kill)
            .and_then(|fed| fed.all())
            .and_then(|(stdin, _)| finish_load(&child, program, stdin));
        if let Err(e) = loaded {
            if looks_damaged(&e)
                && let Err(damaged) = source.verify()
            {
                return Err(damaged.context(format!("chunk {name:?}")));
            }
            return Err(e.context(format!("loading chunk {name:?}")));
        }
        source
            .verify()
            .map_err(|e| e.context(format!("chunk {name:?}")))
    }

    /// One data chunk in one transaction with its bookkeeping row; the
    /// host writes the COMMIT only after verifying the chunk.
    fn start_chunk(&self, chunk: &DataChunk) -> Result<Session, Error> {
        let mut child = self.loader.clone().stdin_piped().spawn()?;
        let stdin = child.take_stdin()?;
        let head = format!("{ROW_SESSION}START TRANSACTION;\n{}", mark(&chunk.chunk));
        write_all(&stdin, head.as_bytes())?;
        let source = chunks::open(&chunk.chunk)?;
        let transfer = start_splice(source, stdin, b"COMMIT;\n")?;
        Ok(Session {
            label: chunk_label(chunk),
            child,
            transfer,
        })
    }
}

/// What a data chunk's session is called in messages.
fn chunk_label(chunk: &DataChunk) -> String {
    if chunk.table.is_empty() {
        // A sanitised backup's row chunk: its INSERTs name the table.
        return format!("loading chunk {} (sanitised rows)", chunk.chunk);
    }
    format!(
        "loading chunk {} (rows of table {:?})",
        chunk.chunk, chunk.table
    )
}

fn bookkeeping_setup(id: &str) -> String {
    format!(
        "CREATE TABLE {a} (id VARBINARY(1024) NOT NULL) ENGINE=InnoDB;\n\
         INSERT INTO {a} VALUES ({id});\n\
         CREATE TABLE {l} (name VARBINARY(255) PRIMARY KEY) ENGINE=InnoDB;\n{k}",
        a = ident(ARTIFACT_TABLE),
        l = ident(LOADED_TABLE),
        id = hex(id),
        k = deferred_keys::create_table()
    )
}

fn mark(step: &str) -> String {
    format!(
        "INSERT INTO {} VALUES ({});\n",
        ident(LOADED_TABLE),
        hex(step)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_names_steps_as_hex() {
        assert_eq!(
            mark("data-00001"),
            "INSERT INTO `envsync-restore-loaded` VALUES (X'646174612d3030303031');\n"
        );
        assert!(resumable_id_query().contains("name = X'736368656d61'"));
        assert!(bookkeeping_setup("a'b").contains("VALUES (X'612762')"));
    }

    fn plan(rows: &[Option<u64>]) -> Plan {
        Plan {
            id: "x".into(),
            schema: "schema".into(),
            data: rows
                .iter()
                .enumerate()
                .map(|(i, &rows)| DataChunk {
                    chunk: format!("data-{i}"),
                    table: "t".into(),
                    rows,
                })
                .collect(),
            triggers: "triggers".into(),
        }
    }

    #[test]
    fn rows_count_from_the_plan_including_chunks_loaded_before() {
        let plan = plan(&[Some(10), Some(20), Some(5)]);
        let mut rows = ChunkRows::new(&plan, &BTreeSet::from(["data-1".to_string()]));
        assert_eq!(rows.loaded(&plan.data[0]), Some((30, 35)));
        assert_eq!(rows.loaded(&plan.data[2]), Some((35, 35)));
    }

    #[test]
    fn plans_without_every_count_report_no_rows() {
        let plan = plan(&[Some(10), None]);
        let mut rows = ChunkRows::new(&plan, &BTreeSet::new());
        assert_eq!(rows.loaded(&plan.data[0]), None);
        assert_eq!(rows.total, None);
    }
}
