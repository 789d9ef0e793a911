//! schema: every collection of the source with the fields its documents
//! have (dotted paths of the leaves, found by a scan of every document,
//! since collections have no fixed schema), for `sanitise check` and strict
//! sanitising. A field is unique when a single-field unique index covers it.

use crate::shell::{self, Script};
use envsync_plugin_sdk::{ColumnInfo, Error, TableInfo, read_all};
use serde_json::Value;

pub fn schema() -> Result<Vec<TableInfo>, Error> {
    let mut child = shell::spawn(Script::Schema, "source", false)?;
    let stdout = child.take_stdout()?;
    let out = read_all(&stdout, 64 << 20);
    drop(stdout);
    child.finish()?;
    parse(&out?)
}

fn parse(out: &[u8]) -> Result<Vec<TableInfo>, Error> {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| Error::Other(format!("the schema script printed {line:?}: {e}")))?;
            let columns = v["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| ColumnInfo {
                    name: f["name"].as_str().unwrap_or_default().to_string(),
                    data_type: f["type"].as_str().unwrap_or("unknown").to_string(),
                    nullable: true,
                    unique: f["unique"].as_bool().unwrap_or(false),
                })
                .collect();
            Ok(TableInfo {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                columns,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_and_fields_are_read() {
        let out = br#"{"name":"users","fields":[{"name":"_id","type":"objectid","unique":true},{"name":"address.city","type":"string","unique":false}]}
{"name":"empty","fields":[]}
"#;
        let tables = parse(out).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].name, "users");
        assert_eq!(tables[0].columns[1].name, "address.city");
        assert!(tables[0].columns[0].unique);
        assert!(tables[1].columns.is_empty());
    }
}
