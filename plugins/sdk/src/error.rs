//! Helpers on the contract's error type (its `Display` comes from the bindings).

use crate::Error;
use std::fmt;

impl Error {
    /// The human message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidParam(m)
            | Error::BadArtifact(m)
            | Error::Denied(m)
            | Error::ProgramFailed(m)
            | Error::Io(m)
            | Error::Integrity(m)
            | Error::Other(m) => m,
        }
    }

    /// Prefixes the message with `context`, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Error {
        let wrap = |m: String| format!("{context}: {m}");
        match self {
            Error::InvalidParam(m) => Error::InvalidParam(wrap(m)),
            Error::BadArtifact(m) => Error::BadArtifact(wrap(m)),
            Error::Denied(m) => Error::Denied(wrap(m)),
            Error::ProgramFailed(m) => Error::ProgramFailed(wrap(m)),
            Error::Io(m) => Error::Io(wrap(m)),
            Error::Integrity(m) => Error::Integrity(wrap(m)),
            Error::Other(m) => Error::Other(wrap(m)),
        }
    }
}
