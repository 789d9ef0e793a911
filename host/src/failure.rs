//! Why a command failed, as the exit code tells it to scripts:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the step failed (a program, the store, the database) |
//! | 2 | usage or configuration error |
//! | 3 | plugin not found, broken or incompatible |
//! | 4 | the sandbox stopped the plugin (trap, deadline, memory cap, denied capability) |
//! | 5 | the artifact was rejected (wrong format, damaged, checksum mismatch) before the target changed |
//! | 6 | stopped by SIGTERM or SIGINT: the running step was stopped and reported failed |
//! | 7 | the task is already running (another process holds its lock) |

use crate::runtime::bindings::WitError;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    StepFailed,
    Usage,
    Plugin,
    Sandbox,
    ArtifactRejected,
    /// Asked to stop (SIGTERM, SIGINT) while a step ran.
    Stopped,
    /// Another process holds the task's lock.
    Busy,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::StepFailed => 1,
            Kind::Usage => 2,
            Kind::Plugin => 3,
            Kind::Sandbox => 4,
            Kind::ArtifactRejected => 5,
            Kind::Stopped => 6,
            Kind::Busy => 7,
        }
    }
}

/// An error that knows its exit code. Attach it as the root of an
/// `anyhow::Error`; context added on top does not change the code.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// A typed error a plugin returned from `op`.
    pub fn from_plugin(plugin: &str, op: &str, error: WitError) -> Self {
        let (kind, what) = match &error {
            WitError::BadArtifact(_) => (Kind::ArtifactRejected, "rejected the artifact"),
            WitError::Integrity(_) => (Kind::ArtifactRejected, "found the artifact damaged"),
            WitError::Denied(_) => (Kind::Sandbox, "was denied a capability"),
            WitError::InvalidParam(_) => (Kind::Usage, "was given an invalid parameter"),
            WitError::ProgramFailed(_) | WitError::Io(_) | WitError::Other(_) => {
                (Kind::StepFailed, "failed")
            }
        };
        Failure::new(
            kind,
            format!("{op} with plugin {plugin} {what}: {}", wit_message(&error)),
        )
    }
}

/// The human message inside a plugin error, without its kind.
pub fn wit_message(error: &WitError) -> &str {
    match error {
        WitError::BadArtifact(m)
        | WitError::Integrity(m)
        | WitError::Denied(m)
        | WitError::InvalidParam(m)
        | WitError::ProgramFailed(m)
        | WitError::Io(m)
        | WitError::Other(m) => m,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for `error`: that of the first `Failure` in its chain, else 1.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(1, |f| f.kind.exit_code())
}

/// The kind of the failure inside `error`, if it has one.
pub fn kind_of(error: &anyhow::Error) -> Option<Kind> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| f.kind)
}
