//! envsync engine plugin for MongoDB and Amazon DocumentDB, driving
//! `mongosh` (the npm package; no mongodump or mongorestore needed).
//!
//! - backup: every collection's options, validator, indexes and documents
//!   as canonical Extended JSON, one document per line (`format`), dumped
//!   by a mongosh script and spliced into the artifact (`backup`);
//! - restore and copy: loaded into shadow collections of the target
//!   database, counted, indexed, verified, then made live one collection at
//!   a time with `renameCollection … dropTarget` inside the database
//!   (`load`); on any failure before that the shadows are dropped;
//! - transform: a mongosh script against the target (`transform`);
//! - sanitised copies: documents through the step's sanitiser (`sanitise`);
//! - sanitised backups: written by the host from the documents the
//!   sanitiser kept (`sanitised_backup`, format 2);
//! - schema: collections and their fields, for `sanitise check` (`schema`).
//!
//! The scripts mongosh runs are in `src/js/`; credentials reach mongosh only
//! through the environment the host builds (`settings`).

mod backup;
mod copy;
mod format;
mod load;
mod restore;
mod sanitise;
mod sanitised_backup;
mod schema;
mod settings;
mod shell;
mod transform;

use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, Piece,
    PluginInfo, StructurePart, TableInfo,
};

/// How many leading bytes `check` looks at.
const HEAD_SIZE: u32 = 256;

struct Mongo;

impl Engine for Mongo {
    fn describe() -> PluginInfo {
        PluginInfo {
            // The dashboards' name for the engine.
            metrics_engine: Some("mongo".into()),
            name: "mongodb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "MongoDB 4.4+ and Amazon DocumentDB through mongosh: canonical Extended \
                          JSON backups with indexes, options and validators; restores and copies \
                          into shadow collections made live by renameCollection; mongosh \
                          transforms; sanitised backups and copies"
                .into(),
            operations: vec![
                Operation::Backup,
                Operation::Restore,
                Operation::Transform,
                Operation::Copy,
            ],
            programs: vec![shell::PROGRAM.into()],
            artifact: artifact_format(),
            // Format 2 of the same format: `restore` reads both.
            sanitised_artifact: Some(artifact_format()),
            credentials: CredentialEnv {
                host: Some(settings::HOST_VAR.into()),
                port: Some(settings::PORT_VAR.into()),
                user: Some(settings::USER_VAR.into()),
                password: Some(settings::PASSWORD_VAR.into()),
                passthrough: vec![],
            },
            params: settings::infos(),
        }
    }

    fn check(head: Vec<u8>) -> Result<(), Error> {
        format::check_head(&head).map_err(Error::BadArtifact)
    }

    fn backup(artifact: &ByteSink) -> Result<(), Error> {
        backup::backup(artifact)
    }

    fn restore(artifact: &ByteSource) -> Result<(), Error> {
        restore::restore(artifact).map_err(|e| e.context("restore failed"))
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

    fn backup_structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
        sanitised_backup::structure(part, artifact)
    }

    fn backup_rows() -> Result<(), Error> {
        sanitised_backup::rows()
    }

    fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
        sanitised_backup::encode(piece)
    }
}

fn artifact_format() -> ArtifactFormat {
    ArtifactFormat {
        name: format::FORMAT.into(),
        extension: "ejson".into(),
        // JSON text: the host compresses it.
        compressed: false,
        head_size: HEAD_SIZE,
    }
}

envsync_plugin_sdk::export_engine!(Mongo);
