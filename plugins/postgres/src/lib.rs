//! envsync engine plugin for PostgreSQL: pg_dump custom-format backups,
//! restores through a scratch database and an atomic rename swap, SQL
//! transforms in one transaction, and direct database-to-database copies.
//! Sanitised backups and copies dump plain SQL and pass the rows of its
//! COPY blocks through the step's sanitiser (`sanitised`, `copydata`).

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod alloc;
mod backup;
mod chunked_backup;
mod chunked_restore;
mod copy;
mod copydata;
mod export;
mod flags;
mod format_check;
mod index_lane;
mod load_progress;
mod names;
mod plan;
mod post_data;
mod programs;
mod restore;
mod sanitised;
mod sanitised_backup;
mod schema;
mod settings;
mod sql;
mod swap;
mod transform;

use envsync_plugin_sdk::bindings::envsync::plugin::types::TableInfo;
use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, Piece,
    PluginInfo, StructurePart,
};

/// Fast small blocks for the millions of values a sanitised dump allocates
/// (see `alloc`); single-threaded WebAssembly only.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOC: alloc::SmallAlloc = alloc::SmallAlloc::new();

/// Standard libpq environment variables passed through from the host's
/// environment, so operators keep their usual connection settings.
const PASSTHROUGH: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGCHANNELBINDING",
    "PGGSSENCMODE",
    "PGKRBSRVNAME",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGTZ",
    "PGCLIENTENCODING",
    "PGTARGETSESSIONATTRS",
];

struct Postgres;

impl Engine for Postgres {
    fn describe() -> PluginInfo {
        PluginInfo {
            metrics_engine: None,
            name: "postgres".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "PostgreSQL: pg_dump custom-format backups, safe restore by scratch \
                          database and rename swap, SQL transforms, direct copy, \
                          sanitising of COPY rows in plain dumps"
                .into(),
            operations: vec![
                Operation::Backup,
                Operation::Restore,
                Operation::Transform,
                Operation::Copy,
            ],
            programs: vec!["pg_dump".into(), "pg_restore".into(), "psql".into()],
            artifact: ArtifactFormat {
                name: "postgres-custom".into(),
                extension: "pgdump".into(),
                compressed: true,
                head_size: 4096,
            },
            sanitised_artifact: Some(ArtifactFormat {
                name: "postgres-plain".into(),
                extension: "sql".into(),
                compressed: false,
                head_size: 4096,
            }),
            credentials: CredentialEnv {
                host: Some("PGHOST".into()),
                port: Some("PGPORT".into()),
                user: Some("PGUSER".into()),
                password: Some("PGPASSWORD".into()),
                passthrough: PASSTHROUGH.iter().map(|v| v.to_string()).collect(),
            },
            params: settings::param_infos(),
        }
    }

    fn check(head: Vec<u8>) -> Result<(), Error> {
        format_check::check_head(&head).map_err(Error::BadArtifact)
    }

    fn backup(artifact: &ByteSink) -> Result<(), Error> {
        // `--jobs` makes a chunked artifact (docs/decisions/0019); without
        // it, or with pg_dump flags of the operator's, the backup stays one
        // pg_dump stream.
        let parallelism = envsync_plugin_sdk::job::parallelism();
        if !parallelism.chosen {
            return backup::backup(artifact);
        }
        if settings::custom_dump_flags() {
            envsync_plugin_sdk::warn(
                "dump-flags is set: a chunked backup cannot honour arbitrary pg_dump flags, so \
                 this backup is one pg_dump stream (--jobs applies to restores only)",
            );
            return backup::backup(artifact);
        }
        let jobs = parallelism.jobs as usize;
        chunked_backup::backup(artifact, jobs, settings::chunk_blocks()?)
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
        restore::restore(artifact)
    }

    fn export_dump(artifact: &ByteSource, out: ByteSink) -> Result<(), Error> {
        export::export_dump(artifact, out)
    }

    fn transform(script: &ByteSource) -> Result<(), Error> {
        transform::transform(script)
    }

    fn copy() -> Result<(), Error> {
        match sanitised::plan() {
            Some(tables) => swap::replace_target(|job| sanitised::copy_into(job, tables)),
            None => copy::copy(),
        }
    }

    fn schema() -> Result<Vec<TableInfo>, Error> {
        schema::schema()
    }
}

envsync_plugin_sdk::export_engine!(Postgres);
