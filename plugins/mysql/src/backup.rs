//! backup: mariadb-dump (or mysqldump) of the source database, streamed into
//! the artifact.
//!
//! The flags (see `settings::DUMP_DEFAULTS`):
//! - `--single-transaction`: a consistent snapshot of InnoDB tables without
//!   locking them (readers and writers of the source go on);
//! - `--quick`: rows are streamed, not buffered in the dump program;
//! - `--routines --triggers --events`: the whole database, not only tables;
//! - `--hex-blob`: binary values as hex, so no byte depends on a character set;
//! - `--default-character-set=utf8mb4`: text leaves the server unconverted
//!   (MySQL 5.7's mysqldump would default to 3-byte utf8 and mangle emoji);
//! - `--skip-add-locks`: no LOCK TABLES around the inserts; the scratch
//!   database nobody else uses does not need them, and a restore then needs
//!   no LOCK TABLES privilege;
//! - `--no-tablespaces`: MySQL 8 would need the PROCESS privilege to dump
//!   tablespaces, which a restore under another name does not use;
//! - `--set-gtid-purged=OFF` with MySQL's mysqldump (see `programs::Dumper`).
//!
//! The database is named after `--`, without `--databases`: the dump has no
//! CREATE DATABASE or USE, so it loads into any database.

//!
//! When the step sanitises, the dump passes through the plugin instead, with
//! the flags of `sanitise::DUMP_FLAGS` added, and the rows of the tables the
//! sanitiser wants are rewritten on their way (see `rows.rs`).

use crate::programs::Dumper;
use crate::{sanitise, settings};
use envsync_plugin_sdk::{ByteSink, Error, connection, info};

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let source = connection("source")?;
    let mut extra = settings::dump_flags()?;
    let plan = sanitise::plan();
    if plan.is_some() {
        extra.extend(sanitise::DUMP_FLAGS.iter().map(|f| f.to_string()));
    }
    let dumper = Dumper::detect()?;
    info(format!(
        "dumping {:?} on {} with {} {}",
        source.database,
        source.instance,
        dumper.program,
        dumper.describe_flags(&extra)
    ));
    let mut dump = dumper.command("source", &source, &extra).spawn()?;
    if let Some(tables) = plan {
        let out = dump.take_stdout()?;
        let rewritten = sanitise::rewrite(&out, artifact, &source.database, tables);
        drop(out);
        return match rewritten {
            // Ok only when the dump also exited 0 (a dump that failed
            // part-way may end between two statements).
            Ok(_) => dump.finish(),
            // The dump is killed; its own failure, if it had one, is the cause.
            Err(e) => Err(dump.abort_upstream(e)),
        };
    }
    // The bytes go host-side from the dump's stdout to the store; Ok only
    // when the dump exited 0 and every byte reached the artifact.
    let bytes = dump.drain_into(artifact)?;
    info(format!("{} wrote {bytes} bytes", dumper.program));
    Ok(())
}
