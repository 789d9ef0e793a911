//! Replacing the target database, shared by restore and copy.
//!
//! `mode=swap` (the default): load into the scratch database
//! `<D>-envsync-restore`, read the definitions of its triggers, views,
//! routines and events, then run the swap session (see `plan.rs`): one
//! atomic `RENAME TABLE` moves the target's tables to `<D>-envsync-old` and
//! the scratch tables into `D`, and the objects are recreated around them.
//! Until that RENAME, `D` is never changed (its triggers, dropped by the
//! swap session just before the RENAME, are put back if the RENAME fails),
//! so every failure before it leaves `D` as it was. Readers of `D` keep
//! working throughout; a query that holds a table when the RENAME comes
//! makes it wait (at most `swap-lock-timeout` seconds per attempt).
//!
//! `mode=replace`: drop `D`, create it again, load into it.

use crate::catalog::{self, Catalog, Definition, Object};
use crate::names::Names;
use crate::plan::{self, SwapPlan};
use crate::programs::{Client, exit_error};
use crate::settings::{LoadSettings, Mode};
use crate::sql;
use envsync_plugin_sdk::{
    Command, ConnectionInfo, Error, ExitStatus, Running, connection, info, warn, write_all,
};
use std::thread;

/// The connection role of the database being replaced.
const ROLE: &str = "target";

/// Replaces the target database with what `load` puts into the database it
/// is given a loader for. `load` must run the loader to success (see
/// [`finish_load`]) and check its input (e.g. `artifact.verify()`), or return
/// the error that stops the swap.
pub fn replace_target(
    client: &Client,
    load: impl FnOnce(Command) -> Result<(), Error>,
) -> Result<(), Error> {
    replace(client, None, |loader, _, _| load(loader))
}

/// [`replace_target`] for a load that can resume (a chunked artifact,
/// docs/decisions/0022): a scratch database left by an interrupted load of
/// the artifact `id` is kept and `load` is told so (`resumed`), and a failed
/// load keeps it for the rerun unless the artifact is damaged. `load` gets
/// the loader, the name of the database it loads and `resumed`, and must
/// remove its bookkeeping before it returns Ok.
pub fn replace_target_resumable(
    client: &Client,
    id: &str,
    load: impl FnOnce(Command, &str, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    replace(client, Some(id), load)
}

fn replace(
    client: &Client,
    resume: Option<&str>,
    load: impl FnOnce(Command, &str, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    let conn = connection(ROLE)?;
    let names = Names::for_target(&conn.database).map_err(Error::InvalidParam)?;
    let settings = LoadSettings::read()?;
    let job = Replacement {
        client,
        conn,
        names,
        settings,
    };
    match job.settings.mode {
        Mode::Swap => job.swap_in(resume, load),
        Mode::Replace => {
            let target = job.names.target.clone();
            job.drop_and_load(|loader| load(loader, &target, false))
        }
    }
}

/// Ends a load whose input all went into the client's stdin: writes the
/// trailer that detects a cut-off dump, closes the input, waits. An artifact
/// that stops early is a `bad-artifact` error.
pub fn finish_load(
    child: &Running,
    program: &str,
    stdin: envsync_plugin_sdk::ByteSink,
) -> Result<(), Error> {
    let wrote = write_all(&stdin, sql::LOAD_TRAILER.as_bytes()).and_then(|()| stdin.close());
    drop(stdin);
    let status = child.wait()?;
    if !status.success {
        return Err(load_error(program, &status));
    }
    wrote
}

/// The error of a failed load, naming a truncated dump as such.
pub fn load_error(program: &str, status: &ExitStatus) -> Error {
    if status.stderr_tail.contains(sql::TRUNCATED_MARK) {
        return Error::BadArtifact(
            "the dump stops before its end (the footer that restores the session settings \
             never ran): it is truncated; restore another backup"
                .into(),
        );
    }
    exit_error(program, status)
}

/// Whether a load error suggests damaged bytes (worth checking the artifact
/// against its manifest to say so).
pub fn looks_damaged(e: &Error) -> bool {
    matches!(e, Error::BadArtifact(_))
        || ["ERROR 1064", "ERROR 1366", "ERROR at line", "ERROR 1300"]
            .iter()
            .any(|m| e.message().contains(m))
}

struct Replacement<'a> {
    client: &'a Client,
    conn: ConnectionInfo,
    names: Names,
    settings: LoadSettings,
}

/// How an attempt to swap ended.
enum Attempt {
    Done,
    /// The RENAME did not happen: the target is as it was.
    NotSwapped(Error),
    /// The target is not as it was and not fully restored (the error says
    /// how); the scratch and old databases are kept for a look by hand.
    Broken(Error),
}

impl Replacement<'_> {
    fn catalog(&self, db: &str) -> Result<Catalog, Error> {
        self.client.catalog(ROLE, &self.conn, db)
    }

    fn execute(&self, database: Option<&str>, script: &[u8]) -> Result<(), Error> {
        self.client.execute(ROLE, &self.conn, database, script)
    }

    fn loader(&self, database: &str) -> Command {
        self.client.loader(ROLE, &self.conn, database)
    }

    /// The definitions of `objects` of database `db`.
    fn definitions(&self, db: &str, objects: &[Object]) -> Result<Vec<Definition>, Error> {
        let mut rows = Vec::with_capacity(objects.len());
        for (_, script) in catalog::show_create_scripts(objects) {
            rows.extend(self.client.query(ROLE, &self.conn, Some(db), &script)?);
        }
        catalog::definitions(objects, &rows)
            .map_err(|e| Error::Other(format!("reading the definitions in {db:?}: {e}")))
    }

    /// Whether the scratch database holds an interrupted load of artifact
    /// `id` whose schema step finished (see `chunked_restore`).
    fn resumable(&self, id: &str) -> Result<bool, Error> {
        let scratch = &self.names.scratch;
        let c = self.catalog(scratch)?;
        if !c.exists() || !c.marked || !crate::chunked_restore::has_bookkeeping(&c.tables) {
            return Ok(false);
        }
        // A failure here is not "nothing to resume": dropping the scratch
        // database would throw away what an interrupted restore loaded.
        let found = self
            .client
            .query(
                ROLE,
                &self.conn,
                Some(scratch),
                &crate::chunked_restore::resumable_id_query(),
            )
            .map_err(|e| {
                e.context(format!(
                    "could not tell whether scratch database {scratch:?} holds an interrupted \
                     restore to resume (nothing was changed; run the restore again)"
                ))
            })?;
        Ok(found
            .first()
            .and_then(|row| row.first())
            .is_some_and(|v| v.as_deref() == Some(id.as_bytes())))
    }

    /// Says so when an earlier run's RENAME went through but the run did
    /// not finish (decision 0007: a host killed while the RENAME waited for
    /// a lock; the server ran it later): the scratch database is left
    /// without tables and the old one with the previous ones. The target
    /// then has the restored tables but may lack the views, triggers,
    /// routines and events recreated after the RENAME; this run replaces it
    /// whole. (Both drops of a finished swap failing looks the same.)
    fn warn_of_an_interrupted_swap(&self) {
        let (Ok(scratch), Ok(old)) = (
            self.catalog(&self.names.scratch),
            self.catalog(&self.names.old),
        ) else {
            return;
        };
        if scratch.marked && scratch.tables.is_empty() && old.marked && !old.tables.is_empty() {
            warn(format!(
                "an earlier restore of {target:?} was interrupted after its RENAME: {target:?} \
                 holds that restore's tables but may lack its views, triggers, routines and \
                 events; this restore replaces it whole",
                target = self.names.target
            ));
        }
    }

    /// Refuses to touch a database of the scratch names the plugin did not
    /// create; returns whether there is a leftover of ours to drop.
    fn leftover(&self, db: &str) -> Result<bool, Error> {
        let c = self.catalog(db)?;
        if !c.exists() {
            return Ok(false);
        }
        if c.marked {
            info(format!("dropping {db:?}, left over by an earlier run"));
            return Ok(true);
        }
        Err(Error::Other(format!(
            "database {db:?} exists but was not created by envsync (it lacks the table \
             {:?}); the restore of {:?} needs that name for its scratch database: rename or \
             drop it, or use --param mode=replace",
            sql::MARKER_TABLE,
            self.names.target
        )))
    }

    fn swap_in(
        &self,
        resume: Option<&str>,
        load: impl FnOnce(Command, &str, bool) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let Names {
            target,
            scratch,
            old,
        } = &self.names;
        let before = self.catalog(target)?;
        let existed = before.exists();
        let unchanged = |e: Error| self.unchanged(e, existed);
        self.warn_of_an_interrupted_swap();
        let resumed = match resume {
            Some(id) => self.resumable(id).map_err(unchanged)?,
            None => false,
        };
        let mut leftovers = Vec::new();
        for db in [scratch, old] {
            if !(resumed && db == scratch) && self.leftover(db).map_err(unchanged)? {
                leftovers.push(db.as_str());
            }
        }
        info(format!(
            "{} database {target:?}: loading into scratch database {scratch:?} first{}",
            if existed { "replacing" } else { "creating" },
            if resumed {
                " (resuming the interrupted load of this artifact there)"
            } else {
                ""
            }
        ));
        if resumed {
            if !leftovers.is_empty() {
                self.execute(None, sql::drop_database(old).as_bytes())
                    .map_err(unchanged)?;
            }
        } else {
            let charset = before
                .charset
                .as_ref()
                .map(|(c, l)| (c.as_str(), l.as_str()));
            let prepare = sql::prepare_scratch(scratch, &leftovers, charset).map_err(Error::Other);
            prepare
                .and_then(|script| self.execute(None, script.as_bytes()))
                .map_err(|e| {
                    unchanged(e.context(format!("could not create scratch database {scratch:?}")))
                })?;
        }

        let ready = load(self.loader(scratch), scratch, resumed).and_then(|()| self.capture());
        let (loaded, backup) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                // A resumable load keeps what it committed for the rerun,
                // unless the artifact itself is damaged.
                if resume.is_some() && !matches!(e, Error::Integrity(_) | Error::BadArtifact(_)) {
                    warn(format!(
                        "keeping scratch database {scratch:?}: restoring the same backup \
                         again resumes there"
                    ));
                } else {
                    self.drop_quietly(scratch);
                }
                return Err(unchanged(e));
            }
        };
        info(format!(
            "loaded {} table(s), {} view(s), {} trigger(s), {} routine(s), {} event(s)",
            loaded.tables.len(),
            loaded.views.len(),
            loaded.triggers.len(),
            loaded.routines.len(),
            loaded.events.len()
        ));

        let created_target = !existed;
        let setup = self.setup_swap(&loaded, created_target);
        if let Err(e) = setup {
            self.clean_after_failure(created_target);
            return Err(unchanged(e));
        }
        let attempts = self.settings.swap_retries;
        let mut attempt = 1;
        loop {
            info(format!(
                "swapping the tables of {scratch:?} into {target:?} (attempt {attempt} of {attempts})"
            ));
            match self.attempt(&loaded, &backup) {
                Attempt::Done => break,
                Attempt::Broken(e) => return Err(e),
                Attempt::NotSwapped(e) => {
                    let retry = attempt < attempts && is_lock_conflict(&e);
                    warn(format!("swap attempt {attempt} failed: {}", e.message()));
                    if !retry {
                        self.clean_after_failure(created_target);
                        let why = if is_lock_conflict(&e) {
                            format!(
                                "other sessions kept holding the tables of {target:?} (a \
                                 long query or an open transaction; see SHOW PROCESSLIST) for \
                                 {attempts} attempt(s) of {} s each",
                                self.settings.lock_timeout_secs
                            )
                        } else {
                            "the swap failed".to_string()
                        };
                        return Err(unchanged(
                            e.context(format!("{why}; the restored copy was dropped")),
                        ));
                    }
                }
            }
            thread::sleep(self.settings.swap_retry_delay);
            attempt += 1;
        }
        info(format!("database {target:?} is live"));
        self.drop_quietly(old);
        self.drop_quietly(scratch);
        Ok(())
    }

    /// After the load: what the scratch database holds and the definitions
    /// of its objects; then its triggers go (they would keep its tables from
    /// moving; the swap recreates them on the target).
    fn capture(&self) -> Result<(Catalog, Vec<Definition>), Error> {
        let scratch = &self.names.scratch;
        let loaded = self.catalog(scratch)?;
        let backup = self.definitions(scratch, &catalog::objects(&loaded))?;
        if !loaded.triggers.is_empty() {
            self.execute(
                None,
                plan::drop_triggers_script(scratch, &loaded.triggers).as_bytes(),
            )?;
        }
        Ok((loaded, backup))
    }

    /// Creates the target (when new, with the scratch's defaults) and the
    /// old database.
    fn setup_swap(&self, loaded: &Catalog, create_target: bool) -> Result<(), Error> {
        if create_target {
            let charset = loaded
                .charset
                .as_ref()
                .ok_or_else(|| Error::Other("the scratch database disappeared".into()))?;
            let script = sql::create_database(&self.names.target, (&charset.0, &charset.1))
                .map_err(Error::Other)?;
            self.execute(None, script.as_bytes())?;
        }
        let old = &self.names.old;
        let script = format!(
            "{}CREATE DATABASE {};\n{}",
            sql::SESSION_START,
            sql::ident(old),
            sql::create_marker(old)
        );
        self.execute(None, script.as_bytes())
            .map_err(|e| e.context(format!("could not create database {old:?}")))
    }

    /// One swap session, with the target read just before it.
    fn attempt(&self, loaded: &Catalog, backup: &[Definition]) -> Attempt {
        let Names {
            target,
            scratch,
            old,
        } = &self.names;
        let prepared = self.catalog(target).and_then(|now| {
            let triggers: Vec<Object> = catalog::objects(&now)
                .into_iter()
                .filter(|o| o.kind == catalog::Kind::Trigger)
                .collect();
            let defs = self.definitions(target, &triggers)?;
            let plan = SwapPlan {
                names: &self.names,
                target: &now,
                scratch: loaded,
                backup,
                mariadb: now.is_mariadb(),
                lock_timeout_secs: self.settings.lock_timeout_secs,
            };
            let script = plan.script().map_err(Error::Other)?;
            Ok((now, defs, script))
        });
        let (before, trigger_defs, script) = match prepared {
            Ok(p) => p,
            Err(e) => return Attempt::NotSwapped(e),
        };
        let Err(e) = self.execute(Some(target), &script) else {
            return Attempt::Done;
        };
        // Did the RENAME happen? It is atomic: one moved table tells.
        let renamed = if let Some(t) = loaded.tables.first() {
            self.catalog(scratch).map(|c| !c.tables.contains(t))
        } else if let Some(t) = before.tables.first() {
            self.catalog(old).map(|c| c.tables.contains(t))
        } else {
            Ok(true)
        };
        match renamed {
            Ok(true) => Attempt::Broken(Error::Other(format!(
                "the tables of {target:?} were swapped in, but recreating its triggers, views, \
                 routines or events then failed: {}; {target:?} holds the restored tables but \
                 may lack some of those objects, and its previous tables are kept in {old:?} \
                 until the next restore; fix the cause and restore again",
                e.message()
            ))),
            Ok(false) => match self.put_back_triggers(&trigger_defs) {
                Ok(()) => Attempt::NotSwapped(e),
                Err(r) => {
                    for def in &trigger_defs {
                        warn(format!(
                            "trigger of {target:?} as it was: {}",
                            String::from_utf8_lossy(&def.create)
                        ));
                    }
                    Attempt::Broken(Error::Other(format!(
                        "the swap failed before moving any table ({}), and putting back the \
                         triggers of {target:?} it had dropped failed too ({}); {target:?} has \
                         its previous tables but may lack triggers, whose definitions are \
                         logged above: recreate them by hand",
                        e.message(),
                        r.message()
                    )))
                }
            },
            Err(r) => Attempt::Broken(Error::Other(format!(
                "the swap of {target:?} failed ({}), and whether it had moved the tables \
                 could not be checked ({}); compare {target:?}, {old:?} and {scratch:?} by hand",
                e.message(),
                r.message()
            ))),
        }
    }

    /// Recreates the target's triggers a failed swap session dropped.
    fn put_back_triggers(&self, captured: &[Definition]) -> Result<(), Error> {
        if captured.is_empty() {
            return Ok(());
        }
        let target = &self.names.target;
        let now = self.catalog(target)?;
        let script =
            plan::restore_triggers_script(captured, &now.triggers).map_err(Error::Other)?;
        if let Some(script) = script {
            info(format!("putting back the triggers of {target:?}"));
            self.execute(Some(target), &script)?;
        }
        Ok(())
    }

    /// After a failure before the swap: the scratch and old databases go,
    /// and the target too if this run created it (it is still empty).
    fn clean_after_failure(&self, created_target: bool) {
        self.drop_quietly(&self.names.scratch);
        self.drop_quietly(&self.names.old);
        if created_target {
            self.drop_quietly(&self.names.target);
        }
    }

    fn drop_and_load(&self, load: impl FnOnce(Command) -> Result<(), Error>) -> Result<(), Error> {
        let target = &self.names.target;
        let before = self.catalog(target)?;
        info(format!(
            "mode=replace: dropping and recreating {target:?}, then loading into it"
        ));
        let mut script = sql::drop_database(target);
        script.push_str(&format!("CREATE DATABASE {}", sql::ident(target)));
        if let Some((cs, coll)) = &before.charset {
            let cs = sql::word(cs).map_err(Error::Other)?;
            let coll = sql::word(coll).map_err(Error::Other)?;
            script.push_str(&format!(" CHARACTER SET {cs} COLLATE {coll}"));
        }
        script.push_str(";\n");
        self.execute(None, script.as_bytes())?;
        load(self.loader(target)).map_err(|e| {
            e.context(format!(
                "mode=replace dropped {target:?} before loading, so it now holds a partial \
                 restore; restore again"
            ))
        })?;
        info(format!("database {target:?} is live"));
        Ok(())
    }

    /// Best effort: a leftover is also dropped by the next run.
    fn drop_quietly(&self, db: &str) {
        if let Err(e) = self.execute(None, sql::drop_database(db).as_bytes()) {
            warn(format!(
                "could not drop database {db:?} ({}); the next restore drops it, or drop it by hand",
                e.message()
            ));
        }
    }

    /// `e`, saying that the target was not touched.
    fn unchanged(&self, e: Error, existed: bool) -> Error {
        let target = &self.names.target;
        e.context(if existed {
            format!("target database {target:?} left unchanged")
        } else {
            format!("target database {target:?} not created")
        })
    }
}

/// Lock wait timeout (1205) or deadlock (1213): worth another attempt.
fn is_lock_conflict(e: &Error) -> bool {
    let m = e.message();
    m.contains("ERROR 1205") || m.contains("ERROR 1213")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> ExitStatus {
        ExitStatus {
            success: false,
            code: Some(1),
            signal: None,
            stderr_tail: stderr.into(),
        }
    }

    #[test]
    fn a_cut_dump_is_a_bad_artifact() {
        let e = load_error(
            "mariadb",
            &failed(
                "ERROR 1231 (42000) at line 9: Variable 'sql_mode' can't be set to the value of \
                 'ENVSYNC_DUMP_IS_TRUNCATED'",
            ),
        );
        assert!(
            matches!(&e, Error::BadArtifact(m) if m.contains("truncated")),
            "{e:?}"
        );
        assert!(looks_damaged(&e));
        let e = load_error("mariadb", &failed("ERROR 1045 (28000): Access denied"));
        assert!(
            matches!(&e, Error::ProgramFailed(m) if m.contains("Access denied")),
            "{e:?}"
        );
        assert!(!looks_damaged(&e));
        let syntax = load_error("mariadb", &failed("ERROR 1064 (42000) at line 5: syntax"));
        assert!(looks_damaged(&syntax));
    }

    #[test]
    fn lock_conflicts_are_retried() {
        let e = exit_error(
            "mariadb",
            &failed("ERROR 1205 (HY000) at line 8: Lock wait timeout"),
        );
        assert!(is_lock_conflict(&e));
        let e = exit_error("mariadb", &failed("ERROR 1213 (40001): Deadlock found"));
        assert!(is_lock_conflict(&e));
        let e = exit_error(
            "mariadb",
            &failed("ERROR 1142 (42000): DROP command denied"),
        );
        assert!(!is_lock_conflict(&e));
    }
}
