//! Guest-side SDK for envsync plugins.
//!
//! An engine plugin is a WebAssembly component (`wasm32-wasip2`) that
//! implements the `engine` world of the `envsync:plugin@0.3.0` contract
//! (`wit/v0.3.0/`). This crate re-exports the contract's bindings and adds
//! what every engine plugin needs:
//!
//! - [`Command`] / [`Running`]: child programs the plugin declared, with
//!   stream-failure handling that reports the real cause ([`Running::feed`],
//!   [`Running::drain_into`], [`Running::abort_upstream`], …);
//! - [`read_all`], [`read_head`], [`write_all`], [`copy_through`], [`Tail`],
//!   [`Reader`], [`Writer`]: looking at stream bytes in large chunks when
//!   [`splice`] (host-side copy) is not enough;
//! - [`sessions`]: up to `jobs` children at once, each fed or drained by a
//!   background transfer (parallel loads and dumps), or long-lived children
//!   fed task after task (`run_in_lanes`);
//! - [`sniff`]: recognising other artifact formats, for `check` messages;
//! - [`param`], [`param_number`], [`param_bool`], [`param_infos`],
//!   [`connection`]: job parameters and connections with errors an operator
//!   can act on;
//! - [`info`], [`debug`], [`warn`]: logging through the host;
//! - [`Error::context`], [`Error::also`]: composing error messages.
//!
//! A plugin implements [`Engine`] and registers it with [`export_engine!`].
//! Build it with `cargo build --target wasm32-wasip2 --profile wasm` and drop
//! the `.wasm` file into the host's plugin folder (see `docs/plugins.md`).
//!
//! ```no_run
//! # #[cfg(feature = "engine")] mod example {
//! use envsync_plugin_sdk::{
//!     ArtifactFormat, ByteSink, ByteSource, Command, CredentialEnv, Engine, Error,
//!     OnFeedError, Operation, PluginInfo, TableInfo, connection, param_infos, sniff,
//! };
//!
//! struct MyDb;
//!
//! impl Engine for MyDb {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             metrics_engine: None,
//!             name: "mydb".into(),
//!             version: "0.1.0".into(),
//!             description: "MyDB: dumps with mydb-dump, loads with mydb-load".into(),
//!             operations: vec![Operation::Backup, Operation::Restore],
//!             // The only programs the host will let this plugin run.
//!             programs: vec!["mydb-dump".into(), "mydb-load".into()],
//!             artifact: ArtifactFormat {
//!                 name: "mydb-text".into(),
//!                 extension: "mydb".into(),
//!                 compressed: false,
//!                 head_size: 4096,
//!             },
//!             // The host puts the operator's password into MYDB_PASSWORD of
//!             // the programs it starts with `.connection(role)`.
//!             credentials: CredentialEnv {
//!                 host: None,
//!                 port: None,
//!                 user: None,
//!                 password: Some("MYDB_PASSWORD".into()),
//!                 passthrough: vec![],
//!             },
//!             // No row-level dump format: the host refuses sanitised steps.
//!             sanitised_artifact: None,
//!             params: param_infos(&[]),
//!         }
//!     }
//!
//!     fn check(head: Vec<u8>) -> Result<(), Error> {
//!         if head.starts_with(b"MYDB DUMP") {
//!             return Ok(());
//!         }
//!         let what = sniff::identify(&head).map_or("unknown", |f| f.description());
//!         Err(Error::BadArtifact(format!("not a mydb dump: {what}")))
//!     }
//!
//!     fn backup(artifact: &ByteSink) -> Result<(), Error> {
//!         let source = connection("source")?;
//!         let dump = Command::new("mydb-dump")
//!             .arg(source.database)
//!             .connection("source")
//!             .stdout_piped()
//!             .spawn()?;
//!         dump.drain_into(artifact).map(drop)
//!     }
//!
//!     fn restore(artifact: &ByteSource) -> Result<(), Error> {
//!         let target = connection("target")?;
//!         let mut load = Command::new("mydb-load")
//!             .arg(target.database)
//!             .connection("target")
//!             .stdin_piped()
//!             .spawn()?;
//!         let (stdin, _) = load.feed(artifact, OnFeedError::Kill)?.all()?;
//!         if let Err(e) = artifact.verify() {
//!             return Err(load.abort(e));
//!         }
//!         stdin.close()?;
//!         drop(stdin);
//!         load.finish()
//!     }
//!
//!     fn transform(_script: &ByteSource) -> Result<(), Error> {
//!         Err(Error::Other("mydb has no transform".into()))
//!     }
//!
//!     fn copy() -> Result<(), Error> {
//!         Err(Error::Other("mydb has no copy".into()))
//!     }
//!
//!     fn schema() -> Result<Vec<TableInfo>, Error> {
//!         Err(Error::Other("mydb cannot list its tables".into()))
//!     }
//! }
//!
//! envsync_plugin_sdk::export_engine!(MyDb);
//! # }
//! ```
//!
//! # Features
//!
//! - `engine` (default): the `engine` world and everything above.
//! - `sanitiser`: the `sanitiser` world: the `Sanitiser` trait,
//!   `export_sanitiser!`, `keyed_hash`; the `sanitiser` module is the guide
//!   (`cargo doc -p envsync-plugin-sdk --features sanitiser`).
//!   A sanitiser crate depends on the SDK with
//!   `default-features = false, features = ["sanitiser"]`.
//!
//! The features are additive: with both on (Cargo unifies features when
//! one `cargo build` builds engines and sanitisers together, as
//! `scripts/build.sh` does) they share one [`Error`], [`Row`] and
//! [`TableInfo`] type, and a component still exports only the world whose
//! export macro it calls (checked with wit-bindgen 0.63: an engine built
//! with both exports only `operations`, a sanitiser only `sanitise`). A
//! plugin crate should still ask only for the world it implements.

#![warn(missing_docs)]

// Lets the bindings (and the export macros they generate, which expand in
// plugin crates) name this crate the same way from inside and outside.
extern crate self as envsync_plugin_sdk;

/// The bindings of the `engine` world of the `envsync:plugin@0.3.0`
/// contract, generated from `wit/v0.3.0` by wit-bindgen (feature `engine`,
/// on by default). The useful items are re-exported at the crate root.
#[cfg(feature = "engine")]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.3.0",
        world: "engine",
        pub_export_macro: true,
        // Plugins call the SDK's `export_engine!`, which adapts `Engine`.
        export_macro_name: "__export_engine_world",
        default_bindings_module: "envsync_plugin_sdk::bindings",
    });
}

/// The bindings of the `sanitiser` world of the `envsync:plugin@0.3.0`
/// contract (feature `sanitiser`). With both features on, the shared
/// `types` interface is the one of `bindings`, so [`Error`], [`Row`] and
/// [`TableInfo`] are one type whichever world uses them. The useful items
/// are re-exported at the crate root; see [`sanitiser`] for a guide.
#[cfg(feature = "sanitiser")]
#[allow(missing_docs)]
pub mod sanitiser_bindings {
    #[cfg(feature = "engine")]
    wit_bindgen::generate!({
        path: "../../wit/v0.3.0",
        world: "sanitiser",
        pub_export_macro: true,
        export_macro_name: "export_sanitiser",
        default_bindings_module: "envsync_plugin_sdk::sanitiser_bindings",
        with: {
            "envsync:plugin/types@0.3.0": envsync_plugin_sdk::bindings::envsync::plugin::types,
        },
    });
    #[cfg(not(feature = "engine"))]
    wit_bindgen::generate!({
        path: "../../wit/v0.3.0",
        world: "sanitiser",
        pub_export_macro: true,
        export_macro_name: "export_sanitiser",
        default_bindings_module: "envsync_plugin_sdk::sanitiser_bindings",
    });
}

#[cfg(feature = "engine")]
mod command;
#[cfg(feature = "engine")]
mod engine;
mod error;
pub mod fields;
#[cfg(feature = "engine")]
mod io;
#[cfg(feature = "engine")]
mod params;
#[cfg(feature = "engine")]
pub mod row_chunks;
pub mod rows;
#[cfg(feature = "sanitiser")]
pub mod sanitiser;
#[cfg(feature = "engine")]
pub mod sessions;
pub mod sniff;

#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::chunks::{self, ChunkInfo, RowChunk};
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::job::{self, ConnectionInfo};
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::log::{self, Level};
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::objects;
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::process::{self, Child, ExitStatus, Stdio};
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::streams::{
    self, ByteSink, ByteSource, Transfer, splice, start_feed, start_splice, wait_any,
    wait_any_within,
};
#[cfg(feature = "engine")]
pub use bindings::envsync::plugin::types::{
    ArtifactFormat, ColumnInfo, CredentialEnv, Error, Operation, ParamInfo, PluginInfo, RowBatch,
    TableInfo, ValueKind,
};
#[cfg(feature = "engine")]
pub use bindings::exports::envsync::plugin::operations::{
    IndexDocuments, Piece, StructurePart, TableColumns, TableRows,
};
#[cfg(feature = "engine")]
pub use command::{Command, Fed, OnFeedError, Running, StderrFilter, check_status, exit_error};
#[cfg(feature = "engine")]
pub use engine::Engine;
#[cfg(feature = "engine")]
pub use io::{CHUNK, Reader, Tail, Writer, copy_through, read_all, read_head, write_all};
#[cfg(feature = "engine")]
pub use params::{connection, param, param_bool, param_infos, param_number, param_or, param_parse};

pub use rows::{Row, RowBatchBuilder};
#[cfg(feature = "sanitiser")]
pub use sanitiser::keyed_hash;
#[cfg(all(feature = "sanitiser", not(feature = "engine")))]
pub use sanitiser_bindings::envsync::plugin::types::{ColumnInfo, Error, RowBatch, TableInfo};
#[cfg(feature = "sanitiser")]
pub use sanitiser_bindings::export_sanitiser;
#[cfg(feature = "sanitiser")]
pub use sanitiser_bindings::exports::envsync::plugin::sanitise::{
    Guest as Sanitiser, RunContext, SanitiserInfo,
};

#[cfg(not(any(feature = "engine", feature = "sanitiser")))]
compile_error!("envsync-plugin-sdk needs feature `engine` (the default) or `sanitiser` (or both)");

#[cfg(feature = "engine")]
/// Logs a line at info level through the host (shown with the plugin's
/// name).
pub fn info(message: impl AsRef<str>) {
    log::log(Level::Info, message.as_ref());
}

#[cfg(feature = "engine")]
/// Logs a line at debug level through the host (shown with `-v`).
pub fn debug(message: impl AsRef<str>) {
    log::log(Level::Debug, message.as_ref());
}

#[cfg(feature = "engine")]
/// Logs a line at warn level through the host.
pub fn warn(message: impl AsRef<str>) {
    log::log(Level::Warn, message.as_ref());
}
