//! Key layout shared with the scripts this replaces:
//! `<instance>/<UTC %Y-%m-%dT%H%M%SZ>-<database>.<ext>`, a manifest beside
//! it, and `<instance>/latest-<database>.txt` naming the newest good one.

use crate::failure::{Failure, Kind};
use anyhow::Result;
use chrono::{DateTime, NaiveDateTime, Utc};

const TIMESTAMP: &str = "%Y-%m-%dT%H%M%SZ";
/// Length of a formatted timestamp, e.g. `2026-11-21T101500Z`.
const TIMESTAMP_LEN: usize = 18;
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Refuses names that would escape or confuse the layout.
pub fn check_segment(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains('/') || value.starts_with('.') || value.contains('\0') {
        return Err(Failure::new(
            Kind::Usage,
            format!("{what} {value:?} cannot be used in a store key: it must be non-empty, without '/', not starting with '.'"),
        )
        .into());
    }
    Ok(())
}

pub fn artifact_key(instance: &str, database: &str, extension: &str, at: DateTime<Utc>) -> String {
    format!("{instance}/{}-{database}.{extension}", at.format(TIMESTAMP))
}

pub fn pointer_key(instance: &str, database: &str) -> String {
    format!("{instance}/latest-{database}.txt")
}

/// Where chunk `name` of the artifact at `artifact_key` is stored: in a
/// folder beside it, so listing and pruning see one artifact.
pub fn chunk_key(artifact_key: &str, name: &str) -> String {
    format!("{}{name}", chunk_prefix(artifact_key))
}

/// The folder of an artifact's chunks.
pub fn chunk_prefix(artifact_key: &str) -> String {
    format!("{artifact_key}.chunks/")
}

/// Refuses a chunk name a plugin gave that is not a plain short name (it
/// becomes part of a store key).
pub fn check_chunk_name(name: &str) -> Result<(), String> {
    let plain = (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "chunk name {name:?} is not usable: use 1 to 100 of A-Z a-z 0-9 . _ -, not starting with '.'"
        ))
    }
}

pub fn manifest_key(artifact_key: &str) -> String {
    format!("{artifact_key}{MANIFEST_SUFFIX}")
}

/// When the artifact at `key` was made, if `key` is an artifact key of
/// `database` (any extension).
pub fn artifact_time(key: &str, database: Option<&str>) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?;
    if name.ends_with(MANIFEST_SUFFIX)
        || name.len() <= TIMESTAMP_LEN + 1
        || key.contains(".chunks/")
    {
        return None;
    }
    let (stamp, rest) = name.split_at(TIMESTAMP_LEN);
    let rest = rest.strip_prefix('-')?;
    if let Some(db) = database
        && !rest
            .strip_prefix(db)
            .is_some_and(|ext| ext.starts_with('.'))
    {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, TIMESTAMP)
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_follow_the_layout() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap();
        let key = artifact_key("db1.prod", "shop", "pgdump", at);
        assert_eq!(key, "db1.prod/2026-11-21T101500Z-shop.pgdump");
        assert_eq!(pointer_key("db1.prod", "shop"), "db1.prod/latest-shop.txt");
        assert_eq!(artifact_time(&key, Some("shop")), Some(at));
        assert_eq!(artifact_time(&key, None), Some(at));
        assert_eq!(artifact_time(&key, Some("sho")), None);
        assert_eq!(artifact_time(&manifest_key(&key), None), None);
        assert_eq!(artifact_time("db1.prod/latest-shop.txt", None), None);
        // A chunk named like an artifact is still not one.
        let chunk = chunk_key(&key, "2026-11-21T101500Z-shop.pgdump");
        assert_eq!(artifact_time(&chunk, None), None);
        assert!(check_chunk_name("data-0001.t").is_ok());
        assert!(check_chunk_name("../x").is_err());
        assert!(check_chunk_name(".x").is_err());
        assert!(check_chunk_name("").is_err());
    }

    #[test]
    fn segments_cannot_escape() {
        assert!(check_segment("database", "../x").is_err());
        assert!(check_segment("database", ".hidden").is_err());
        assert!(check_segment("database", "").is_err());
        assert!(check_segment("database", "shop-2").is_ok());
    }
}
