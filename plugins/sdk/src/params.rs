//! Job parameters and connections, with errors a user can act on.

use crate::{ConnectionInfo, Error, job};
use std::str::FromStr;

/// The value of parameter `name`, if set and not empty.
pub fn param(name: &str) -> Option<String> {
    job::param(name).filter(|v| !v.is_empty())
}

/// The value of parameter `name`, or `default`.
pub fn param_or(name: &str, default: &str) -> String {
    param(name).unwrap_or_else(|| default.to_string())
}

/// Parameter `name` parsed as `T`, or `default` when unset.
pub fn param_parse<T: FromStr>(name: &str, default: T) -> Result<T, Error> {
    match param(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            Error::InvalidParam(format!("parameter {name}={v:?} is not a valid value"))
        }),
    }
}

/// The connection playing `role` (`source` or `target`); an error naming the
/// missing option when the step has none.
pub fn connection(role: &str) -> Result<ConnectionInfo, Error> {
    job::connection(role).ok_or_else(|| {
        Error::InvalidParam(format!(
            "this operation needs a {role} database; pass it with --{}database",
            if role == "source" { "source-" } else { "" }
        ))
    })
}
