//! Compression of stored artifacts: zstd, gzip or none.

use crate::failure::{Failure, Kind};
use anyhow::Result;
use std::fmt;
use std::str::FromStr;

/// zstd level used when none is given: the fastest, because compression
/// competes with the dump program and the database for the same cores, and
/// level 1 is already smaller and four times faster than the gzip -1 of
/// `pg_dump -Z1` (decision 0013).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// gzip level used when none is given (the `gzip` tool's default).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How the plugin's bytes are compressed before they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
    Gzip { level: u32 },
}

impl Compression {
    /// zstd at [`DEFAULT_ZSTD_LEVEL`].
    pub fn zstd() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// gzip at [`DEFAULT_GZIP_LEVEL`].
    pub fn gzip() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }

    /// The name the manifest records: `none`, `zstd` or `gzip`.
    pub fn manifest_name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd { .. } => "zstd",
            Compression::Gzip { .. } => "gzip",
        }
    }

    /// Reads a manifest's compression name back. The level does not matter
    /// for decoding, so it is the default.
    pub fn from_manifest(name: &str) -> Result<Self> {
        match name {
            "none" | "" => Ok(Compression::None),
            "zstd" => Ok(Compression::zstd()),
            "gzip" => Ok(Compression::gzip()),
            other => Err(Failure::new(
                Kind::ArtifactRejected,
                format!(
                    "the manifest says the artifact is compressed with {other:?}, which this \
                     envsync-host does not know (it reads none, zstd and gzip); use a newer envsync-host"
                ),
            )
            .into()),
        }
    }

    /// What the compression appends to the artifact's key: `.zst`, `.gz`
    /// or nothing.
    pub fn extension_suffix(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ".zst",
            Compression::Gzip { .. } => ".gz",
        }
    }
}

/// `none`, `zstd`, `zstd:LEVEL` (1–22), `gzip`, `gzip:LEVEL` (1–9), as
/// given on the command line or in the config.
impl FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let usage = |why: String| -> anyhow::Error { Failure::new(Kind::Usage, why).into() };
        let (name, level) = match text.trim().split_once(':') {
            Some((name, level)) => (name.trim(), Some(level.trim())),
            None => (text.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("none", None) => Ok(Compression::None),
            ("zstd", None) => Ok(Compression::zstd()),
            ("gzip", None) => Ok(Compression::gzip()),
            ("zstd", Some(level)) => match level.parse::<i32>() {
                Ok(level @ 1..=22) => Ok(Compression::Zstd { level }),
                _ => Err(usage(format!(
                    "compression {text:?}: the zstd level must be a number from 1 to 22"
                ))),
            },
            ("gzip", Some(level)) => match level.parse::<u32>() {
                Ok(level @ 1..=9) => Ok(Compression::Gzip { level }),
                _ => Err(usage(format!(
                    "compression {text:?}: the gzip level must be a number from 1 to 9"
                ))),
            },
            _ => Err(usage(format!(
                "unknown compression {text:?}: use none, zstd, zstd:LEVEL, gzip or gzip:LEVEL"
            ))),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
        }
    }
}

/// Decides the compression for an artifact: zstd unless the plugin's format
/// is already compressed, and never compression on top of compression.
/// Returns the choice and, when a request was refused, a warning to log.
pub fn choose_compression(
    requested: Option<Compression>,
    format_is_compressed: bool,
) -> (Compression, Option<String>) {
    match (requested, format_is_compressed) {
        (None, false) => (Compression::zstd(), None),
        (None, true) => (Compression::None, None),
        (Some(requested), false) => (requested, None),
        (Some(Compression::None), true) => (Compression::None, None),
        (Some(requested), true) => (
            Compression::None,
            Some(format!(
                "not compressing with {}: the artifact format is already compressed and \
                 envsync never double-compresses; storing it as the plugin wrote it",
                requested.manifest_name()
            )),
        ),
    }
}
