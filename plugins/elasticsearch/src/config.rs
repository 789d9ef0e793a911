//! Job parameters and what the step acts on.

use envsync_plugin_sdk::{Error, ParamInfo, connection, param, param_infos, param_number};

/// (name, description, default) of every parameter.
const PARAMS: &[(&str, &str, Option<&str>)] = &[
    (
        "indices",
        "Backup, copy, schema: the indices to read, as a comma-separated list of names, aliases \
         or wildcard patterns (e.g. `logs-*,products`); system indices (names starting with `.`) \
         are always skipped. Default: the task's database name, which must itself be a plain \
         index or alias name (it is part of store keys). With mode=snapshot: what the snapshot \
         holds (backup), and on restore the indices to restore (default: what the backup asked \
         for; `-pattern` excludes).",
        None,
    ),
    (
        "mode",
        "Backup and restore: `logical` (NDJSON documents through envsync) or `snapshot` \
         (repository snapshots made by the cluster; the artifact is a small manifest naming \
         the snapshot).",
        Some("logical"),
    ),
    (
        "repository",
        "mode=snapshot: the snapshot repository's name (required for backup; restore defaults \
         to the one in the artifact).",
        None,
    ),
    (
        "repository-settings",
        "mode=snapshot: the S3 repository's settings as JSON (e.g. \
         {\"bucket\":\"backups\",\"base_path\":\"search\"}); the repository is registered \
         (type s3) when missing or different. Without it the repository must exist. Either way \
         it is verified (`_verify`).",
        None,
    ),
    (
        "keep",
        "mode=snapshot backup: how many successful envsync snapshots of this cluster to keep \
         (the newest; older ones are deleted; others' and unsuccessful snapshots are never \
         deleted).",
        Some("7"),
    ),
    (
        "cluster-name",
        "mode=snapshot backup: the snapshot name's prefix (default: `cluster_name` of `GET /`).",
        None,
    ),
    (
        "snapshot",
        "mode=snapshot restore: the snapshot to restore: a name, or `latest` for the newest \
         successful one in the repository (default: the one the artifact names).",
        None,
    ),
    (
        "delete-live-indices-first",
        "mode=snapshot restore: `true` deletes the live indices the patterns select before \
         restoring under their own names, so a failed restore leaves them missing. Only for a \
         cluster without room for a second copy, or one that refuses the alias swap; by default \
         the snapshot is restored under new names and swapped in by one atomic alias change.",
        Some("false"),
    ),
    (
        "page_size",
        "Documents per search page when reading (point in time + search_after, or scroll).",
        Some("2000"),
    ),
    (
        "keep_alive",
        "How long the cluster keeps a point in time or scroll open between two pages.",
        Some("5m"),
    ),
];

pub fn infos() -> Vec<ParamInfo> {
    param_infos(PARAMS)
}

/// Checks that a database name is a plain index or alias name: it names
/// store keys, so no patterns, lists or path separators.
pub fn plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database (index or alias name) is empty".into());
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '*' | '?' | ',' | '/' | '\\' | '"' | '<' | '>' | '|' | '#' | ':'
        ) || c.is_whitespace()
    }) {
        return Err(format!(
            "the database {name:?} must be a plain index or alias name (it is used in store keys), \
             but it contains {c:?}; name the indices or patterns to read with --param indices=…"
        ));
    }
    if name.starts_with(['.', '_', '-', '+']) {
        return Err(format!(
            "the database {name:?} cannot start with {:?}",
            &name[..1]
        ));
    }
    Ok(())
}

/// Splits and checks an `indices` list.
pub fn patterns(list: &str) -> Result<Vec<String>, String> {
    let out: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if out.is_empty() {
        return Err("parameter indices is empty".into());
    }
    for p in &out {
        if p.contains(['/', '\\', ' ', '"', '?', '#']) {
            return Err(format!(
                "parameter indices: {p:?} is not an index name or pattern"
            ));
        }
    }
    Ok(out)
}

/// What to read from the `role` connection.
pub fn read_patterns(role: &str) -> Result<Vec<String>, Error> {
    let db = connection(role)?.database;
    plain_name(&db).map_err(Error::InvalidParam)?;
    let list = param("indices").unwrap_or(db);
    patterns(&list).map_err(Error::InvalidParam)
}

pub fn page_size() -> Result<u32, Error> {
    let n: u32 = param_number("page_size", 2000)?;
    if !(1..=10_000).contains(&n) {
        return Err(Error::InvalidParam(format!(
            "parameter page_size={n} must be between 1 and 10000"
        )));
    }
    Ok(n)
}

pub fn keep_alive() -> Result<String, Error> {
    let v = param("keep_alive").unwrap_or_else(|| "5m".into());
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    if num.is_empty() || !["ms", "s", "m", "h", "d"].contains(&unit) {
        return Err(Error::InvalidParam(format!(
            "parameter keep_alive={v:?} must be a duration such as 30s or 5m"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_must_be_plain() {
        assert!(plain_name("products").is_ok());
        assert!(plain_name("logs-2026.11").is_ok());
        for bad in ["", "logs-*", "a,b", "a/b", ".kibana", "_all", "a b"] {
            assert!(plain_name(bad).is_err(), "{bad}");
        }
        assert!(
            plain_name("logs-*")
                .unwrap_err()
                .contains("--param indices")
        );
    }

    #[test]
    fn index_lists() {
        assert_eq!(
            patterns(" logs-*, products ,").unwrap(),
            ["logs-*", "products"]
        );
        assert!(patterns(" , ").is_err());
        assert!(patterns("a/b").is_err());
    }
}
