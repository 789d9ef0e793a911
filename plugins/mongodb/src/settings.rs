//! The plugin's parameters and the job configuration each mongosh script
//! gets (`ENVSYNC`): the database, the connection string options, batch
//! sizes. Never a credential: those reach mongosh through the environment
//! the host builds (`describe().credentials`).

use envsync_plugin_sdk::{
    Error, ParamInfo, connection, param, param_bool, param_infos, param_number,
};
use serde_json::{Map, Value, json};

/// Where the host puts the connection's host, port, user and password for
/// mongosh; `js/prelude.js` reads them.
pub const HOST_VAR: &str = "ENVSYNC_MONGODB_HOST";
pub const PORT_VAR: &str = "ENVSYNC_MONGODB_PORT";
pub const USER_VAR: &str = "ENVSYNC_MONGODB_USER";
pub const PASSWORD_VAR: &str = "ENVSYNC_MONGODB_PASSWORD";

const READ_CONCERNS: &[&str] = &["snapshot", "majority", "local", "available", "none"];

const PARAMS: &[(&str, &str, Option<&str>)] = &[
    (
        "read-concern",
        "Read concern of the backup's reads: snapshot (each collection read at one point in \
         time; MongoDB replica sets 5.0+), majority, local, available, or none (the server's \
         default). DocumentDB and standalone servers need local or majority, and then a \
         collection written during the backup may be read part before, part after a write.",
        Some("snapshot"),
    ),
    (
        "batch-size",
        "Documents per cursor batch and per insertMany while loading.",
        Some("1000"),
    ),
    (
        "auth-source",
        "The database the user is defined in (authSource), when a user is configured.",
        Some("admin"),
    ),
    (
        "replica-set",
        "Connect to this replica set (DocumentDB: rs0); unset, connect directly to the \
         configured host.",
        None,
    ),
    (
        "tls",
        "Connect with TLS (DocumentDB requires it).",
        Some("false"),
    ),
    (
        "tls-ca-file",
        "CA bundle for TLS (a path mongosh may read: under /etc/ssl, /usr or /opt).",
        None,
    ),
    (
        "retry-writes",
        "Retryable writes (DocumentDB does not support them).",
        Some("false"),
    ),
    (
        "keep-other-collections",
        "On restore and copy, keep the target's collections the backup does not have \
         (default: drop them, so the target matches the backup).",
        Some("false"),
    ),
    (
        "connect-timeout-ms",
        "How long mongosh waits for the server (serverSelectionTimeoutMS).",
        Some("30000"),
    ),
];

pub fn infos() -> Vec<ParamInfo> {
    param_infos(PARAMS)
}

/// The largest transform script read (it is written to the child's scratch
/// folder and run from there).
const SCRIPT_LIMIT: u64 = 64 << 20;
/// At most this many bytes of documents per insertMany.
const BATCH_BYTES: u64 = 8 << 20;

/// `ENVSYNC` for a script acting on connection `role`.
pub fn config(role: &str) -> Result<Value, Error> {
    let conn = connection(role)?;
    if conn.database.is_empty()
        || conn
            .database
            .contains(['/', '\\', '.', ' ', '"', '$', '\0'])
    {
        return Err(Error::InvalidParam(format!(
            "{:?} is not a MongoDB database name (no / \\ . space \" $ characters)",
            conn.database
        )));
    }
    let read_concern = param("read-concern").unwrap_or_else(|| "snapshot".into());
    if !READ_CONCERNS.contains(&read_concern.as_str()) {
        return Err(Error::InvalidParam(format!(
            "read-concern={read_concern:?}: use one of {}",
            READ_CONCERNS.join(", ")
        )));
    }
    let batch_size: u32 = param_number("batch-size", 1000)?;
    if !(1..=100_000).contains(&batch_size) {
        return Err(Error::InvalidParam(format!(
            "batch-size={batch_size}: use 1 to 100000"
        )));
    }
    let timeout: u32 = param_number("connect-timeout-ms", 30_000)?;
    let mut uri = Map::new();
    uri.insert("appName".into(), json!("envsync"));
    uri.insert(
        "serverSelectionTimeoutMS".into(),
        json!(timeout.to_string()),
    );
    uri.insert(
        "retryWrites".into(),
        json!(param_bool("retry-writes", false)?.to_string()),
    );
    match param("replica-set") {
        Some(set) => uri.insert("replicaSet".into(), json!(set)),
        None => uri.insert("directConnection".into(), json!("true")),
    };
    if conn.user.is_some() {
        uri.insert(
            "authSource".into(),
            json!(param("auth-source").unwrap_or_else(|| "admin".into())),
        );
    }
    if param_bool("tls", false)? {
        uri.insert("tls".into(), json!("true"));
    }
    if let Some(ca) = param("tls-ca-file") {
        uri.insert("tlsCAFile".into(), json!(ca));
    }
    Ok(json!({
        "database": conn.database,
        "uriOptions": uri,
        "batchSize": batch_size,
        "batchBytes": BATCH_BYTES,
        "readConcern": if read_concern == "none" { Value::Null } else { json!(read_concern) },
        "scriptLimit": SCRIPT_LIMIT,
    }))
}

pub fn keep_other_collections() -> Result<bool, Error> {
    param_bool("keep-other-collections", false)
}
