//! Recognising the sqlite3 shell's `.dump` from its first bytes (and, for a
//! short artifact seen whole, its end), and naming what an artifact is
//! instead, so a wrong file is refused before the target is touched. Pure
//! logic: no host calls, unit-tested natively.

use envsync_plugin_sdk::sniff::{self, Format, SQLITE_DUMP_START};

/// The last statement of a complete dump.
const COMMIT: &[u8] = b"COMMIT;";
/// What `.dump` ends with instead when it could not read everything (a
/// damaged database); the sqlite3 shell still exits with 0.
const ROLLBACK: &[u8] = b"ROLLBACK; -- due to errors";

const REDUMP: &str = "make the backup with the sqlite plugin (sqlite3 DB .dump)";

/// Ok when `head` starts a `.dump`; otherwise what it looks like and what to
/// do. `head_size` is how many bytes the host hands over at most: a shorter
/// head is the whole artifact, whose end is then checked too.
pub fn check_head(head: &[u8], head_size: usize) -> Result<(), String> {
    if head.is_empty() {
        return Err(
            "the artifact is empty (0 bytes): the backup that wrote it probably failed; \
             restore another backup"
                .into(),
        );
    }
    if head.starts_with(SQLITE_DUMP_START) {
        if head.len() < head_size {
            check_end(head)?;
        }
        return Ok(());
    }
    if SQLITE_DUMP_START.starts_with(head) {
        return Err(format!(
            "the artifact starts like an SQLite dump but is only {} byte(s) long: it is \
             truncated; restore another backup",
            head.len()
        ));
    }
    Err(match sniff::identify(head) {
        Some(Format::SqliteDatabase) => format!(
            "the artifact is an SQLite database file, not a dump of one; {REDUMP} (or copy \
             the file itself)"
        ),
        Some(Format::SqlScript) => format!(
            "the artifact looks like an SQL script, not an SQLite dump (which starts with \
             \"PRAGMA foreign_keys=OFF;\" and \"BEGIN TRANSACTION;\"); run SQL scripts with the \
             transform operation, or {REDUMP}"
        ),
        Some(format) => match format.plugin() {
            Some(plugin) => format!(
                "the artifact is {}, not an SQLite dump; restore it with --plugin {plugin}",
                format.description()
            ),
            None => format!(
                "the artifact is {}, not an SQLite dump; {REDUMP}",
                format.description()
            ),
        },
        None => format!(
            "the artifact is not an SQLite dump: it does not start with \"PRAGMA \
             foreign_keys=OFF;\" (first bytes: {}); {REDUMP}",
            sniff::hex_prefix(head, 16)
        ),
    })
}

/// Ok when `tail` (the last bytes of a dump) ends as complete dumps do.
pub fn check_end(tail: &[u8]) -> Result<(), String> {
    let last = sniff::last_line(tail);
    if last == COMMIT {
        return Ok(());
    }
    if last.starts_with(ROLLBACK) {
        return Err(
            "the dump ends with \"ROLLBACK; -- due to errors\": sqlite3 could not read all of \
             the database, which is probably damaged (check it with PRAGMA integrity_check); \
             the dump is incomplete"
                .into(),
        );
    }
    Err(format!(
        "the dump does not end with COMMIT; (last line: {:?}): it is truncated",
        String::from_utf8_lossy(&last[last.len().saturating_sub(60)..])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 4096;

    const DUMP: &str = "PRAGMA foreign_keys=OFF;\n\
        BEGIN TRANSACTION;\n\
        CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);\n\
        INSERT INTO t VALUES(1,X'00ff');\n\
        CREATE INDEX i ON t(b);\n\
        COMMIT;\n";

    /// A head as the host hands it over: `text` padded past the head size,
    /// so it is not taken for the whole artifact.
    fn long(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        while v.len() < SIZE {
            v.extend_from_slice(b"INSERT INTO t VALUES(2,X'0102');\n");
        }
        v.truncate(SIZE);
        v
    }

    fn err(head: &[u8]) -> String {
        check_head(head, SIZE).expect_err("should be refused")
    }

    #[test]
    fn accepts_dumps() {
        assert_eq!(check_head(DUMP.as_bytes(), SIZE), Ok(()));
        assert_eq!(check_head(&long(&DUMP[..60]), SIZE), Ok(()));
        let empty = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCOMMIT;\n";
        assert_eq!(check_head(empty.as_bytes(), SIZE), Ok(()));
    }

    #[test]
    fn a_short_artifact_must_be_complete() {
        let cut = &DUMP[..DUMP.len() - 8];
        assert!(err(cut.as_bytes()).contains("truncated"));
        assert!(err(b"PRAGMA foreign").contains("truncated"));
        let damaged = DUMP.replace("COMMIT;", "ROLLBACK; -- due to errors");
        assert!(err(damaged.as_bytes()).contains("damaged"));
        assert!(check_end(b"...\nCOMMIT;\n").is_ok());
        assert!(check_end(b"INSERT INTO t VALUES(1,'COMMIT;');").is_err());
    }

    #[test]
    fn names_other_formats() {
        assert!(err(&[0x28, 0xb5, 0x2f, 0xfd, 0]).contains("zstd-compressed"));
        let mut db = b"SQLite format 3\0".to_vec();
        db.resize(SIZE, 0);
        assert!(err(&db).contains("database file, not a dump"));
        let mut pg = b"PGDMP".to_vec();
        pg.extend_from_slice(&[1, 14, 0, 4, 8, 1, 0, 1, 0, 0, 0, 0]);
        assert!(err(&pg).contains("--plugin postgres"));
        assert!(err(&long("-- MariaDB dump 10.19\n")).contains("--plugin mysql"));
        assert!(err(&long("--\n-- PostgreSQL database dump\n--\n")).contains("pg_dump -Fp"));
        assert!(err(&long("UPDATE t SET b = NULL;\n")).contains("transform"));
        let e = err(&long("\u{89}PNG junk"));
        assert!(e.contains("does not start with"), "{e}");
    }
}
