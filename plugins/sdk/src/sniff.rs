//! "What else could this file be": recognising common artifact formats from
//! their first bytes, so `check` can refuse a wrong file with a message that
//! names what it is and what to do, before the target is touched.
//!
//! A plugin recognises its own format itself (it knows its details, such as
//! a truncated header); for everything else it asks [`identify`] and words
//! the refusal. [`Format::description`] and [`Format::plugin`] give the
//! pieces of a generic message. The byte helpers ([`text_start`],
//! [`contains`], [`last_line`], [`hex_prefix`], …) are what format checks
//! keep needing. All of it is pure logic: no host calls, testable natively.
//!
//! ```
//! use envsync_plugin_sdk::sniff::{self, Format};
//!
//! fn check_head(head: &[u8]) -> Result<(), String> {
//!     if head.starts_with(b"MYDB DUMP 1\n") {
//!         return Ok(());
//!     }
//!     Err(match sniff::identify(head) {
//!         Some(format) => {
//!             let hint = match format.plugin() {
//!                 Some(plugin) => format!("restore it with --plugin {plugin}"),
//!                 None => "make the backup with this plugin".to_string(),
//!             };
//!             format!("the artifact is {}, not a mydb dump; {hint}", format.description())
//!         }
//!         None => format!(
//!             "the artifact is not a mydb dump (first bytes: {})",
//!             sniff::hex_prefix(head, 16)
//!         ),
//!     })
//! }
//!
//! assert_eq!(
//!     check_head(b"PGDMP\x01\x0e\x00\x04\x08\x01").unwrap_err(),
//!     "the artifact is a PostgreSQL custom-format archive (pg_dump -Fc), not a mydb dump; \
//!      restore it with --plugin postgres"
//! );
//! assert!(sniff::identify(&[0x1f, 0x8b, 8, 0]) == Some(Format::Compressed("gzip")));
//! ```

/// A format [`identify`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Compressed with the named compressor (`gzip`, `zstd`, `bzip2`, `xz`,
    /// `lz4`).
    Compressed(&'static str),
    /// A tar archive of some other kind.
    Tar,
    /// A PostgreSQL archive header (`PGDMP`): a custom-format dump, or the
    /// catalogue of a tar or directory dump.
    PostgresArchive,
    /// A PostgreSQL tar-format dump (`pg_dump -Ft`).
    PostgresTar,
    /// A PostgreSQL plain SQL dump (`pg_dump -Fp`).
    PostgresPlain,
    /// A PostgreSQL plain SQL dump of a whole cluster (`pg_dumpall`).
    PostgresCluster,
    /// A MariaDB/MySQL SQL dump (`mariadb-dump`, `mysqldump`).
    MysqlDump,
    /// A dump made by MySQL's `mysqlpump`.
    MysqlPump,
    /// An XML dump (`mysqldump --xml`).
    MysqlXml,
    /// An SQLite database file.
    SqliteDatabase,
    /// An SQL text dump of an SQLite database (the `sqlite3` shell's `.dump`).
    SqliteDump,
    /// Text that starts like an SQL script of no particular dump program.
    SqlScript,
}

impl Format {
    /// What it is, as a noun phrase for messages ("a gzip-compressed file").
    pub fn description(self) -> &'static str {
        match self {
            Format::Compressed("gzip") => "a gzip-compressed file",
            Format::Compressed("zstd") => "a zstd-compressed file",
            Format::Compressed("bzip2") => "a bzip2-compressed file",
            Format::Compressed("xz") => "an xz-compressed file",
            Format::Compressed("lz4") => "an lz4-compressed file",
            Format::Compressed(_) => "a compressed file",
            Format::Tar => "a tar archive",
            Format::PostgresArchive => "a PostgreSQL custom-format archive (pg_dump -Fc)",
            Format::PostgresTar => "a PostgreSQL tar-format dump (pg_dump -Ft)",
            Format::PostgresPlain => "a PostgreSQL plain SQL dump (pg_dump -Fp)",
            Format::PostgresCluster => {
                "a PostgreSQL plain SQL dump of a whole cluster (pg_dumpall)"
            }
            Format::MysqlDump => "a MySQL/MariaDB dump",
            Format::MysqlPump => "a mysqlpump dump",
            Format::MysqlXml => "an XML dump (mysqldump --xml)",
            Format::SqliteDatabase => "an SQLite database file",
            Format::SqliteDump => "an SQLite SQL dump (sqlite3 .dump)",
            Format::SqlScript => "an SQL script",
        }
    }

    /// The first-party plugin that restores this format, if one does.
    pub fn plugin(self) -> Option<&'static str> {
        match self {
            Format::PostgresArchive => Some("postgres"),
            Format::MysqlDump => Some("mysql"),
            Format::SqliteDump => Some("sqlite"),
            _ => None,
        }
    }
}

/// The start of every `pg_dump` archive.
const PGDMP: &[u8] = b"PGDMP";
/// The first 16 bytes of every SQLite database file.
const SQLITE_FILE: &[u8] = b"SQLite format 3\0";
/// How the `sqlite3` shell's `.dump` starts.
pub const SQLITE_DUMP_START: &[u8] = b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n";

/// How statements of SQL scripts commonly start (compared ignoring case).
pub const SQL_STARTS: &[&[u8]] = &[
    b"--",
    b"/*",
    b"SET ",
    b"BEGIN",
    b"START ",
    b"CREATE ",
    b"DROP ",
    b"ALTER ",
    b"INSERT ",
    b"UPDATE ",
    b"DELETE ",
    b"SELECT ",
    b"WITH ",
    b"COPY ",
    b"USE ",
    b"LOCK ",
    b"PRAGMA ",
    b"TRUNCATE ",
];

/// What `head` (the first bytes of an artifact) is, when it is a format
/// this module knows.
pub fn identify(head: &[u8]) -> Option<Format> {
    if head.starts_with(PGDMP) {
        return Some(Format::PostgresArchive);
    }
    if let Some(name) = compression(head) {
        return Some(Format::Compressed(name));
    }
    if head.starts_with(SQLITE_FILE) {
        return Some(Format::SqliteDatabase);
    }
    if is_tar(head) {
        let postgres =
            head.starts_with(b"toc.dat\0") || head.get(512..512 + PGDMP.len()) == Some(PGDMP);
        return Some(if postgres {
            Format::PostgresTar
        } else {
            Format::Tar
        });
    }
    let text = text_start(head);
    if is_mysql_dump(text) {
        return Some(Format::MysqlDump);
    }
    if contains(head, b"-- Dump created by MySQL pump utility") {
        return Some(Format::MysqlPump);
    }
    if text.starts_with(b"<?xml") && contains(head, b"<mysqldump") {
        return Some(Format::MysqlXml);
    }
    if contains(head, b"PostgreSQL database cluster dump") {
        return Some(Format::PostgresCluster);
    }
    if (text.starts_with(b"--") || text.starts_with(b"SET ") || text.starts_with(b"\\restrict"))
        && contains(head, b"PostgreSQL database dump")
    {
        return Some(Format::PostgresPlain);
    }
    if text.starts_with(SQLITE_DUMP_START) {
        return Some(Format::SqliteDump);
    }
    if looks_like_sql(text) {
        return Some(Format::SqlScript);
    }
    None
}

/// mysqldump and mariadb-dump headers, or their version-guarded comments.
fn is_mysql_dump(text: &[u8]) -> bool {
    text.starts_with(b"/*!")
        || text.starts_with(b"/*M!")
        || (text.starts_with(b"--")
            && (contains(text, b"MySQL dump") || contains(text, b"MariaDB dump")))
}

/// The name of the compressor whose magic number starts `head`.
pub fn compression(head: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
}

/// POSIX tar: `ustar` at offset 257 of the first header block.
pub fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar".as_slice())
}

/// Whether `text` starts with one of `starts`, ignoring ASCII case.
pub fn starts_with_any(text: &[u8], starts: &[&[u8]]) -> bool {
    starts
        .iter()
        .any(|s| text.len() >= s.len() && text[..s.len()].eq_ignore_ascii_case(s))
}

/// Whether `text` (see [`text_start`]) starts like an SQL script
/// ([`SQL_STARTS`]).
pub fn looks_like_sql(text: &[u8]) -> bool {
    starts_with_any(text, SQL_STARTS)
}

/// The text after a UTF-8 byte-order mark and leading whitespace.
pub fn text_start(head: &[u8]) -> &[u8] {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    &head[start..]
}

/// `bytes` without trailing whitespace.
pub fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// The last line of `bytes` that is not blank (without its line end).
pub fn last_line(bytes: &[u8]) -> &[u8] {
    let trimmed = trim_end(bytes);
    trimmed
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(trimmed, |i| &trimmed[i + 1..])
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first `n` bytes as hex (`89 50 4e 47`), for messages about unknown
/// formats.
pub fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes
        .iter()
        .take(n)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_binary_formats() {
        assert_eq!(identify(b"PGDMP\x01\x0e"), Some(Format::PostgresArchive));
        assert_eq!(
            identify(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Format::Compressed("zstd"))
        );
        assert_eq!(identify(b"BZh91AY"), Some(Format::Compressed("bzip2")));
        let mut db = b"SQLite format 3\0".to_vec();
        db.extend_from_slice(&[0x10, 0, 1, 1]);
        assert_eq!(identify(&db), Some(Format::SqliteDatabase));
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(identify(&tar), Some(Format::Tar));
        tar[..8].copy_from_slice(b"toc.dat\0");
        assert_eq!(identify(&tar), Some(Format::PostgresTar));
        assert_eq!(identify(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(identify(b""), None);
    }

    #[test]
    fn identifies_text_dumps() {
        let cases: &[(&[u8], Format)] = &[
            (b"-- MariaDB dump 10.19\n", Format::MysqlDump),
            (b"\xef\xbb\xbf\n-- MySQL dump 10.13\n", Format::MysqlDump),
            (
                b"/*M!999999\\- enable the sandbox mode */\n",
                Format::MysqlDump,
            ),
            (
                b"-- Dump created by MySQL pump utility, version: 8.0\n",
                Format::MysqlPump,
            ),
            (
                b"<?xml version=\"1.0\"?>\n<mysqldump xmlns:xsi=\"x\">",
                Format::MysqlXml,
            ),
            (
                b"--\n-- PostgreSQL database cluster dump\n--\n",
                Format::PostgresCluster,
            ),
            (
                b"--\n-- PostgreSQL database dump\n--\n",
                Format::PostgresPlain,
            ),
            (
                b"\\restrict abc\n-- PostgreSQL database dump\n",
                Format::PostgresPlain,
            ),
            (
                b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCOMMIT;\n",
                Format::SqliteDump,
            ),
            (b"update t set a = 1;\n", Format::SqlScript),
            (b"PRAGMA journal_mode=WAL;\n", Format::SqlScript),
        ];
        for (head, format) in cases {
            assert_eq!(
                identify(head),
                Some(*format),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn formats_name_themselves_and_their_plugin() {
        assert_eq!(
            Format::Compressed("xz").description(),
            "an xz-compressed file"
        );
        assert_eq!(Format::SqliteDump.plugin(), Some("sqlite"));
        assert_eq!(Format::MysqlDump.plugin(), Some("mysql"));
        assert_eq!(Format::PostgresPlain.plugin(), None);
    }

    #[test]
    fn byte_helpers() {
        assert_eq!(text_start(b"\xef\xbb\xbf \n\tx y"), b"x y");
        assert_eq!(trim_end(b"a b \n\n"), b"a b");
        assert_eq!(last_line(b"a\nCOMMIT;\n\n"), b"COMMIT;");
        assert_eq!(last_line(b"only"), b"only");
        assert_eq!(last_line(b""), b"");
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"world"));
        assert_eq!(hex_prefix(b"\x89PNG\r\n", 4), "89 50 4e 47");
        assert!(starts_with_any(b"select 1", &[b"SELECT "]));
        assert!(!looks_like_sql(b"# comment"));
    }
}
