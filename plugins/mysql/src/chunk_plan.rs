//! The main stream of a chunked MySQL artifact: a text plan naming its
//! chunks in load order (docs/decisions/0022). Pure logic, unit-tested
//! natively.
//!
//! ```text
//! ENVSYNC-MYSQL-CHUNKED 1
//! id <unique id of this backup>
//! schema <chunk>            mariadb-dump --no-data --skip-triggers (tables, views, routines, events)
//! data <chunk> <table> [<rows>]
//!                           extended INSERT lines of one table (table empty
//!                           in a sanitised backup: see `DataChunk::table`),
//!                           and how many rows they hold (plans from before
//!                           the count, and sanitised ones, have none)
//! triggers <chunk>          mariadb-dump of the triggers only
//! ```
//!
//! Fields are separated by tabs; a field's `\`, tab and newline are escaped
//! as `\\`, `\t`, `\n` (table names may hold any character).

use envsync_plugin_sdk::fields::{escape, unescape};

/// First line of every plan.
pub const MAGIC: &[u8] = b"ENVSYNC-MYSQL-CHUNKED 1\n";
/// The names backups give the schema and triggers chunks.
pub const SCHEMA_CHUNK: &str = "schema";
pub const TRIGGERS_CHUNK: &str = "triggers";

/// The rows of one table, or a part of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    pub chunk: String,
    /// The table's name (unquoted), for messages. In a sanitised backup,
    /// as the host reported its row chunk (`chunks.rows-in`); empty in
    /// sanitised plans written before the host told it. Either way the
    /// chunk's INSERTs name their table.
    pub table: String,
    /// The rows its INSERTs hold, counted as the backup cut them, so a
    /// restore can report rows as chunks load; None when not counted.
    pub rows: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub schema: String,
    pub data: Vec<DataChunk>,
    pub triggers: String,
}

impl Plan {
    /// Every chunk the plan names, in load order.
    pub fn chunks(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.schema)
            .chain(self.data.iter().map(|d| &d.chunk))
            .chain(std::iter::once(&self.triggers))
    }

    pub fn render(&self) -> String {
        let mut out = String::from_utf8(MAGIC.to_vec()).expect("ascii");
        let mut line = |fields: &[&str]| {
            let escaped: Vec<String> = fields.iter().map(|f| escape(f)).collect();
            out.push_str(&escaped.join("\t"));
            out.push('\n');
        };
        line(&["id", &self.id]);
        line(&["schema", &self.schema]);
        for d in &self.data {
            match d.rows {
                Some(rows) => line(&["data", &d.chunk, &d.table, &rows.to_string()]),
                None => line(&["data", &d.chunk, &d.table]),
            }
        }
        line(&["triggers", &self.triggers]);
        out
    }

    pub fn parse(text: &[u8]) -> Result<Plan, String> {
        let body = text
            .strip_prefix(MAGIC)
            .ok_or("the artifact does not start with the chunked plan's first line")?;
        let body = std::str::from_utf8(body).map_err(|_| "the plan is not UTF-8 text")?;
        let mut plan = Plan::default();
        for (number, line) in body.lines().enumerate() {
            let fields: Vec<String> = line.split('\t').map(unescape).collect();
            match (fields[0].as_str(), fields.len()) {
                ("id", 2) => plan.id = fields[1].clone(),
                ("schema", 2) => plan.schema = fields[1].clone(),
                ("triggers", 2) => plan.triggers = fields[1].clone(),
                ("data", 3 | 4) => plan.data.push(DataChunk {
                    chunk: fields[1].clone(),
                    table: fields[2].clone(),
                    rows: match fields.get(3) {
                        Some(rows) => Some(rows.parse().map_err(|_| {
                            format!("line {} of the plan has a bad row count", number + 2)
                        })?),
                        None => None,
                    },
                }),
                _ => {
                    return Err(format!(
                        "line {} of the plan is not understood: {line:?}",
                        number + 2
                    ));
                }
            }
        }
        if plan.id.is_empty() || plan.schema.is_empty() || plan.triggers.is_empty() {
            return Err("the plan is incomplete (no id, schema or triggers line)".into());
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_with_any_table_name() {
        let plan = Plan {
            id: "1700000000.123 42".into(),
            schema: "schema".into(),
            data: vec![
                DataChunk {
                    chunk: "data-00001".into(),
                    table: "odd\tname\\\n`x".into(),
                    rows: Some(7),
                },
                DataChunk {
                    chunk: "data-00002".into(),
                    table: "orders".into(),
                    rows: Some(0),
                },
            ],
            triggers: "triggers".into(),
        };
        let text = plan.render();
        assert!(text.as_bytes().starts_with(MAGIC));
        assert_eq!(Plan::parse(text.as_bytes()).unwrap(), plan);
        let order: Vec<&String> = plan.chunks().collect();
        assert_eq!(order, ["schema", "data-00001", "data-00002", "triggers"]);
    }

    #[test]
    fn a_sanitised_plans_row_chunks_have_no_table() {
        let plan = Plan {
            id: "sanitised 1700000000.123 shop".into(),
            schema: SCHEMA_CHUNK.into(),
            data: vec![DataChunk {
                chunk: "rows-00001".into(),
                table: String::new(),
                rows: None,
            }],
            triggers: TRIGGERS_CHUNK.into(),
        };
        let text = plan.render();
        assert!(text.contains("\ndata\trows-00001\t\n"), "{text}");
        assert_eq!(Plan::parse(text.as_bytes()).unwrap(), plan);
    }

    #[test]
    fn damaged_plans_are_refused() {
        assert!(Plan::parse(b"-- MariaDB dump").is_err());
        assert!(Plan::parse(b"ENVSYNC-MYSQL-CHUNKED 1\nid\tx\nbogus\n").is_err());
        assert!(Plan::parse(b"ENVSYNC-MYSQL-CHUNKED 1\nid\tx\nschema\ts\n").is_err());
        assert!(Plan::parse(b"ENVSYNC-MYSQL-CHUNKED 1\nid\tx\nschema\ts\ndata\td\n").is_err());
        let bad_rows =
            b"ENVSYNC-MYSQL-CHUNKED 1\nid\tx\nschema\ts\ndata\td\tt\tmany\ntriggers\tt\n";
        assert!(Plan::parse(bad_rows).is_err());
    }

    #[test]
    fn plans_from_before_the_row_counts_still_parse() {
        let old = b"ENVSYNC-MYSQL-CHUNKED 1\nid\tx\nschema\ts\ndata\td\tt\ntriggers\tt\n";
        let plan = Plan::parse(old).unwrap();
        assert_eq!(plan.data[0].rows, None);
        assert_eq!(plan.render().as_bytes(), old);
    }
}
