//! Guest-side SDK for envsync plugins.
//!
//! An engine plugin is a WebAssembly component (`wasm32-wasip2`) that
//! implements the `engine` world of the `envsync:plugin@0.1.0` contract
//! (`wit/v0.1.0/`). This crate re-exports the contract's bindings and adds
//! what every engine plugin needs:
//!
//! - [`Command`] / [`Running`]: child programs the plugin declared, with
//!   stream-failure handling that reports the real cause ([`Running::feed`],
//!   [`Running::drain_into`], [`Running::abort_upstream`], …);
//! - [`read_all`], [`read_head`], [`write_all`], [`copy_through`], [`Tail`],
//!   [`Reader`], [`Writer`]: looking at stream bytes in large chunks when
//!   [`splice`] (host-side copy) is not enough;
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
//! use envsync_plugin_sdk::{
//!     ArtifactFormat, ByteSink, ByteSource, Command, CredentialEnv, Engine, Error,
//!     OnFeedError, Operation, PluginInfo, connection, param_infos, sniff,
//! };
//!
//! struct MyDb;
//!
//! impl Engine for MyDb {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
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
//! }
//!
//! envsync_plugin_sdk::export_engine!(MyDb);
//! ```
//!
//! Not here yet: helpers for sanitising rows inside a dump stream (the
//! `sanitiser` world and row batches) come with the issue that adds them.

#![warn(missing_docs)]

/// The bindings of the `envsync:plugin@0.1.0` contract, generated from
/// `wit/v0.1.0` by wit-bindgen. The useful items are re-exported at the
/// crate root.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "engine",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "envsync_plugin_sdk::bindings",
    });
}

mod command;
mod error;
mod io;
mod params;
pub mod sniff;

pub use bindings::envsync::plugin::job::{self, ConnectionInfo};
pub use bindings::envsync::plugin::log::{self, Level};
pub use bindings::envsync::plugin::process::{self, Child, ExitStatus, Stdio};
pub use bindings::envsync::plugin::streams::{self, ByteSink, ByteSource, splice};
pub use bindings::envsync::plugin::types::{
    ArtifactFormat, CredentialEnv, Error, Operation, ParamInfo, PluginInfo,
};
pub use bindings::export_engine;
pub use bindings::exports::envsync::plugin::operations::Guest as Engine;
pub use command::{Command, Fed, OnFeedError, Running, StderrFilter, check_status, exit_error};
pub use io::{CHUNK, Reader, Tail, Writer, copy_through, read_all, read_head, write_all};
pub use params::{connection, param, param_bool, param_infos, param_number, param_or, param_parse};

/// Logs a line at info level through the host (shown with the plugin's
/// name).
pub fn info(message: impl AsRef<str>) {
    log::log(Level::Info, message.as_ref());
}

/// Logs a line at debug level through the host (shown with `-v`).
pub fn debug(message: impl AsRef<str>) {
    log::log(Level::Debug, message.as_ref());
}

/// Logs a line at warn level through the host.
pub fn warn(message: impl AsRef<str>) {
    log::log(Level::Warn, message.as_ref());
}
