//! schema: the tables and columns of the source database, from
//! information_schema, for `sanitise check`.

use crate::batch::{Row, text};
use crate::programs::Client;
use crate::sql::{SESSION_START, hex};
use envsync_plugin_sdk::{ColumnInfo, TableInfo};
use envsync_plugin_sdk::{Error, connection};

/// One row per column of the base tables of `db` (system-versioned ones
/// included; views and sequences are not tables with rows to sanitise):
/// table, column, type, nullable, unique (under a primary key or a unique
/// index, alone or with others).
pub fn query(db: &str) -> String {
    let h = hex(db);
    format!(
        "{SESSION_START}\
         SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, \
           EXISTS (SELECT 1 FROM information_schema.STATISTICS s \
             WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME \
             AND s.COLUMN_NAME = c.COLUMN_NAME AND s.NON_UNIQUE = 0) \
         FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
           ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
         WHERE c.TABLE_SCHEMA = {h} AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
         ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION;\n"
    )
}

pub fn schema() -> Result<Vec<TableInfo>, Error> {
    let source = connection("source")?;
    let client = Client::detect()?;
    let rows = client.query("source", &source, None, &query(&source.database))?;
    tables(&rows).map_err(|e| {
        Error::Other(format!(
            "reading the tables of {:?} on {}: {e}",
            source.database, source.instance
        ))
    })
}

/// Tables from the rows of [`query`].
pub fn tables(rows: &[Row]) -> Result<Vec<TableInfo>, String> {
    let mut out: Vec<TableInfo> = Vec::new();
    for row in rows {
        let [table, column, data_type, nullable, unique] = row.as_slice() else {
            return Err(format!("expected 5 columns, got {}", row.len()));
        };
        let table = text(table);
        let column = ColumnInfo {
            name: text(column),
            data_type: text(data_type),
            nullable: text(nullable) == "YES",
            unique: text(unique) == "1",
        };
        match out.last_mut() {
            Some(t) if t.name == table => t.columns.push(column),
            _ => out.push(TableInfo {
                name: table,
                columns: vec![column],
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::parse;

    #[test]
    fn reads_tables_and_columns() {
        let rows = parse(
            b"c\tid\tint(11)\tNO\t1\nc\temail\tvarchar(100)\tYES\t1\nc\tnote\ttext\tYES\t0\n\
              we`ird\tx\\ty\tvarchar(3)\tYES\t0\n",
        );
        let t = tables(&rows).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "c");
        let cols: Vec<_> = t[0]
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable, c.unique))
            .collect();
        assert_eq!(
            cols,
            [
                ("id", "int(11)", false, true),
                ("email", "varchar(100)", true, true),
                ("note", "text", true, false)
            ]
        );
        assert_eq!(t[1].name, "we`ird");
        assert_eq!(t[1].columns[0].name, "x\ty");
        assert!(tables(&parse(b"a\tb\n")).is_err());
        assert!(query("shop").contains("X'73686f70'"));
    }
}
