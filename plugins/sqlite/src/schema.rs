//! schema: the user tables of the source database and their columns, for
//! `sanitise check`. Read with the sqlite3 shell (read-only) from
//! `pragma_table_info`, `pragma_index_list` and `pragma_index_info`; every
//! name and type is printed as hex, so the output is `|`-separated fields
//! that no name can break. Parsing is pure logic, unit-tested natively.

use crate::paths::Mode;
use crate::settings::Settings;
use crate::shell;
use envsync_plugin_sdk::Error;
use envsync_plugin_sdk::{ColumnInfo, TableInfo};

/// A schema of thousands of tables still fits easily.
const OUTPUT_LIMIT: usize = 64 * 1024 * 1024;

/// One line per column: `C|table|column|type|notnull|pk`, in table order.
const COLUMNS: &str = "SELECT 'C', hex(m.name), hex(p.name), hex(p.type), p.\"notnull\", p.pk \
     FROM sqlite_master m JOIN pragma_table_info(m.name) p \
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
     ORDER BY m.name, p.cid;";

/// One line per column under a unique index (UNIQUE constraints and
/// non-rowid primary keys have one too): `U|table|column`.
const UNIQUE: &str = "SELECT DISTINCT 'U', hex(m.name), hex(ii.name) \
     FROM sqlite_master m JOIN pragma_index_list(m.name) il \
     JOIN pragma_index_info(il.name) ii \
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
     AND il.\"unique\" AND ii.name IS NOT NULL;";

pub fn schema() -> Result<Vec<TableInfo>, Error> {
    let settings = Settings::read()?;
    let source = settings.path("source")?;
    let out = shell::sqlite3(&settings, &source, Mode::ReadOnly)
        .args(["-list", "-separator", "|", "-newline", "\n"])
        .args([COLUMNS, UNIQUE])
        .output(None, OUTPUT_LIMIT)?;
    parse(&String::from_utf8_lossy(&out))
        .map_err(|e| Error::Other(format!("reading the schema of {source}: {e}")))
}

/// Tables from the shell's output (see [`COLUMNS`] and [`UNIQUE`]).
pub fn parse(out: &str) -> Result<Vec<TableInfo>, String> {
    let mut tables: Vec<TableInfo> = Vec::new();
    let mut unique = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim_end_matches('\r').split('|').collect();
        match fields.as_slice() {
            ["C", table, column, data_type, notnull, pk] => {
                let table = unhex(table)?;
                let pk = *pk != "0";
                let column = ColumnInfo {
                    name: unhex(column)?,
                    data_type: unhex(data_type)?,
                    // Primary key columns are reported as not nullable (SQLite
                    // lets old-style rowid tables store NULL there, but a
                    // sanitiser must not count on it).
                    nullable: *notnull == "0" && !pk,
                    // Part of the primary key: unique (alone or with others).
                    unique: pk,
                };
                match tables.last_mut() {
                    Some(t) if t.name == table => t.columns.push(column),
                    _ => tables.push(TableInfo {
                        name: table,
                        columns: vec![column],
                    }),
                }
            }
            ["U", table, column] => unique.push((unhex(table)?, unhex(column)?)),
            _ => return Err(format!("unexpected line from sqlite3: {line:?}")),
        }
    }
    for (table, column) in unique {
        let column = tables
            .iter_mut()
            .filter(|t| t.name == table)
            .flat_map(|t| t.columns.iter_mut())
            .find(|c| c.name == column);
        if let Some(c) = column {
            c.unique = true;
        }
    }
    Ok(tables)
}

/// Text from the hex digits `hex()` prints.
fn unhex(hex: &str) -> Result<String, String> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {hex:?}"));
    }
    let bytes = digits
        .chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("not hex: {hex:?}"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_columns_and_unique_indexes() {
        let out = "C|61|6964|494E5445474552|0|1\n\
                   C|61|656D61696C|54455854|1|0\n\
                   C|61|78||0|0\n\
                   C|627C63|6B|54455854|1|1\n\
                   C|627C63|76|424C4F42|0|0\n\
                   U|61|656D61696C\n\
                   U|627C63|76\n";
        let tables = parse(out).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].name, "a");
        let a: Vec<_> = tables[0]
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable, c.unique))
            .collect();
        assert_eq!(
            a,
            [
                ("id", "INTEGER", false, true),
                ("email", "TEXT", false, true),
                ("x", "", true, false)
            ]
        );
        assert_eq!(tables[1].name, "b|c");
        assert!(tables[1].columns.iter().all(|c| c.unique));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("C|6|1").is_err());
        assert!(parse("X|61").is_err());
    }
}
