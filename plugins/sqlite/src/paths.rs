//! Where a database file is, and how the sqlite3 shell and the file
//! programs are told about it. Pure logic, unit-tested natively.
//!
//! The `database` of a connection is the path of the file: absolute, or
//! relative to the `directory` parameter (default: envsync-host's working
//! directory, which child programs inherit). The plugin itself never touches
//! the file system (WASI grants it none); it only passes paths to programs.

/// Suffix of the file a restore or copy loads into, next to the target.
pub const SCRATCH_SUFFIX: &str = ".envsync-restore";

/// Files SQLite keeps beside a database while it is in use.
const COMPANIONS: &[&str] = &["-journal", "-wal", "-shm"];

/// The path of database `database`, under `directory` when relative.
pub fn resolve(database: &str, directory: Option<&str>) -> Result<String, String> {
    if database.is_empty() {
        return Err("the database path is empty; pass the file with --database".into());
    }
    if database.contains('\0') {
        return Err(format!(
            "the database path {database:?} contains a NUL byte"
        ));
    }
    if database == ":memory:" || database.starts_with("file:") {
        return Err(format!(
            "--database {database:?} must be the path of a database file (no :memory: or file: \
             URI); options such as the journal mode are the database's own"
        ));
    }
    if database.ends_with('/') {
        return Err(format!(
            "--database {database:?} names a folder; give the path of the database file"
        ));
    }
    Ok(match directory {
        Some(dir) if !database.starts_with('/') => {
            format!("{}/{database}", dir.trim_end_matches('/'))
        }
        _ => database.to_string(),
    })
}

/// The scratch file a restore of `target` loads into: in the same folder,
/// so the final rename is atomic.
pub fn scratch(target: &str) -> String {
    format!("{target}{SCRATCH_SUFFIX}")
}

/// `path` and the journal, WAL and shared-memory files SQLite may have left
/// beside it.
pub fn with_companions(path: &str) -> Vec<String> {
    std::iter::once(path.to_string())
        .chain(COMPANIONS.iter().map(|suffix| format!("{path}{suffix}")))
        .collect()
}

/// How the database file may be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read only; the file must exist.
    ReadOnly,
    /// Read and write; the file must exist (never creates an empty one).
    ReadWrite,
    /// Read and write, creating the file if missing.
    Create,
}

/// The SQLite URI filename of `path` opened in `mode`, for the sqlite3
/// shell. Unlike a plain path it cannot be taken for an option (`-x`) or
/// for `:memory:`, and the mode is enforced by SQLite itself.
pub fn uri(path: &str, mode: Mode) -> String {
    let mode = match mode {
        Mode::ReadOnly => "ro",
        Mode::ReadWrite => "rw",
        Mode::Create => "rwc",
    };
    // An empty authority (`file://` + absolute path) so that a path
    // starting with `//` is not read as a host name.
    let prefix = if path.starts_with('/') {
        "file://"
    } else {
        "file:"
    };
    format!("{prefix}{}?mode={mode}", escape(path))
}

/// Percent-encodes every byte of `path` but unreserved characters and `/`.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_go_under_the_directory() {
        assert_eq!(resolve("shop.db", None).unwrap(), "shop.db");
        assert_eq!(
            resolve("shop.db", Some("/srv/data/")).unwrap(),
            "/srv/data/shop.db"
        );
        assert_eq!(
            resolve("a/shop.db", Some("/srv")).unwrap(),
            "/srv/a/shop.db"
        );
        assert_eq!(
            resolve("/abs/shop.db", Some("/srv")).unwrap(),
            "/abs/shop.db"
        );
    }

    #[test]
    fn unusable_names_are_refused() {
        for name in ["", ":memory:", "file:x.db?mode=ro", "data/", "a\0b"] {
            assert!(resolve(name, None).is_err(), "{name:?}");
        }
    }

    #[test]
    fn scratch_files_sit_beside_the_target() {
        assert_eq!(scratch("/srv/shop.db"), "/srv/shop.db.envsync-restore");
        assert_eq!(
            with_companions("x.db"),
            ["x.db", "x.db-journal", "x.db-wal", "x.db-shm"]
        );
    }

    #[test]
    fn uris_escape_and_cannot_be_options() {
        assert_eq!(
            uri("/srv/shop.db", Mode::ReadOnly),
            "file:///srv/shop.db?mode=ro"
        );
        assert_eq!(uri("-x.db", Mode::ReadWrite), "file:-x.db?mode=rw");
        assert_eq!(
            uri("//host/a b?#%.db", Mode::Create),
            "file:////host/a%20b%3F%23%25.db?mode=rwc"
        );
        assert_eq!(
            uri(":memory:", Mode::ReadWrite),
            "file:%3Amemory%3A?mode=rw"
        );
        assert_eq!(
            uri("données.db", Mode::ReadOnly),
            "file:donn%C3%A9es.db?mode=ro"
        );
    }
}
