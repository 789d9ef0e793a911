//! Quoting and the SQL text the plugin sends through psql.
//!
//! Names come from operators and may contain any character, so every name is
//! quoted as an identifier or a literal; nothing is interpolated bare. psql
//! does not expand `:var` or backslash commands inside quotes, so quoted text
//! is also safe from psql's own interpretation.

/// `name` as an SQL identifier: wrapped in `"` with `"` doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal. Uses the `E''` form when it contains a
/// backslash, so the result does not depend on `standard_conforming_strings`
/// (the same rule as libpq's `PQescapeLiteral`).
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A libpq connection string naming only `database`. Passing this instead of
/// the bare name keeps a database called e.g. `host=x` from being read as a
/// connection string; host, port and user still come from the environment.
pub fn conninfo(database: &str) -> String {
    format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// `body` in dollar quotes whose tag does not occur in it.
fn dollar_quote(body: &str) -> String {
    let mut tag = "$envsync$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$envsync{n}$");
    }
    format!("{tag}\n{body}\n{tag}")
}

/// Keeps NOTICEs such as "does not exist, skipping" out of psql's stderr, so
/// the stderr tail in an error holds only what went wrong.
const QUIET: &str = "SET client_min_messages TO warning;\n";

/// Clears leftovers of an earlier run and creates the empty scratch database.
/// Each statement runs on its own (CREATE/DROP DATABASE refuse transactions).
/// `old` can only exist after an earlier swap committed but its final drop
/// failed, so it holds nothing anyone still needs.
pub fn prepare_scratch(scratch: &str, old: &str) -> String {
    format!(
        "{QUIET}DROP DATABASE IF EXISTS {s} WITH (FORCE);\n\
         DROP DATABASE IF EXISTS {o} WITH (FORCE);\n\
         CREATE DATABASE {s} TEMPLATE template0;\n",
        s = ident(scratch),
        o = ident(old),
    )
}

/// Ends every other session on `database` and prints how many there were:
/// sessions an interrupted restore left behind (a backend building an
/// index notices its client is gone only when it ends, and holds its locks
/// and a core until then).
pub fn end_sessions_on(database: &str) -> String {
    format!(
        "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
         WHERE datname = {} AND pid <> pg_catalog.pg_backend_pid();\n",
        literal(database)
    )
}

/// Drops `name` if it exists, disconnecting anyone still on it.
pub fn drop_database(name: &str) -> String {
    format!(
        "{QUIET}DROP DATABASE IF EXISTS {} WITH (FORCE);\n",
        ident(name)
    )
}

/// Prints the owner of `database`, or nothing when it does not exist.
pub fn owner_of(database: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = {};\n",
        literal(database)
    )
}

/// Prints `1` when `database` exists.
pub fn exists(database: &str) -> String {
    format!(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {};\n",
        literal(database)
    )
}

/// Prints the oid of `database`, or nothing when it does not exist.
pub fn oid_of(database: &str) -> String {
    format!(
        "SELECT oid FROM pg_catalog.pg_database WHERE datname = {};\n",
        literal(database)
    )
}

/// Gives `database` to `owner`.
pub fn set_owner(database: &str, owner: &str) -> String {
    format!(
        "ALTER DATABASE {} OWNER TO {};\n",
        ident(database),
        ident(owner)
    )
}

/// Seconds the swap waits for terminated sessions to go (polling every 10 ms).
pub const SWAP_WAIT_SECONDS: u32 = 5;

/// The swap: one transaction that disconnects everyone from `target` and
/// `scratch`, renames `target` (if it exists) to `old` and `scratch` to
/// `target`. If any part fails the transaction rolls back and `target` is
/// exactly as before. Every turn of the wait loop terminates whoever is
/// connected (clients reconnect) and the renames follow the moment nobody
/// is: polling is tight (10 ms) because RENAME refuses to run while any other
/// session is connected and PostgreSQL has no way to hold new connections
/// off beforehand. The statistics snapshot is cleared each turn because
/// pg_stat_activity is otherwise frozen for the whole transaction. A
/// connection attempt that lands after the renames waits on the database lock
/// and then fails cleanly ("does not exist"), so no client ever sees a
/// half-swapped state.
pub fn swap(target: &str, scratch: &str, old: &str) -> String {
    let body = format!(
        "DECLARE
  d text := {d};
  s text := {s};
  o text := {o};
  others int;
BEGIN
  FOR i IN 1..{turns} LOOP
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    SELECT count(pg_catalog.pg_terminate_backend(pid)) INTO others
      FROM pg_catalog.pg_stat_activity
      WHERE datname IN (d, s) AND pid <> pg_catalog.pg_backend_pid();
    EXIT WHEN others = 0;
    PERFORM pg_catalog.pg_sleep(0.01);
  END LOOP;
  IF others > 0 THEN
    RAISE EXCEPTION '% other session(s) still connected to % or % after {secs} s', others, d, s;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = d) THEN
    EXECUTE pg_catalog.format('ALTER DATABASE %I RENAME TO %I', d, o);
  END IF;
  EXECUTE pg_catalog.format('ALTER DATABASE %I RENAME TO %I', s, d);
END",
        d = literal(target),
        s = literal(scratch),
        o = literal(old),
        turns = SWAP_WAIT_SECONDS * 100,
        secs = SWAP_WAIT_SECONDS,
    );
    format!("{QUIET}BEGIN;\nDO {};\nCOMMIT;\n", dollar_quote(&body))
}

/// The tables whose rows a chunked backup dumps (as pg_dump would: every
/// ordinary table and partition outside the system schemas and extensions),
/// with their columns (generated ones are computed again on load) and size
/// in blocks, largest first. Fields: name, columns, blocks.
pub const LIST_DATA_TABLES: &str = "\
SELECT format('%I.%I', n.nspname, c.relname),
       coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND a.attgenerated = ''), ''),
       pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence <> 't'
   AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 3 DESC, 1;
";

/// The sequences of the database outside system schemas and extensions,
/// each fully quoted (`"schema"."name"`, quotes doubled) so a pg_dump
/// `--table` pattern matches it literally.
pub const LIST_SEQUENCES: &str = "\
SELECT '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"'
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'S'
   AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1;
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_quotes() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("x-restore"), "\"x-restore\"");
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(literal("app"), "'app'");
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn conninfo_escapes() {
        assert_eq!(conninfo("app"), "dbname='app'");
        assert_eq!(conninfo("host=x 'y'\\"), "dbname='host=x \\'y\\'\\\\'");
    }

    #[test]
    fn dollar_tag_avoids_body() {
        assert_eq!(dollar_quote("x"), "$envsync$\nx\n$envsync$");
        let q = dollar_quote("a $envsync$ b");
        assert!(q.starts_with("$envsync1$\n"));
    }

    #[test]
    fn swap_quotes_every_name() {
        let sql = swap("a'b", "a'b-restore", "a'b-envsync-old");
        assert!(sql.contains("d text := 'a''b';"));
        assert!(sql.contains("s text := 'a''b-restore';"));
        assert!(sql.starts_with("SET client_min_messages TO warning;\nBEGIN;\nDO $envsync$\n"));
        assert!(sql.ends_with("$envsync$;\nCOMMIT;\n"));
    }
}
