//! envsync engine plugin for MySQL and MariaDB: plain SQL backups with
//! mariadb-dump (or mysqldump), restores through a scratch database and one
//! atomic `RENAME TABLE` swap (no downtime for readers), SQL transforms that
//! roll back on the first error, and direct database-to-database copies.
//!
//! It works with MariaDB's client programs (`mariadb-dump`, `mariadb`) and
//! with MySQL's (`mysqldump`, `mysql`), preferring MariaDB's names and falling
//! back to MySQL's when they are not installed or not allowed.

mod backup;
mod batch;
mod catalog;
mod chunk_cut;
mod chunk_plan;
mod chunked_backup;
mod chunked_restore;
mod copy;
mod deferred_keys;
mod export;
mod flags;
mod format_check;
mod load_progress;
mod names;
mod plan;
mod programs;
mod restore;
mod rows;
mod sanitise;
mod sanitised_backup;
mod schema;
mod settings;
mod sql;
mod swap;
mod transform;

use envsync_plugin_sdk::TableInfo;
use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, Piece,
    PluginInfo, StructurePart,
};

/// How many leading bytes `check` looks at. Also the size under which an
/// artifact is seen whole by `check` (see `format_check`).
pub const HEAD_SIZE: u32 = 4096;

/// The client programs' standard variables, passed through from the host's
/// environment. `MYSQL_HOST` is deliberately absent: `mariadb` honours it but
/// `mariadb-dump`/`mysqldump` ignore it, so a backup and a restore of "the
/// same" connection would reach different servers; the host is given with
/// `--db-host` (passed to every program as `--host`).
const PASSTHROUGH: &[&str] = &["MYSQL_PWD", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT"];

struct MySql;

impl Engine for MySql {
    fn describe() -> PluginInfo {
        PluginInfo {
            metrics_engine: None,
            name: "mysql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "MySQL and MariaDB: plain SQL backups (mariadb-dump or mysqldump), \
                          restore into a scratch database swapped in by one atomic RENAME TABLE, \
                          SQL transforms, direct copy"
                .into(),
            operations: vec![
                Operation::Backup,
                Operation::Restore,
                Operation::Transform,
                Operation::Copy,
            ],
            programs: programs::DECLARED.iter().map(|p| p.to_string()).collect(),
            artifact: artifact_format(),
            // Sanitised backups are the same plain SQL (the rows of the
            // sanitised tables rewritten as extended INSERTs), restored the
            // same way.
            sanitised_artifact: Some(artifact_format()),
            credentials: CredentialEnv {
                // Host, port and user go on the command line (--host, --port,
                // --user) from connection(role): every client honours those,
                // while MYSQL_HOST is ignored by the dump programs.
                host: None,
                port: None,
                user: None,
                password: Some("MYSQL_PWD".into()),
                passthrough: PASSTHROUGH.iter().map(|v| v.to_string()).collect(),
            },
            params: settings::param_infos(),
        }
    }

    fn check(head: Vec<u8>) -> Result<(), Error> {
        if head.starts_with(chunk_plan::MAGIC) {
            // A chunked artifact's plan; seen whole when it is that short.
            if head.len() < HEAD_SIZE as usize {
                chunk_plan::Plan::parse(&head).map_err(Error::BadArtifact)?;
            }
            return Ok(());
        }
        format_check::check_head(&head, HEAD_SIZE as usize).map_err(Error::BadArtifact)
    }

    fn backup(artifact: &ByteSink) -> Result<(), Error> {
        // Chunked only when the operator chose --jobs (docs/decisions/0022):
        // existing tasks keep their one-stream artifacts.
        if !envsync_plugin_sdk::job::parallelism().chosen {
            return backup::backup(artifact);
        }
        if !settings::dump_flags()?.is_empty() {
            envsync_plugin_sdk::warn(
                "dump-flags is set: a chunked backup cannot honour arbitrary dump flags, so \
                 this backup is one dump stream (--jobs applies to restores only)",
            );
            return backup::backup(artifact);
        }
        let jobs = envsync_plugin_sdk::job::parallelism().jobs.max(1) as usize;
        chunked_backup::backup(artifact, jobs, settings::chunk_bytes()?)
    }

    fn export_dump(artifact: &ByteSource, out: ByteSink) -> Result<(), Error> {
        export::export_dump(artifact, &out)?;
        out.close()
    }

    fn backup_structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
        sanitised_backup::structure(part, artifact)
    }

    fn backup_rows() -> Result<(), Error> {
        sanitised_backup::rows()
    }

    fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
        sanitised_backup::encode(piece)
    }

    fn restore(artifact: &ByteSource) -> Result<(), Error> {
        if !envsync_plugin_sdk::chunks::contents()?.is_empty() {
            return chunked_restore::restore(artifact);
        }
        restore::restore(artifact)
    }

    fn transform(script: &ByteSource) -> Result<(), Error> {
        transform::transform(script)
    }

    fn copy() -> Result<(), Error> {
        copy::copy()
    }

    fn schema() -> Result<Vec<TableInfo>, Error> {
        schema::schema()
    }
}

/// Plain SQL text (`mysql-sql`, `.sql`), normal and sanitised alike.
fn artifact_format() -> ArtifactFormat {
    ArtifactFormat {
        name: "mysql-sql".into(),
        extension: "sql".into(),
        // Plain SQL text: the host compresses it.
        compressed: false,
        head_size: HEAD_SIZE,
    }
}

envsync_plugin_sdk::export_engine!(MySql);
