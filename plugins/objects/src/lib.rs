//! envsync engine plugin copying an object-store prefix (S3 or compatible)
//! from the `source` location to the `target` location, incrementally,
//! through the host's `objects` capability: the plugin names roles and
//! relative keys, the host holds endpoints and credentials.
//!
//! A connection's `database` is `BUCKET/PREFIX`, its `host` the endpoint
//! URL, its `user` and password the access key (see README.md).

mod listing;
mod settings;
mod sync;

use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, PluginInfo,
    TableInfo,
};

struct Objects;

/// Why backup and restore are not offered (docs: README.md).
const ONLY_COPY: &str = "the objects plugin copies a prefix from one location to another \
    (op = \"copy\"); it makes no backups or restores: an object store is already durable \
    storage, and an artifact holding a whole bucket could be neither restored incrementally \
    nor streamed object by object. Use a copy step into a location you keep instead";

impl Engine for Objects {
    fn describe() -> PluginInfo {
        PluginInfo {
            metrics_engine: None,
            name: "objects".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Object stores (S3 and compatible): incremental prefix copy between \
                          locations, server-side when one endpoint and key allow, with delete, \
                          include/exclude, dry run and redacted placeholders"
                .into(),
            operations: vec![Operation::Copy],
            programs: vec![],
            // Never used (no backups); a format is part of every plugin's info.
            artifact: ArtifactFormat {
                name: "none".into(),
                extension: "objects".into(),
                compressed: false,
                head_size: 0,
            },
            sanitised_artifact: None,
            credentials: CredentialEnv {
                host: None,
                port: None,
                user: None,
                password: None,
                passthrough: vec![],
            },
            params: settings::infos(),
        }
    }

    fn check(_head: Vec<u8>) -> Result<(), Error> {
        Err(Error::BadArtifact(ONLY_COPY.into()))
    }

    fn backup(_artifact: &ByteSink) -> Result<(), Error> {
        Err(Error::InvalidParam(ONLY_COPY.into()))
    }

    fn restore(_artifact: &ByteSource) -> Result<(), Error> {
        Err(Error::InvalidParam(ONLY_COPY.into()))
    }

    fn transform(_script: &ByteSource) -> Result<(), Error> {
        Err(Error::InvalidParam(ONLY_COPY.into()))
    }

    fn copy() -> Result<(), Error> {
        let settings = settings::Settings::from_params()?;
        sync::run(&settings)
    }

    fn schema() -> Result<Vec<TableInfo>, Error> {
        Err(Error::InvalidParam(
            "an object store has no tables: the objects plugin cannot be sanitised; use \
             redact patterns to keep objects out of the target"
                .into(),
        ))
    }
}

envsync_plugin_sdk::export_engine!(Objects);
