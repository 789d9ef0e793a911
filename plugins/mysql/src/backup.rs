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
//! Sanitised backups are written by the host from three calls instead
//! (`sanitised_backup.rs`).

use crate::programs::Dumper;
use crate::settings;
use envsync_plugin_sdk::{ByteSink, Error, connection, info};

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let source = connection("source")?;
    let extra = settings::dump_flags()?;
    let dumper = Dumper::detect()?;
    info(format!(
        "dumping {:?} on {} with {} {}",
        source.database,
        source.instance,
        dumper.program,
        dumper.describe_flags(&extra)
    ));
    let dump = dumper.command("source", &source, &extra).spawn()?;
    // The bytes go host-side from the dump's stdout to the store; Ok only
    // when the dump exited 0 and every byte reached the artifact.
    let bytes = dump.drain_into(artifact)?;
    info(format!("{} wrote {bytes} bytes", dumper.program));
    Ok(())
}
