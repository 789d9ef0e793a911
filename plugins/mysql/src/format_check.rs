//! Recognising a mariadb-dump / mysqldump SQL dump of one database from its
//! first bytes, and naming what an artifact is instead, so a wrong file is
//! refused before the target is touched. Pure logic: no host calls,
//! unit-tested natively. Other formats are named with the SDK's `sniff`.

use envsync_plugin_sdk::sniff::{self, Format};

/// The first line of dumps made by MariaDB's clients since 10.5.25, 10.6.18,
/// 10.11.8 and 11.x: it makes a new `mariadb` client refuse shell and file
/// commands for the rest of the file (older clients and MySQL's choke on it).
const SANDBOX_LINE: &[u8] = b"/*M!999999\\- enable the sandbox mode */";

/// The header comment of a dump with comments (the default).
const DUMP_COMMENTS: &[&[u8]] = &[b"-- MySQL dump", b"-- MariaDB dump"];

/// The first statement of a dump made with --skip-comments.
const FIRST_SET: &[u8] = b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;";

/// What a complete dump ends with: the comment (dumps with comments), else
/// the last statement of the footer.
const END_COMMENT: &[u8] = b"-- Dump completed";
const LAST_STATEMENT: &[u8] = b"/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;";

/// How an SQL script starts: refused with a pointer to `transform`.
const SQL_STARTS: &[&[u8]] = &[
    b"--", b"/*", b"#", b"SET ", b"BEGIN", b"START ", b"CREATE ", b"DROP ", b"INSERT ", b"UPDATE ",
    b"DELETE ", b"SELECT ", b"USE ", b"LOCK ", b"ALTER ",
];

const REDUMP: &str =
    "make the backup with the mysql plugin (mariadb-dump or mysqldump of one database)";

/// Ok when `head` starts a dump of one database; otherwise what it looks like
/// and what to do. `head_size` is how many bytes the host hands over at most:
/// a shorter head is the whole artifact, whose end is then checked too.
pub fn check_head(head: &[u8], head_size: usize) -> Result<(), String> {
    if head.is_empty() {
        return Err(
            "the artifact is empty (0 bytes): the backup that wrote it probably failed; \
             restore another backup"
                .into(),
        );
    }
    let text = after_sandbox_line(sniff::text_start(head));
    let whole = head.len() < head_size;
    let dump_start = if DUMP_COMMENTS.iter().any(|c| text.starts_with(c)) {
        true
    } else {
        text.starts_with(FIRST_SET)
    };
    if dump_start {
        if let Some(problem) = names_databases(head) {
            return Err(problem);
        }
        if whole && !ends_like_a_dump(head) {
            return Err(format!(
                "the artifact starts like a MySQL/MariaDB dump but is only {} bytes long and \
                 lacks the end every complete dump has: it is truncated; restore another backup",
                head.len()
            ));
        }
        return Ok(());
    }
    if is_prefix_of_a_dump(text) {
        return Err(format!(
            "the artifact starts like a MySQL/MariaDB dump but is only {} byte(s) long: it is \
             truncated; restore another backup",
            head.len()
        ));
    }
    match sniff::identify(head) {
        Some(Format::PostgresArchive) => Err(
            "the artifact is a PostgreSQL custom-format archive (pg_dump -Fc), not a \
             MySQL/MariaDB dump; restore it with --plugin postgres"
                .into(),
        ),
        Some(Format::Compressed(what)) => Err(format!(
            "the artifact is {what}-compressed, but its manifest says it is plain SQL; \
             decompress it first, or {REDUMP}"
        )),
        Some(Format::Tar | Format::PostgresTar) => Err(format!(
            "the artifact is a tar archive, not a MySQL/MariaDB dump; {REDUMP}"
        )),
        Some(Format::MysqlPump) => Err(format!(
            "the artifact was made by mysqlpump, whose dumps name their databases and so \
             cannot be restored under another name; {REDUMP}"
        )),
        Some(Format::MysqlXml) => Err(format!(
            "the artifact is an XML dump (mysqldump --xml), which cannot be loaded as SQL; {REDUMP}"
        )),
        Some(Format::PostgresCluster) => Err(
            "the artifact is a PostgreSQL plain SQL dump of a whole cluster (pg_dumpall), not a \
             MySQL/MariaDB dump; load it into PostgreSQL with psql"
                .into(),
        ),
        Some(Format::PostgresPlain) => Err(
            "the artifact is a PostgreSQL plain SQL dump (pg_dump -Fp), not a MySQL/MariaDB \
             dump; load it into PostgreSQL with psql (the postgres plugin restores pg_dump -Fc \
             archives)"
                .into(),
        ),
        Some(format @ (Format::SqliteDump | Format::SqliteDatabase)) => Err(format!(
            "the artifact is {}, not a MySQL/MariaDB dump; {}",
            format.description(),
            match format.plugin() {
                Some(plugin) => format!("restore it with --plugin {plugin}"),
                None => REDUMP.to_string(),
            }
        )),
        _ if sniff::starts_with_any(text, SQL_STARTS) => Err(format!(
            "the artifact looks like an SQL script, not a mariadb-dump/mysqldump dump (which \
             starts with \"-- MariaDB dump\" or \"-- MySQL dump\"); run SQL scripts with the \
             transform operation, or {REDUMP}"
        )),
        _ if head.len() < 16 => Err(format!(
            "the artifact is only {} byte(s) long, too short to be a dump; restore another backup",
            head.len()
        )),
        _ => Err(format!(
            "the artifact is not a MySQL/MariaDB dump: it does not start with a dump header \
             (first bytes: {}); {REDUMP}",
            sniff::hex_prefix(head, 16)
        )),
    }
}

/// Dumps made with --databases or --all-databases create and `USE` their
/// databases by name, so loading them would write into those databases
/// instead of the scratch one. Their first database header is always in the
/// head, right after the session settings.
fn names_databases(head: &[u8]) -> Option<String> {
    let marker = [
        &b"\n-- Current Database: "[..],
        b"\nCREATE DATABASE ",
        b"\nUSE `",
    ]
    .into_iter()
    .find(|m| sniff::contains(head, m))?;
    let name = quoted_name_after(head, marker).unwrap_or_default();
    Some(format!(
        "the artifact is a dump made with --databases or --all-databases: it creates and uses \
         database {name} by name, so loading it would write into that database instead of \
         the one being restored; {REDUMP}"
    ))
}

/// The first `` `name` `` from the first `marker` on, for messages.
fn quoted_name_after(head: &[u8], marker: &[u8]) -> Option<String> {
    let at = head.windows(marker.len()).position(|w| w == marker)?;
    let rest = &head[at..];
    let start = rest.iter().position(|&b| b == b'`')?;
    let end = rest[start + 1..]
        .iter()
        .position(|&b| b == b'`' || b == b'\n')?;
    Some(format!(
        "`{}`",
        String::from_utf8_lossy(&rest[start + 1..start + 1 + end])
    ))
}

/// A whole (short) artifact ends like a complete dump.
fn ends_like_a_dump(whole: &[u8]) -> bool {
    let last_line = sniff::last_line(whole);
    last_line.starts_with(END_COMMENT) || last_line == LAST_STATEMENT
}

/// True when `text` is a proper beginning of what a dump starts with (the
/// artifact stops inside its very first line).
fn is_prefix_of_a_dump(text: &[u8]) -> bool {
    if text.is_empty() {
        return false;
    }
    [SANDBOX_LINE, FIRST_SET]
        .into_iter()
        .chain(DUMP_COMMENTS.iter().copied())
        .any(|start| start.len() > text.len() && start.starts_with(text))
}

/// `text` after the sandbox-mode line and the whitespace that follows it.
fn after_sandbox_line(text: &[u8]) -> &[u8] {
    match text.strip_prefix(SANDBOX_LINE) {
        Some(rest) => sniff::text_start(rest),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 4096;

    /// The start of a real `mariadb-dump` 10.11 dump of one database.
    const MARIADB_HEAD: &str = "/*M!999999\\- enable the sandbox mode */ \n\
        -- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)\n\
        --\n\
        -- Host: 127.0.0.1    Database: shop\n\
        -- ------------------------------------------------------\n\
        -- Server version\t10.11.19-MariaDB-0+deb12u1\n\n\
        /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
        /*!40101 SET NAMES utf8mb4 */;\n\
        /*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n\n\
        --\n-- Table structure for table `t`\n--\n\n\
        DROP TABLE IF EXISTS `t`;\n";

    const FOOTER: &str = "/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;\n\
        /*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\n\
        -- Dump completed on 2026-11-21  6:51:08\n";

    /// A head as the host hands it over: `text` padded past the head size,
    /// so it is not taken for the whole artifact.
    fn long(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        while v.len() < SIZE {
            v.extend_from_slice(b"INSERT INTO `t` VALUES (1,'x'),(2,'y');\n");
        }
        v.truncate(SIZE);
        v
    }

    fn err(head: &[u8]) -> String {
        check_head(head, SIZE).expect_err("should be refused")
    }

    #[test]
    fn accepts_mariadb_and_mysql_dumps() {
        assert_eq!(check_head(&long(MARIADB_HEAD), SIZE), Ok(()));
        let mysql = "-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n\
                     -- Host: localhost    Database: shop\n\
                     /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n";
        assert_eq!(check_head(&long(mysql), SIZE), Ok(()));
        // --skip-comments, with and without the sandbox line.
        let bare = "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n";
        assert_eq!(check_head(&long(bare), SIZE), Ok(()));
        let sandboxed = format!("/*M!999999\\- enable the sandbox mode */ \n\n{bare}");
        assert_eq!(check_head(&long(&sandboxed), SIZE), Ok(()));
        // A byte-order mark and blank lines in front are fine.
        assert_eq!(
            check_head(&long(&format!("\u{feff}\n{mysql}")), SIZE),
            Ok(())
        );
    }

    #[test]
    fn a_short_artifact_must_be_complete() {
        let complete = format!("{MARIADB_HEAD}{FOOTER}");
        assert_eq!(check_head(complete.as_bytes(), SIZE), Ok(()));
        let skip_comments = format!("{MARIADB_HEAD}{}", &FOOTER[..FOOTER.find("\n\n").unwrap()]);
        assert_eq!(check_head(skip_comments.as_bytes(), SIZE), Ok(()));
        let cut = &complete[..complete.len() - FOOTER.len() + 10];
        assert!(err(cut.as_bytes()).contains("truncated"));
        assert!(err(MARIADB_HEAD.as_bytes()).contains("truncated"));
    }

    #[test]
    fn refuses_empty_and_cut_first_lines() {
        assert!(err(b"").contains("empty"));
        for cut in [
            &b"/*M"[..],
            b"/*M!999999\\- enable",
            b"-- Maria",
            b"/*!40101 SET @OLD",
        ] {
            assert!(err(cut).contains("truncated"), "{cut:?}");
        }
        assert!(err(b"\x00\x01").contains("too short"));
    }

    #[test]
    fn refuses_dumps_that_name_their_databases() {
        let databases = "-- MariaDB dump 10.19\n\
            /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\n\
            --\n-- Current Database: `shop`\n--\n\n\
            CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\n\
            USE `shop`;\n";
        let e = err(&long(databases));
        assert!(e.contains("--databases"), "{e}");
        assert!(e.contains("`shop`"), "{e}");
        let use_only = "-- MySQL dump 10.13\n\nUSE `other`;\n";
        assert!(err(&long(use_only)).contains("`other`"));
        let pump = "-- Dump created by MySQL pump utility, version: 8.0.36\n";
        assert!(err(&long(pump)).contains("mysqlpump"));
    }

    #[test]
    fn names_postgres_formats() {
        let mut custom = b"PGDMP".to_vec();
        custom.extend_from_slice(&[1, 14, 0, 4, 8, 1, 0, 1, 0, 0, 0, 0]);
        assert!(err(&custom).contains("--plugin postgres"));
        let plain =
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\nSET statement_timeout = 0;\n";
        assert!(err(&long(plain)).contains("pg_dump -Fp"));
        let cluster = "--\n-- PostgreSQL database cluster dump\n--\n";
        assert!(err(&long(cluster)).contains("pg_dumpall"));
    }

    #[test]
    fn names_compressed_and_archived_files() {
        assert!(err(&[0x1f, 0x8b, 8, 0]).contains("gzip-compressed"));
        assert!(err(&[0x28, 0xb5, 0x2f, 0xfd, 0]).contains("zstd-compressed"));
        assert!(err(b"BZh91AY").contains("bzip2"));
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(err(&tar).contains("tar archive"));
    }

    #[test]
    fn names_other_text() {
        assert!(err(&long("UPDATE customers SET email = NULL;\n")).contains("SQL script"));
        assert!(err(&long("-- my own script\nSELECT 1;\n")).contains("transform"));
        let xml = "<?xml version=\"1.0\"?>\n<mysqldump xmlns:xsi=\"x\">\n";
        assert!(err(&long(xml)).contains("XML"));
    }

    #[test]
    fn names_sqlite_files() {
        let dump = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(a);\n";
        assert!(err(&long(dump)).contains("--plugin sqlite"));
        let mut file = b"SQLite format 3\0".to_vec();
        file.resize(SIZE, 0);
        assert!(err(&file).contains("SQLite database file"));
    }

    #[test]
    fn names_unknown_bytes() {
        let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
        junk.resize(SIZE, 0xAB);
        let e = err(&junk);
        assert!(e.contains("does not start with a dump header"), "{e}");
        assert!(e.contains("89 50 4e 47"), "{e}");
    }
}
