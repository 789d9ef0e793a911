//! The plugin's parameters: filters, redaction, delete and dry run.

use envsync_plugin_sdk::{Error, ParamInfo, param, param_bool, param_infos, param_number};
use globset::{GlobSet, GlobSetBuilder};

/// Placeholder text when no `placeholder-key` is given.
pub const DEFAULT_PLACEHOLDER: &str = "This file was redacted by envsync: it is not copied \
    outside the environment it belongs to.\n";

pub fn infos() -> Vec<ParamInfo> {
    param_infos(&[
        (
            "include",
            "Comma-separated globs of keys (relative to the prefix) to copy; others are left \
             alone, also by delete",
            Some("**"),
        ),
        (
            "exclude",
            "Comma-separated globs of keys never copied nor deleted",
            None,
        ),
        (
            "redact",
            "Comma-separated globs of keys whose content must not reach the target: each is \
             replaced there by the placeholder",
            None,
        ),
        (
            "placeholder-key",
            "Key (relative to the source prefix) of the object every redacted object becomes \
             (e.g. redacted.pdf); default a short text",
            None,
        ),
        (
            "delete",
            "true: remove target objects (matching include/exclude) the source no longer has",
            Some("false"),
        ),
        (
            "dry-run",
            "true: only list what would be copied, redacted and deleted",
            Some("false"),
        ),
        (
            "verify",
            "true: objects of equal size are compared by ETag even where the server lists none \
             (a HEAD on each side per object); false: where it lists none, an equal-size target \
             object newer than its source counts as unchanged, as `aws s3 sync` does (faster, but \
             misses a target object rewritten later with the same size)",
            Some("true"),
        ),
        (
            "batch",
            "Objects handed to the host per copy call (the host copies several at once)",
            Some("256"),
        ),
    ])
}

pub struct Settings {
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    pub redact: Option<GlobSet>,
    pub placeholder_key: Option<String>,
    pub delete: bool,
    pub dry_run: bool,
    /// Compare equal sizes by ETag even where that costs two HEADs.
    pub verify: bool,
    pub batch: usize,
}

/// A comma-separated list of globs, or none when the parameter is unset or
/// empty. `/` is a separator: `*` stays within one folder, `**` crosses.
fn globs(name: &str) -> Result<Option<GlobSet>, Error> {
    let Some(text) = param(name) else {
        return Ok(None);
    };
    let mut set = GlobSetBuilder::new();
    let mut any = false;
    for pattern in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidParam(format!("{name}: pattern {pattern:?}: {e}")))?;
        set.add(glob);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    set.build()
        .map(Some)
        .map_err(|e| Error::InvalidParam(format!("{name}: {e}")))
}

impl Settings {
    pub fn from_params() -> Result<Self, Error> {
        let batch: usize = param_number("batch", 256)?;
        if !(1..=1000).contains(&batch) {
            return Err(Error::InvalidParam(format!(
                "batch {batch} is out of range: give 1 to 1000"
            )));
        }
        Ok(Settings {
            include: globs("include")?,
            exclude: globs("exclude")?,
            redact: globs("redact")?,
            placeholder_key: param("placeholder-key").filter(|k| !k.is_empty()),
            delete: param_bool("delete", false)?,
            dry_run: param_bool("dry-run", false)?,
            verify: param_bool("verify", true)?,
            batch,
        })
    }

    /// Whether `key` is in scope: copied when the source has it, deleted
    /// (with `delete`) when only the target has it.
    pub fn selected(&self, key: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(key))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(key))
    }

    pub fn redacted(&self, key: &str) -> bool {
        self.redact.as_ref().is_some_and(|s| s.is_match(key))
    }
}
