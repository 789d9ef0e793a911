//! Quoting, and the SQL text the plugin sends through the `mariadb`/`mysql`
//! client.
//!
//! Names come from operators and may contain any character, so every name is
//! written as a backtick-quoted identifier (unaffected by `sql_mode`), and
//! every name compared as a value is written as a hex literal (`X'…'`), which
//! compares byte for byte whatever the character set, collation or
//! `NO_BACKSLASH_ESCAPES`. Object definitions are bytes in the character set
//! they were written in; scripts are therefore bytes too.

/// `name` as an identifier: wrapped in backticks with backticks doubled.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`name`.
pub fn qualified(db: &str, name: &str) -> String {
    format!("{}.{}", ident(db), ident(name))
}

/// `value` as a hex string literal.
pub fn hex(value: &str) -> String {
    let mut out = String::with_capacity(3 + value.len() * 2);
    out.push_str("X'");
    for b in value.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('\'');
    out
}

/// `value` (an sql_mode, character set, collation or time zone name read from
/// the server) as a plain string literal. These are ASCII words; anything
/// else is refused rather than escaped, since the escaping rules depend on
/// the session's sql_mode.
pub fn word(value: &str) -> Result<String, String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "_,+-:/.".contains(c);
    if value.chars().all(fine) {
        Ok(format!("'{value}'"))
    } else {
        Err(format!(
            "unexpected characters in the server setting {value:?}"
        ))
    }
}

/// Every session of the plugin starts like this: an empty sql_mode makes
/// SHOW CREATE print backtick-quoted names (not ANSI double quotes) and keeps
/// the plugin's own statements independent of the server's default mode.
pub const SESSION_START: &str = "SET SESSION sql_mode = '';\nSET NAMES utf8mb4;\n";

/// The init command of a load: notes on (so the dump's header visibly turns
/// them off and its footer back on, see [`LOAD_TRAILER`]), unique and
/// foreign-key checks off (rows load in any order, faster). The dump sets
/// the checks off itself too; this covers dumps made without that header.
/// Binary logging is left as it is: switching it off needs SUPER, and a
/// replicated target should follow the restore.
pub const LOAD_INIT: &str = "SET SESSION sql_notes = 1, unique_checks = 0, foreign_key_checks = 0";

/// Marks the error the load trailer raises.
pub const TRUNCATED_MARK: &str = "ENVSYNC_DUMP_IS_TRUNCATED";

/// Written to the loading client after the artifact, before end of input.
/// The first lines close what a cut-off artifact may have left open (a
/// `/* comment`, a changed delimiter; an open string or statement makes the
/// client fail, which is what we want). The check: a dump's header saves the
/// session settings (@OLD_CHARACTER_SET_CLIENT first, @OLD_SQL_NOTES last)
/// and turns notes off; its footer ends by turning them back on. A header
/// that ran with a footer that did not means the artifact stops early, even
/// exactly between two statements, which the client itself cannot notice.
pub const LOAD_TRAILER: &str = "\n-- */\nDELIMITER ;\n;\n\
    SET SESSION sql_mode = IF(@OLD_CHARACTER_SET_CLIENT IS NOT NULL \
    AND NOT (@OLD_SQL_NOTES IS NOT NULL AND @@SESSION.sql_notes = 1), \
    'ENVSYNC_DUMP_IS_TRUNCATED', @@SESSION.sql_mode);\n";

/// The init command of a transform: no autocommit, so every statement runs
/// in a transaction that only [`TRANSFORM_TRAILER`] commits. The client stops
/// at the first error and disconnects, and the server rolls back.
pub const TRANSFORM_INIT: &str = "SET SESSION autocommit = 0";

/// Written after a transform script: closes a `/* comment` or delimiter the
/// script left open (so the COMMIT cannot be swallowed silently), then
/// commits.
pub const TRANSFORM_TRAILER: &str = "\n-- */\nDELIMITER ;\n;\nCOMMIT;\n";

/// The table that marks the scratch and old databases as the plugin's own,
/// so a leftover is dropped by the next run but a database that merely has
/// the same name never is.
pub const MARKER_TABLE: &str = "envsync-scratch-marker";

/// Lists what database `db` holds: one row per fact, tagged in the first
/// column. Output read with [`crate::catalog::Catalog::from_rows`].
pub fn catalog_query(db: &str) -> String {
    let h = hex(db);
    format!(
        "{SESSION_START}\
         SELECT 'server', VERSION(), '';\n\
         SELECT 'schema', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
           FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {h};\n\
         SELECT 'table', TABLE_TYPE, TABLE_NAME \
           FROM information_schema.TABLES WHERE TABLE_SCHEMA = {h} ORDER BY TABLE_NAME;\n\
         SELECT 'trigger', EVENT_OBJECT_TABLE, TRIGGER_NAME \
           FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {h} \
           ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER;\n\
         SELECT 'routine', ROUTINE_TYPE, ROUTINE_NAME \
           FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {h} \
           ORDER BY ROUTINE_TYPE, ROUTINE_NAME;\n\
         SELECT 'event', '', EVENT_NAME \
           FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {h} ORDER BY EVENT_NAME;\n"
    )
}

/// Creates the empty scratch database, first dropping the leftovers of an
/// earlier run (only databases carrying the marker table are passed here).
/// The scratch gets the target's default character set and collation, so
/// tables and routines created without explicit ones match the target's.
pub fn prepare_scratch(
    scratch: &str,
    leftovers: &[&str],
    charset: Option<(&str, &str)>,
) -> Result<String, String> {
    let mut s = String::from(SESSION_START);
    for db in leftovers {
        s.push_str(&format!("DROP DATABASE IF EXISTS {};\n", ident(db)));
    }
    s.push_str(&format!("CREATE DATABASE {}", ident(scratch)));
    if let Some((cs, coll)) = charset {
        s.push_str(&format!(
            " CHARACTER SET {} COLLATE {}",
            word(cs)?,
            word(coll)?
        ));
    }
    s.push_str(";\n");
    s.push_str(&create_marker(scratch));
    Ok(s)
}

/// The marker table in `db`.
pub fn create_marker(db: &str) -> String {
    format!(
        "CREATE TABLE {} (note varchar(200)) COMMENT 'envsync: a scratch database of a restore; \
         safe to drop';\n",
        qualified(db, MARKER_TABLE)
    )
}

/// Creates `db` with the given defaults if it does not exist.
pub fn create_database(db: &str, charset: (&str, &str)) -> Result<String, String> {
    Ok(format!(
        "{SESSION_START}CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {};\n",
        ident(db),
        word(charset.0)?,
        word(charset.1)?
    ))
}

/// Drops `db` (foreign keys from elsewhere into it do not stop the drop).
pub fn drop_database(db: &str) -> String {
    format!(
        "{SESSION_START}SET SESSION foreign_key_checks = 0;\nDROP DATABASE IF EXISTS {};\n",
        ident(db)
    )
}

/// `DELIMITER` string for a script holding `bodies`: `$$envsync$$`, or with
/// a number, so that it occurs in none of them.
pub fn delimiter_for<'a>(bodies: impl IntoIterator<Item = &'a [u8]> + Clone) -> String {
    let mut n = 0;
    loop {
        let d = if n == 0 {
            "$$envsync$$".to_string()
        } else {
            format!("$$envsync{n}$$")
        };
        if !bodies
            .clone()
            .into_iter()
            .any(|b| b.windows(d.len()).any(|w| w == d.as_bytes()))
        {
            return d;
        }
        n += 1;
    }
}

/// `CREATE …` as `CREATE OR REPLACE …` (views everywhere; routines, events
/// on MariaDB), so the object is replaced in one step.
pub fn or_replace(create: &[u8]) -> Result<Vec<u8>, String> {
    let rest = strip_create(create)?;
    let mut out = b"CREATE OR REPLACE ".to_vec();
    out.extend_from_slice(rest);
    Ok(out)
}

/// Checks that a definition is a `CREATE` statement; returns what follows
/// `CREATE `.
pub fn strip_create(create: &[u8]) -> Result<&[u8], String> {
    let start = create
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(create.len());
    let text = &create[start..];
    if text.len() > 7 && text[..7].eq_ignore_ascii_case(b"CREATE ") {
        Ok(&text[7..])
    } else {
        Err(format!(
            "the definition does not start with CREATE: {:?}",
            String::from_utf8_lossy(&text[..text.len().min(60)])
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_backticks() {
        assert_eq!(ident("shop"), "`shop`");
        assert_eq!(ident("we`ird"), "`we``ird`");
        assert_eq!(ident("a-b c"), "`a-b c`");
        assert_eq!(qualified("d", "t`"), "`d`.`t```");
    }

    #[test]
    fn hex_literals() {
        assert_eq!(hex("shop"), "X'73686f70'");
        assert_eq!(hex(""), "X''");
        assert_eq!(hex("é'"), "X'c3a927'");
    }

    #[test]
    fn words_refuse_quotes() {
        assert_eq!(word("utf8mb4_general_ci").unwrap(), "'utf8mb4_general_ci'");
        assert_eq!(
            word("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION").unwrap(),
            "'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'"
        );
        assert_eq!(word("+02:00").unwrap(), "'+02:00'");
        assert_eq!(word("Europe/Berlin").unwrap(), "'Europe/Berlin'");
        assert_eq!(word("").unwrap(), "''");
        assert!(word("x'; DROP").is_err());
        assert!(word("a\\b").is_err());
    }

    #[test]
    fn catalog_query_compares_hex() {
        let q = catalog_query("shop");
        assert!(q.contains("TABLE_SCHEMA = X'73686f70'"));
        assert!(!q.contains("'shop'"));
    }

    #[test]
    fn scratch_preparation() {
        let s = prepare_scratch(
            "shop-envsync-restore",
            &["shop-envsync-restore", "shop-envsync-old"],
            Some(("utf8mb4", "utf8mb4_unicode_ci")),
        )
        .unwrap();
        assert!(s.contains("DROP DATABASE IF EXISTS `shop-envsync-restore`;\n"));
        assert!(s.contains("DROP DATABASE IF EXISTS `shop-envsync-old`;\n"));
        assert!(s.contains(
            "CREATE DATABASE `shop-envsync-restore` CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_unicode_ci';\n"
        ));
        assert!(s.contains("CREATE TABLE `shop-envsync-restore`.`envsync-scratch-marker`"));
        let plain = prepare_scratch("x", &[], None).unwrap();
        assert!(plain.contains("CREATE DATABASE `x`;\n"));
        assert!(prepare_scratch("x", &[], Some(("a'b", "c"))).is_err());
    }

    #[test]
    fn delimiters_avoid_bodies() {
        let a: &[u8] = b"BEGIN SELECT 1; END";
        assert_eq!(delimiter_for([a]), "$$envsync$$");
        let b: &[u8] = b"SELECT '$$envsync$$'";
        assert_eq!(delimiter_for([a, b]), "$$envsync1$$");
    }

    #[test]
    fn or_replace_rewrites_create() {
        assert_eq!(
            or_replace(b"CREATE DEFINER=`root`@`%` VIEW `v` AS select 1").unwrap(),
            b"CREATE OR REPLACE DEFINER=`root`@`%` VIEW `v` AS select 1"
        );
        assert!(or_replace(b"ALTER VIEW v").is_err());
        assert_eq!(
            strip_create(b"  create PROCEDURE p()").unwrap(),
            b"PROCEDURE p()"
        );
    }

    #[test]
    fn trailers_close_comments_and_delimiters() {
        for t in [LOAD_TRAILER, TRANSFORM_TRAILER] {
            assert!(t.starts_with("\n-- */\nDELIMITER ;\n;\n"), "{t}");
        }
        assert!(LOAD_TRAILER.contains(TRUNCATED_MARK));
        assert!(TRANSFORM_TRAILER.ends_with("COMMIT;\n"));
    }
}
