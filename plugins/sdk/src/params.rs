//! Job parameters and connections, with errors a user can act on.
//!
//! Parameters come from `--param NAME=VALUE` or a task's engine options; a
//! plugin documents the ones it understands in `describe().params` (shown by
//! `envsync-host plugins inspect`) and reads them up front, so a typo fails
//! the step before anything changes.
//!
//! ```no_run
//! use envsync_plugin_sdk::{Error, ParamInfo, param_bool, param_infos, param_number, param_or};
//!
//! /// (name, description, default) of every parameter, for `describe()`.
//! const PARAMS: &[(&str, &str, Option<&str>)] = &[
//!     ("retries", "How many times to try the swap.", Some("5")),
//!     ("safe", "Refuse shell commands in scripts.", Some("true")),
//!     ("owner", "Who owns the restored database.", None),
//! ];
//!
//! fn params() -> Vec<ParamInfo> {
//!     param_infos(PARAMS)
//! }
//!
//! fn settings() -> Result<(u32, bool, String), Error> {
//!     Ok((
//!         param_number("retries", 5)?,
//!         param_bool("safe", true)?,
//!         param_or("owner", "app"),
//!     ))
//! }
//! # let _ = (params, settings);
//! ```

use crate::{ConnectionInfo, Error, ParamInfo, job};
use std::fmt::Display;
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

/// Parameter `name` as a whole number (surrounding blanks ignored), or
/// `default` when unset; the error names the default.
pub fn param_number<T: FromStr + Display>(name: &str, default: T) -> Result<T, Error> {
    match param(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            Error::InvalidParam(format!(
                "parameter {name}={v:?} is not a whole number (default {default})"
            ))
        }),
    }
}

/// Parameter `name` as a boolean (`true`/`yes`/`on`/`1` or
/// `false`/`no`/`off`/`0`, any case), or `default` when unset.
pub fn param_bool(name: &str, default: bool) -> Result<bool, Error> {
    let Some(v) = param(name) else {
        return Ok(default);
    };
    parse_bool(&v)
        .ok_or_else(|| Error::InvalidParam(format!("parameter {name}={v:?} must be true or false")))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `describe().params` from a table of `(name, description, default)`.
pub fn param_infos(table: &[(&str, &str, Option<&str>)]) -> Vec<ParamInfo> {
    table
        .iter()
        .map(|(name, description, default)| ParamInfo {
            name: name.to_string(),
            description: description.to_string(),
            default_value: default.map(String::from),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for v in ["true", " YES", "on", "1"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["false", "No ", "OFF", "0"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn infos_from_a_table() {
        let infos = param_infos(&[("a", "first", Some("1")), ("b", "second", None)]);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].name, "a");
        assert_eq!(infos[0].default_value.as_deref(), Some("1"));
        assert_eq!(infos[1].default_value, None);
    }
}
