//! Guest-side SDK for envsync plugins.
//!
//! It re-exports the bindings of the `envsync:plugin@0.1.0` contract and adds
//! the helpers every engine plugin needs: building and checking child
//! programs, reading job parameters, logging, and reading streams in large
//! chunks. A plugin implements [`Engine`] and registers it with
//! [`export_engine!`]:
//!
//! ```ignore
//! use envsync_plugin_sdk::{Engine, PluginInfo, Error, ByteSink, ByteSource};
//! struct MyDb;
//! impl Engine for MyDb { /* describe, check, backup, restore, transform, copy */ }
//! envsync_plugin_sdk::export_engine!(MyDb);
//! ```

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

pub use bindings::envsync::plugin::job::{self, ConnectionInfo};
pub use bindings::envsync::plugin::log::{self, Level};
pub use bindings::envsync::plugin::process::{self, Child, ExitStatus, Stdio};
pub use bindings::envsync::plugin::streams::{self, ByteSink, ByteSource, splice};
pub use bindings::envsync::plugin::types::{
    ArtifactFormat, CredentialEnv, Error, Operation, ParamInfo, PluginInfo,
};
pub use bindings::export_engine;
pub use bindings::exports::envsync::plugin::operations::Guest as Engine;
pub use command::{Command, Running, check_status};
pub use io::{read_all, write_all};
pub use params::{connection, param, param_or, param_parse};

/// Logs a line at info level through the host.
pub fn info(message: impl AsRef<str>) {
    log::log(Level::Info, message.as_ref());
}

/// Logs a line at debug level through the host.
pub fn debug(message: impl AsRef<str>) {
    log::log(Level::Debug, message.as_ref());
}

/// Logs a line at warn level through the host.
pub fn warn(message: impl AsRef<str>) {
    log::log(Level::Warn, message.as_ref());
}
