//! envsync engine plugin for SQLite, built on the plugin SDK alone and
//! dropped into the host's plugin folder like any third-party plugin: the
//! host knows nothing about SQLite. It drives the `sqlite3` shell through
//! the host's process capability: `.dump` backups, restores into a scratch
//! file beside the target renamed over it with `mv` (atomic within a
//! folder), SQL transforms in one transaction, and direct copies.
//!
//! A connection's `database` is the path of the database file (see
//! `paths`). The plugin has no file system access of its own, so removing
//! and renaming files go through `rm` and `mv`, declared like `sqlite3`.

mod backup;
mod copy;
mod format_check;
mod paths;
mod restore;
mod schema;
mod settings;
mod shell;
mod swap;
mod transform;

use envsync_plugin_sdk::TableInfo;
use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, PluginInfo,
};

/// How many leading bytes `check` looks at. Also the size under which an
/// artifact is seen whole by `check`, which then checks its end too.
const HEAD_SIZE: u32 = 4096;

struct Sqlite;

impl Engine for Sqlite {
    fn describe() -> PluginInfo {
        PluginInfo {
            metrics_engine: None,
            name: "sqlite".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SQLite: sqlite3 .dump backups, restore into a file beside the target \
                          renamed over it atomically, SQL transforms in one transaction, copy"
                .into(),
            operations: vec![
                Operation::Backup,
                Operation::Restore,
                Operation::Transform,
                Operation::Copy,
            ],
            programs: shell::DECLARED.iter().map(|p| p.to_string()).collect(),
            artifact: ArtifactFormat {
                name: "sqlite-sql".into(),
                extension: "sqlite.sql".into(),
                // Plain SQL text: the host compresses it.
                compressed: false,
                head_size: HEAD_SIZE,
            },
            // No row-level rewriting of `.dump` output yet: the host refuses
            // sanitised steps with this plugin.
            sanitised_artifact: None,
            // A database file has no server, user or password. SQLite's own
            // variable for its temporary files is passed through.
            credentials: CredentialEnv {
                host: None,
                port: None,
                user: None,
                password: None,
                passthrough: vec!["SQLITE_TMPDIR".into()],
            },
            params: settings::infos(),
        }
    }

    fn check(head: Vec<u8>) -> Result<(), Error> {
        format_check::check_head(&head, HEAD_SIZE as usize).map_err(Error::BadArtifact)
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

    fn schema() -> Result<Vec<TableInfo>, Error> {
        schema::schema()
    }
}

envsync_plugin_sdk::export_engine!(Sqlite);
