//! Replacing the target database safely, shared by restore and copy: load
//! into a scratch database `<D>-restore`, then rename it over `D` in one
//! transaction. Until that transaction commits, `D` is never touched, so
//! every failure before it leaves `D` exactly as it was.

use crate::names::Names;
use crate::programs::run_psql;
use crate::settings::LoadSettings;
use crate::sql;
use envsync_plugin_sdk::{Command, Error, connection, info, warn};
use std::thread;

/// Replaces the target database with what `load` puts into the scratch
/// database. `load` gets the replacement, whose [`Replacement::pg_restore`]
/// and [`Replacement::psql_load`] are ready commands (target credentials,
/// scratch database, flags); it must run one to success and check its input
/// (e.g. `artifact.verify()`), or return the error that stops the swap.
pub fn replace_target(load: impl FnOnce(&Replacement) -> Result<(), Error>) -> Result<(), Error> {
    replace(None, |job, _| load(job))
}

/// [`replace_target`] for a load that can resume: when the scratch
/// database holds an earlier, interrupted load of the artifact `id` (its
/// bookkeeping says so, see `chunked_restore`), it is kept and `load` gets
/// `true`; and when `load` fails for any reason but a damaged artifact, the
/// scratch database is kept for the rerun instead of dropped.
pub fn replace_target_resumable(
    id: &str,
    load: impl FnOnce(&Replacement, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    replace(Some(id), load)
}

fn replace(
    resume_id: Option<&str>,
    load: impl FnOnce(&Replacement, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    let target = connection("target")?.database;
    let names = Names::for_target(&target).map_err(Error::InvalidParam)?;
    let settings = LoadSettings::read()?;
    if settings.maintenance_db == names.target {
        return Err(Error::InvalidParam(format!(
            "the target database {:?} is also the maintenance database, which psql must stay \
             connected to while it renames the target; set maintenance-database to another \
             database (e.g. template1)",
            names.target
        )));
    }
    let job = Replacement { names, settings };

    let existed = job.target_exists()?;
    // A failure here is not "nothing to resume": preparing the scratch
    // database would throw away what an interrupted restore loaded.
    let resumed = match resume_id {
        Some(id) => job.holds_load_of(id).map_err(|e| {
            job.unchanged(
                e.context(format!(
                    "could not tell whether scratch database {:?} holds an interrupted restore \
                     to resume (nothing was changed; run the restore again)",
                    job.names.scratch
                )),
                existed,
            )
        })?,
        None => false,
    };
    if resumed {
        info(format!(
            "{} database {:?}: resuming the interrupted load in scratch database {:?}",
            if existed { "replacing" } else { "creating" },
            job.names.target,
            job.names.scratch
        ));
        job.end_leftover_sessions();
    } else {
        info(format!(
            "{} database {:?}: loading into scratch database {:?} first",
            if existed { "replacing" } else { "creating" },
            job.names.target,
            job.names.scratch
        ));
        job.psql(&sql::prepare_scratch(&job.names.scratch, &job.names.old))
            .map_err(|e| {
                e.context(format!(
                    "could not create scratch database {:?}",
                    job.names.scratch
                ))
            })
            .map_err(|e| job.unchanged(e, existed))?;
    }

    // With an `owner`, pg_restore creates objects as that role (--role), so
    // it must own the database, and thereby the public schema, before the
    // load. Otherwise the connecting user loads into its own database and
    // hands it to the replaced database's owner afterwards.
    let loaded = match &job.settings.owner {
        Some(owner) if resumed => load(&job, resumed).and_then(|()| job.give_to(owner)),
        Some(owner) => job.give_to(owner).and_then(|()| load(&job, resumed)),
        None => load(&job, resumed).and_then(|()| job.keep_owner()),
    };
    if let Err(e) = loaded {
        let damaged = matches!(e, Error::Integrity(_) | Error::BadArtifact(_));
        if resume_id.is_some() && !damaged {
            warn(format!(
                "kept scratch database {:?} with what was loaded so far: running the same \
                 restore again resumes it (a restore of another artifact drops it)",
                job.names.scratch
            ));
        } else {
            job.drop_scratch();
        }
        return Err(job.unchanged(job.hint(e), existed));
    }

    job.swap(existed)?;
    info(format!("database {:?} is live", job.names.target));
    if existed {
        info(format!(
            "dropping the previous copy, now {:?}",
            job.names.old
        ));
        if let Err(e) = job.psql(&sql::drop_database(&job.names.old)) {
            warn(format!(
                "the restore succeeded, but the previous copy {:?} could not be dropped ({}); \
                 drop it by hand, or the next restore will",
                job.names.old,
                e.message()
            ));
        }
    }
    Ok(())
}

pub struct Replacement {
    names: Names,
    settings: LoadSettings,
}

impl Replacement {
    fn psql(&self, script: &str) -> Result<String, Error> {
        run_psql(&self.settings.maintenance_db, script)
    }

    /// Runs `script` with psql in the scratch database.
    pub fn scratch_psql(&self, script: &str) -> Result<String, Error> {
        run_psql(&self.names.scratch, script)
    }

    /// Ends the sessions the interrupted load left on the scratch database,
    /// so they neither hold locks the rerun waits for nor take cores. Not
    /// being allowed to (another role's sessions) only costs time.
    fn end_leftover_sessions(&self) {
        match self.psql(&sql::end_sessions_on(&self.names.scratch)) {
            Ok(out) if out.trim() != "0" => info(format!(
                "ended {} session(s) the interrupted restore left on {:?}",
                out.trim(),
                self.names.scratch
            )),
            Ok(_) => {}
            Err(e) => warn(format!(
                "could not end the sessions the interrupted restore left on {:?} ({}); \
                 the rerun may wait for them",
                self.names.scratch,
                e.message()
            )),
        }
    }

    /// True when the scratch database holds an interrupted load of the
    /// artifact `id` that got past its schema (see `chunked_restore`).
    fn holds_load_of(&self, id: &str) -> Result<bool, Error> {
        if self
            .psql(&sql::exists(&self.names.scratch))?
            .trim()
            .is_empty()
        {
            return Ok(false);
        }
        let bookkeeping = self.scratch_psql(&crate::chunked_restore::has_bookkeeping_query())?;
        if bookkeeping.trim() != "t" {
            return Ok(false);
        }
        let out = self.scratch_psql(&crate::chunked_restore::resumable_id_query())?;
        Ok(out.strip_suffix('\n').unwrap_or(&out) == id)
    }

    /// psql running a script from stdin in the scratch database, one
    /// session of a parallel load: triggers quiet as for pg_restore,
    /// commits not waiting for the disk (the scratch database is not live
    /// until the swap, and a crash only means a rerun), more memory for
    /// index builds, and each build in its own session unless the operator
    /// allows parallel workers (`index-build-workers`). With the text to
    /// send first (its application name, `SET ROLE` of `owner`).
    pub fn psql_session(&self) -> (Command, String) {
        let mut options = format!(
            "-c synchronous_commit=off -c maintenance_work_mem={} \
             -c max_parallel_maintenance_workers={}",
            self.settings.maintenance_work_mem, self.settings.index_build_workers
        );
        if self.settings.disable_triggers {
            options.push_str(" -c session_replication_role=replica");
        }
        let cmd = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", sql::conninfo(&self.names.scratch)))
            .args(["-f", "-"])
            .connection("target")
            .env("PGOPTIONS", &options);
        // Named so operators (and tests) can tell the load sessions apart.
        let mut preamble = "SET application_name = 'envsync-restore';\n".to_string();
        if let Some(owner) = &self.settings.owner {
            preamble.push_str(&format!("SET ROLE {};\n", sql::ident(owner)));
        }
        (cmd, preamble)
    }

    fn target_exists(&self) -> Result<bool, Error> {
        Ok(!self
            .psql(&sql::exists(&self.names.target))?
            .trim()
            .is_empty())
    }

    /// pg_restore into the scratch database. Ownership in the archive is
    /// ignored (--no-owner): objects belong to `owner` via --role, or to the
    /// connecting user. Triggers (including foreign-key checks) stay quiet in
    /// replica mode, so rows load in any order.
    pub fn pg_restore(&self) -> Command {
        let mut cmd = Command::new("pg_restore")
            .arg(format!("--dbname={}", sql::conninfo(&self.names.scratch)))
            .args(["--exit-on-error", "--no-owner"])
            .connection("target");
        if let Some(owner) = &self.settings.owner {
            cmd = cmd.arg(format!("--role={owner}"));
        }
        cmd = cmd.args(self.settings.restore_flags.iter().cloned());
        if self.settings.disable_triggers {
            cmd = cmd.env("PGOPTIONS", "-c session_replication_role=replica");
        }
        cmd
    }

    /// psql loading a plain SQL dump from stdin into the scratch database
    /// in one transaction, stopping at the first error; with the text to
    /// send before the dump (`SET ROLE` of `owner`, as pg_restore --role).
    /// Triggers are quiet in replica mode as for pg_restore. The
    /// pg_restore-only `restore-flags` do not apply.
    pub fn psql_load(&self) -> (Command, String) {
        let mut cmd = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
            .arg(format!("--dbname={}", sql::conninfo(&self.names.scratch)))
            .args(["-f", "-"])
            .connection("target");
        if self.settings.disable_triggers {
            cmd = cmd.env("PGOPTIONS", "-c session_replication_role=replica");
        }
        if !self.settings.restore_flags.is_empty() {
            warn(format!(
                "restore-flags ({}) are pg_restore flags and do not apply to a plain SQL dump, \
                 which psql loads",
                self.settings.restore_flags.join(" ")
            ));
        }
        let preamble = match &self.settings.owner {
            Some(owner) => format!("SET ROLE {};\n", sql::ident(owner)),
            None => String::new(),
        };
        (cmd, preamble)
    }

    /// Gives the scratch database the owner of the database it replaces,
    /// so a restore does not silently change who owns the target.
    fn keep_owner(&self) -> Result<(), Error> {
        let out = self.psql(&sql::owner_of(&self.names.target))?;
        match out.strip_suffix('\n').unwrap_or(&out) {
            "" => Ok(()),
            existing => self.give_to(existing),
        }
    }

    fn give_to(&self, owner: &str) -> Result<(), Error> {
        info(format!(
            "giving {:?} to owner {owner:?}",
            self.names.scratch
        ));
        self.psql(&sql::set_owner(&self.names.scratch, owner))
            .map(drop)
            .map_err(|e| e.context(format!("could not make {owner:?} the owner")))
    }

    /// Runs the swap transaction until it commits or the attempts run out.
    fn swap(&self, existed: bool) -> Result<(), Error> {
        let Names {
            target,
            scratch,
            old,
        } = &self.names;
        let attempts = self.settings.swap_retries;
        // The scratch database's oid identifies it after the rename, so a
        // swap that committed but whose psql still failed (lost connection)
        // is recognised instead of being retried into an error.
        let scratch_oid = self
            .psql(&sql::oid_of(scratch))
            .ok()
            .filter(|oid| !oid.trim().is_empty());
        let mut last = None;
        for attempt in 1..=attempts {
            info(format!(
                "swapping {scratch:?} in as {target:?} (attempt {attempt} of {attempts})"
            ));
            match self.psql(&sql::swap(target, scratch, old)) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if scratch_oid.is_some() && self.psql(&sql::oid_of(target)).ok() == scratch_oid
                    {
                        warn(format!(
                            "psql reported an error, but the swap did commit: {}",
                            e.message()
                        ));
                        return Ok(());
                    }
                    warn(format!("swap attempt {attempt} failed: {}", e.message()));
                    last = Some(e);
                }
            }
            if attempt < attempts {
                thread::sleep(self.settings.swap_retry_delay);
            }
        }
        self.drop_scratch();
        let last = last.map(|e| e.message().to_string()).unwrap_or_default();
        Err(Error::ProgramFailed(format!(
            "could not swap {scratch:?} in as {target:?} after {attempts} attempt(s); {}; \
             the restored copy was dropped; last error: {last}",
            if existed {
                format!("{target:?} is intact and accepting connections")
            } else {
                format!("{target:?} was not created")
            }
        )))
    }

    /// Best effort: a leftover scratch database is also dropped by the next run.
    fn drop_scratch(&self) {
        info(format!(
            "dropping scratch database {:?}",
            self.names.scratch
        ));
        if let Err(e) = self.psql(&sql::drop_database(&self.names.scratch)) {
            warn(format!(
                "could not drop scratch database {:?} ({}); the next restore drops it, or drop \
                 it by hand",
                self.names.scratch,
                e.message()
            ));
        }
    }

    /// `e`, with what to do when replica mode was refused.
    fn hint(&self, e: Error) -> Error {
        if !(self.settings.disable_triggers && e.message().contains("session_replication_role")) {
            return e;
        }
        e.context(
            "the database user may not switch triggers off (session_replication_role needs a \
             superuser or GRANT SET ON PARAMETER session_replication_role); grant that, or set \
             disable-triggers=false",
        )
    }

    /// `e`, saying that the target was not touched.
    fn unchanged(&self, e: Error, existed: bool) -> Error {
        e.context(if existed {
            format!("target database {:?} left unchanged", self.names.target)
        } else {
            format!("target database {:?} not created", self.names.target)
        })
    }
}
