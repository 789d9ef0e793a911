//! Helpers on the contract's error type (its `Display` comes from the
//! bindings). Every message reaches an operator as it is, so errors carry
//! what went wrong and what to do; these helpers add context without
//! changing the kind the host reports.
//!
//! ```
//! use envsync_plugin_sdk::Error;
//!
//! let cause = Error::ProgramFailed("mydb-load exited with code 1: syntax error".into());
//! let consequence = Error::Io("broken pipe".into());
//! let e = cause.also(&consequence).context("loading the artifact");
//! assert!(matches!(e, Error::ProgramFailed(_)));
//! assert_eq!(
//!     e.message(),
//!     "loading the artifact: mydb-load exited with code 1: syntax error; also: broken pipe"
//! );
//! ```

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

    /// `self` (the cause) with `then` (a consequence, e.g. the broken pipe a
    /// failed program left behind) appended as `; also: …`. Only
    /// `program-failed`, `io` and `other` errors grow; the others are
    /// precise verdicts and stay as they are.
    pub fn also(self, then: &Error) -> Error {
        let suffix = format!("; also: {}", then.message());
        match self {
            Error::ProgramFailed(m) => Error::ProgramFailed(m + &suffix),
            Error::Io(m) => Error::Io(m + &suffix),
            Error::Other(m) => Error::Other(m + &suffix),
            other => other,
        }
    }
}
