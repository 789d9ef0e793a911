//! Recognising a pg_dump custom-format archive from its first bytes, and
//! naming what an artifact is instead, so a wrong file is refused before the
//! target is touched. Pure logic: no host calls, unit-tested natively. Other
//! formats are named with the SDK's `sniff`.

use envsync_plugin_sdk::sniff::{self, Format};

/// The archive header: magic, version (major, minor, revision), int size,
/// offset size, then the format byte (pg_backup_archiver.h).
const MAGIC: &[u8] = b"PGDMP";
const FORMAT_BYTE: usize = 10;

/// `ArchiveFormat` values from pg_backup.h.
const ARCH_UNKNOWN: u8 = 0;
const ARCH_CUSTOM: u8 = 1;
const ARCH_TAR: u8 = 3;
const ARCH_NULL: u8 = 4;
const ARCH_DIRECTORY: u8 = 5;

const REDUMP: &str = "make the backup with pg_dump -Fc (the postgres plugin's default)";

/// In the header of every plain dump pg_dump writes, a few lines down.
const PG_DUMP_BANNER: &[u8] = b"-- Dumped by pg_dump version ";

/// How an SQL script starts: refused with a pointer to `transform`.
const SQL_STARTS: &[&[u8]] = &[
    b"--", b"/*", b"SET ", b"BEGIN", b"CREATE ", b"INSERT ", b"COPY ", b"SELECT ",
];

/// The formats restore takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A pg_dump custom-format archive (backups), restored with pg_restore.
    Custom,
    /// A plain SQL dump of one database (sanitised backups), loaded with psql.
    Plain,
    /// The plan of a chunked artifact (`plan`), whose chunks the host holds.
    Chunked,
}

/// Ok when `head` starts a custom-format archive or a plain SQL dump of one
/// database; otherwise what it looks like and what to do.
pub fn check_head(head: &[u8]) -> Result<(), String> {
    kind(head).map(drop)
}

/// Which format `head` starts, or what it looks like and what to do.
pub fn kind(head: &[u8]) -> Result<Kind, String> {
    if head.is_empty() {
        return Err(
            "the artifact is empty (0 bytes): the backup that wrote it probably failed; \
             restore another backup"
                .into(),
        );
    }
    if head.starts_with(MAGIC) {
        return check_archive_header(head).map(|()| Kind::Custom);
    }
    if head.starts_with(crate::plan::MAGIC) {
        return Ok(Kind::Chunked);
    }
    let text = sniff::text_start(head);
    match sniff::identify(head) {
        Some(Format::Compressed(what)) => Err(format!(
            "the artifact is {what}-compressed, not a pg_dump custom-format archive \
             (which compresses itself and starts with PGDMP); decompress it first, or {REDUMP}"
        )),
        Some(Format::PostgresTar) => Err(format!(
            "the artifact is a PostgreSQL tar-format dump (pg_dump -Ft); restore takes only \
             the custom format; {REDUMP}"
        )),
        Some(Format::Tar) => Err(format!(
            "the artifact is a tar archive, not a pg_dump custom-format archive; {REDUMP}"
        )),
        Some(Format::MysqlDump) => Err(
            "the artifact looks like a MySQL/MariaDB dump; restore it with --plugin mysql".into(),
        ),
        Some(Format::PostgresCluster) => Err(format!(
            "the artifact is a plain SQL dump of a whole cluster (pg_dumpall); \
             load it with psql instead, or {REDUMP}"
        )),
        Some(Format::PostgresPlain) if sniff::contains(head, PG_DUMP_BANNER) => Ok(Kind::Plain),
        Some(Format::PostgresPlain) => Err(format!(
            "the artifact looks like a plain SQL script but not a dump pg_dump wrote (its head \
             has no \"{}\" line); restore takes pg_dump custom-format archives and plain \
             dumps of one database: run SQL scripts with the transform operation, or {REDUMP}",
            String::from_utf8_lossy(PG_DUMP_BANNER)
        )),
        Some(format @ (Format::SqliteDump | Format::SqliteDatabase)) => Err(format!(
            "the artifact is {}, not a pg_dump custom-format archive; {}",
            format.description(),
            match format.plugin() {
                Some(plugin) => format!("restore it with --plugin {plugin}"),
                None => REDUMP.to_string(),
            }
        )),
        _ if sniff::starts_with_any(text, SQL_STARTS) => Err(format!(
            "the artifact looks like an SQL script, not a pg_dump custom-format archive; \
             run SQL scripts with the transform operation, or {REDUMP}"
        )),
        _ if head.len() < MAGIC.len() => Err(format!(
            "the artifact is only {} byte(s) long, too short to be a dump; restore another backup",
            head.len()
        )),
        _ => Err(format!(
            "the artifact is not a pg_dump custom-format archive: it does not start with PGDMP \
             (first bytes: {}); {REDUMP}",
            sniff::hex_prefix(head, 16)
        )),
    }
}

/// Checks the header of something that starts with PGDMP.
fn check_archive_header(head: &[u8]) -> Result<(), String> {
    if head.len() <= FORMAT_BYTE {
        return Err(format!(
            "the artifact starts like a pg_dump archive but is only {} bytes long: it is \
             truncated; restore another backup",
            head.len()
        ));
    }
    let (vmaj, vmin, vrev) = (head[5], head[6], head[7]);
    let (int_size, off_size) = (head[8], head[9]);
    if vmaj != 1 || !(1..=32).contains(&int_size) || !(1..=32).contains(&off_size) {
        return Err(format!(
            "the artifact starts with PGDMP but its header is damaged or of an unknown version \
             ({vmaj}.{vmin}.{vrev}, int size {int_size}, offset size {off_size}); restore another backup"
        ));
    }
    match head[FORMAT_BYTE] {
        ARCH_CUSTOM => Ok(()),
        ARCH_TAR => Err(format!(
            "the artifact is the catalogue of a PostgreSQL tar-format dump (pg_dump -Ft); \
             restore takes only the custom format; {REDUMP}"
        )),
        ARCH_DIRECTORY => Err(format!(
            "the artifact is the toc.dat of a PostgreSQL directory-format dump (pg_dump -Fd), \
             which is useless without the rest of its directory; {REDUMP}"
        )),
        f @ (ARCH_UNKNOWN | ARCH_NULL) => Err(format!(
            "the artifact is a pg_dump archive of format {f} ({}), which pg_restore cannot read \
             from a stream; {REDUMP}",
            if f == ARCH_NULL { "null" } else { "unknown" }
        )),
        f => Err(format!(
            "the artifact starts with PGDMP but has an unknown format byte {f}; it is damaged \
             or from an unsupported pg_dump; restore another backup"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a real `pg_dump -Fc` archive from pg_dump 15.
    fn custom_header(format: u8) -> Vec<u8> {
        let mut h = b"PGDMP".to_vec();
        h.extend_from_slice(&[1, 14, 0, 4, 8, format, 0, 1, 0, 0, 0, 0]);
        h
    }

    fn err(head: &[u8]) -> String {
        check_head(head).expect_err("should be refused")
    }

    #[test]
    fn accepts_custom_format() {
        assert_eq!(check_head(&custom_header(ARCH_CUSTOM)), Ok(()));
    }

    #[test]
    fn refuses_empty_and_short() {
        assert!(err(b"").contains("empty"));
        assert!(err(b"\x00\x01").contains("too short"));
        assert!(err(b"PGDMP\x01\x0e").contains("truncated"));
    }

    #[test]
    fn names_other_pg_dump_formats() {
        assert!(err(&custom_header(ARCH_TAR)).contains("tar-format"));
        assert!(err(&custom_header(ARCH_DIRECTORY)).contains("directory-format"));
        assert!(err(&custom_header(ARCH_NULL)).contains("format 4"));
        assert!(err(&custom_header(9)).contains("unknown format byte 9"));
        let mut bad = custom_header(ARCH_CUSTOM);
        bad[5] = 7;
        assert!(err(&bad).contains("damaged"));
    }

    #[test]
    fn names_tar_dumps() {
        let mut tar = vec![0u8; 1024];
        tar[..8].copy_from_slice(b"toc.dat\0");
        tar[257..262].copy_from_slice(b"ustar");
        tar[512..517].copy_from_slice(b"PGDMP");
        assert!(err(&tar).contains("tar-format dump (pg_dump -Ft)"));
        tar[..8].copy_from_slice(b"foo.txt\0");
        tar[512..517].copy_from_slice(b"hello");
        assert!(err(&tar).contains("a tar archive"));
    }

    #[test]
    fn names_compressed_files() {
        assert!(err(&[0x1f, 0x8b, 8, 0]).contains("gzip-compressed"));
        assert!(err(&[0x28, 0xb5, 0x2f, 0xfd, 0]).contains("zstd-compressed"));
        assert!(err(b"BZh91AY").contains("bzip2"));
    }

    #[test]
    fn names_plain_sql_dumps() {
        let plain = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n\
            -- Dumped from database version 15.20\n-- Dumped by pg_dump version 15.20\n";
        assert_eq!(kind(plain), Ok(Kind::Plain));
        let script = b"--\n-- PostgreSQL database dump\n--\n\nDROP TABLE x;\n";
        assert!(err(script).contains("not a dump pg_dump wrote"));
        assert_eq!(kind(&custom_header(ARCH_CUSTOM)), Ok(Kind::Custom));
        let cluster = b"--\n-- PostgreSQL database cluster dump\n--\n";
        assert!(err(cluster).contains("pg_dumpall"));
        assert!(err(b"SET statement_timeout = 0;\n").contains("SQL script"));
    }

    #[test]
    fn names_mysql_dumps() {
        for head in [
            &b"-- MySQL dump 10.13  Distrib 8.0.36\n"[..],
            b"-- MariaDB dump 10.19-11.2.2-MariaDB\n",
            b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n",
            b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n",
            b"\xef\xbb\xbf\n-- MySQL dump 10.13\n",
        ] {
            assert!(err(head).contains("--plugin mysql"), "{head:?}");
        }
    }

    #[test]
    fn names_sqlite_files() {
        let dump = b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(a);\n";
        assert!(err(dump).contains("--plugin sqlite"));
        assert!(err(b"SQLite format 3\0\x10\0").contains("SQLite database file"));
    }

    #[test]
    fn names_unknown_bytes() {
        let e = err(b"\x89PNG\r\n\x1a\n0000");
        assert!(e.contains("does not start with PGDMP"));
        assert!(e.contains("89 50 4e 47"));
    }
}
