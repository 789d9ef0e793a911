//! envsync engine plugin for PostgreSQL: pg_dump custom-format backups,
//! restores through a scratch database and an atomic rename swap, SQL
//! transforms in one transaction, and direct database-to-database copies.

mod backup;
mod copy;
mod flags;
mod format_check;
mod names;
mod programs;
mod restore;
mod settings;
mod sql;
mod swap;
mod transform;

use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, PluginInfo,
};

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
            name: "postgres".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "PostgreSQL: pg_dump custom-format backups, safe restore by scratch \
                          database and rename swap, SQL transforms, direct copy"
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
        backup::backup(artifact)
    }

    fn restore(artifact: &ByteSource) -> Result<(), Error> {
        restore::restore(artifact)
    }

    fn transform(script: &ByteSource) -> Result<(), Error> {
        transform::transform(script)
    }

    fn copy() -> Result<(), Error> {
        copy::copy()
    }
}

envsync_plugin_sdk::export_engine!(Postgres);
