//! Compression of stored artifacts: zstd, gzip or none.

use crate::failure::{Failure, Kind};
use anyhow::Result;
use std::fmt;
use std::ops::RangeInclusive;
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

/// zstd levels accepted: its fast levels (-7..=-1) and the normal ones (1..=22;
/// 0 would mean "zstd's own default", which is not the documented default).
pub const ZSTD_LEVELS: RangeInclusive<i64> = -7..=22;
/// gzip levels accepted: 0 (stored) to 9.
pub const GZIP_LEVELS: RangeInclusive<i64> = 0..=9;

impl Compression {
    /// The one parser of a compression choice, for every way it is given:
    /// `--compression NAME --compression-level N` on the command line,
    /// `compression = "NAME"` and `compression_level = N` in a config step,
    /// and `NAME:LEVEL` text. `Ok(None)`: nothing asked for (the format
    /// decides). The error says what is wrong without naming the field;
    /// callers put the field (or flag) in front.
    pub fn parse(name: Option<&str>, level: Option<i64>) -> Result<Option<Self>, String> {
        let Some(name) = name else {
            return match level {
                None => Ok(None),
                Some(_) => Err("a compression level needs a compression (zstd or gzip)".into()),
            };
        };
        let range_error = |codec: &str, range: &RangeInclusive<i64>, level: i64| {
            format!(
                "{codec} compression level must be between {} and {}, not {level}",
                range.start(),
                range.end()
            )
        };
        let chosen = match (name.trim().to_ascii_lowercase().as_str(), level) {
            ("none", None) => Compression::None,
            ("none", Some(_)) => return Err("compression none takes no level".into()),
            ("zstd", None) => Compression::zstd(),
            ("zstd", Some(0)) => {
                return Err(format!(
                    "zstd compression level 0 is not accepted (zstd reads it as its own default); \
                     give a level from 1 to 22, or -7 to -1 for faster, larger output \
                     [default: {DEFAULT_ZSTD_LEVEL}]"
                ));
            }
            ("zstd", Some(l)) if ZSTD_LEVELS.contains(&l) => Compression::Zstd { level: l as i32 },
            ("zstd", Some(l)) => return Err(range_error("zstd", &ZSTD_LEVELS, l)),
            ("gzip", None) => Compression::gzip(),
            ("gzip", Some(l)) if GZIP_LEVELS.contains(&l) => Compression::Gzip { level: l as u32 },
            ("gzip", Some(l)) => return Err(range_error("gzip", &GZIP_LEVELS, l)),
            (other, _) => {
                return Err(format!(
                    "compression {other:?} is not one of zstd, gzip, none"
                ));
            }
        };
        Ok(Some(chosen))
    }
}

/// `none`, `zstd`, `zstd:LEVEL`, `gzip`, `gzip:LEVEL` (levels as in
/// [`Compression::parse`]).
impl FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let usage = |why: String| -> anyhow::Error {
            Failure::new(Kind::Usage, format!("compression {text:?}: {why}")).into()
        };
        let (name, level) = match text.trim().split_once(':') {
            Some((name, level)) => {
                let level = level
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| usage(format!("the level {level:?} is not a number")))?;
                (name, Some(level))
            }
            None => (text, None),
        };
        Compression::parse(Some(name), level)
            .map_err(usage)?
            .ok_or_else(|| usage("no compression named".into()))
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
