//! schema: the user tables and columns of the source database, for the
//! sanitiser's coverage check. Names may hold any character, so psql prints
//! every name hex-encoded (UTF-8): the output is then `|`-separated hex and
//! `t`/`f`, which nothing in a name can confuse.

use crate::sql;
use envsync_plugin_sdk::bindings::envsync::plugin::types::{ColumnInfo, TableInfo};
use envsync_plugin_sdk::{Command, Error, connection, info};

/// psql output read back: a line per column, generous for big schemas.
const OUTPUT_LIMIT: usize = 64 << 20;

/// Ordinary and partitioned tables outside the system schemas, columns in
/// attnum order; `unique` when the column is in any unique index (unique
/// constraints and primary keys have one).
const QUERY: &str = "SELECT \
  pg_catalog.encode(pg_catalog.convert_to(n.nspname || '.' || c.relname, 'UTF8'), 'hex'), \
  pg_catalog.encode(pg_catalog.convert_to(a.attname, 'UTF8'), 'hex'), \
  pg_catalog.encode(pg_catalog.convert_to(pg_catalog.format_type(a.atttypid, a.atttypmod), 'UTF8'), 'hex'), \
  NOT a.attnotnull, \
  EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
          WHERE i.indrelid = c.oid AND i.indisunique AND a.attnum = ANY (i.indkey)) \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
WHERE c.relkind IN ('r', 'p') \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
  AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
ORDER BY n.nspname, c.relname, a.attnum";

pub fn schema() -> Result<Vec<TableInfo>, Error> {
    let source = connection("source")?;
    info(format!(
        "reading the tables and columns of {:?} on {}",
        source.database, source.instance
    ));
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "|"])
        .arg(format!("--dbname={}", sql::conninfo(&source.database)))
        .args(["-c", QUERY])
        .connection("source")
        .output(None, OUTPUT_LIMIT)?;
    parse(&out).map_err(|e| Error::Other(format!("reading the schema with psql: {e}")))
}

/// Tables from psql's output lines, in order.
pub fn parse(out: &[u8]) -> Result<Vec<TableInfo>, String> {
    let text = std::str::from_utf8(out).map_err(|_| "psql printed non-UTF-8 text")?;
    let mut tables: Vec<TableInfo> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [table, column, data_type, nullable, unique] = fields[..] else {
            return Err(format!("unexpected line {line:?}"));
        };
        let table = unhex(table)?;
        let column = ColumnInfo {
            name: unhex(column)?,
            data_type: unhex(data_type)?,
            nullable: flag(nullable)?,
            unique: flag(unique)?,
        };
        match tables.last_mut() {
            Some(last) if last.name == table => last.columns.push(column),
            _ => tables.push(TableInfo {
                name: table,
                columns: vec![column],
            }),
        }
    }
    Ok(tables)
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "t" => Ok(true),
        "f" => Ok(false),
        _ => Err(format!("expected t or f, got {v:?}")),
    }
}

fn unhex(hex: &str) -> Result<String, String> {
    let bad = || format!("bad hex {hex:?}");
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, String>>()?;
    String::from_utf8(bytes).map_err(|_| format!("{hex:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn parses_tables_in_order() {
        let out = format!(
            "{}|{}|{}|f|t\n{}|{}|{}|t|f\n{}|{}|{}|t|f\n",
            hex("public.users"),
            hex("id"),
            hex("integer"),
            hex("public.users"),
            hex("e|mail\n"),
            hex("character varying(255)"),
            hex("Odd \"Schema\".t.x"),
            hex("ü"),
            hex("jsonb"),
        );
        let tables = parse(out.as_bytes()).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].name, "public.users");
        assert_eq!(tables[0].columns.len(), 2);
        assert!(!tables[0].columns[0].nullable && tables[0].columns[0].unique);
        assert_eq!(tables[0].columns[1].name, "e|mail\n");
        assert_eq!(tables[0].columns[1].data_type, "character varying(255)");
        assert_eq!(tables[1].name, "Odd \"Schema\".t.x");
        assert_eq!(tables[1].columns[0].name, "ü");
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b"zz|00|00|t|f\n").is_err());
        assert!(parse(b"00|00|00|t\n").is_err());
        assert!(parse(b"00|00|00|t|x\n").is_err());
    }
}
