//! `schema`: the indices the step reads and their mapping fields, as tables
//! and columns for `sanitise check` (a field's path joined with `.`, its
//! mapping type as the data type).

use crate::aliases::base_name;
use crate::client::Cluster;
use crate::config;
use crate::dump;
use envsync_plugin_sdk::{ColumnInfo, Error, TableInfo};
use serde_json::Value;

pub fn schema() -> Result<Vec<TableInfo>, Error> {
    let patterns = config::read_patterns("source")?;
    let headers = dump::resolve(Cluster::SOURCE, &patterns)?;
    Ok(headers
        .iter()
        .map(|h| TableInfo {
            name: base_name(&h.name).to_string(),
            columns: fields(&h.mappings)
                .into_iter()
                .map(|(name, data_type)| ColumnInfo {
                    name,
                    data_type,
                    nullable: true,
                    unique: false,
                })
                .collect(),
        })
        .collect())
}

/// The leaf fields of a mapping, as (dotted path, type), sorted by path
/// (whether or not serde_json keeps the mapping's own key order: the
/// workspace's wasm build enables `preserve_order` for other plugins).
pub fn fields(mappings: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(mappings.get("properties"), "", &mut out);
    out.sort();
    out
}

fn walk(properties: Option<&Value>, prefix: &str, out: &mut Vec<(String, String)>) {
    let Some(props) = properties.and_then(Value::as_object) else {
        return;
    };
    for (name, field) in props {
        let path = format!("{prefix}{name}");
        match field.get("properties") {
            Some(inner) => walk(Some(inner), &format!("{path}."), out),
            None => {
                let kind = field
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("object");
                out.push((path, kind.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaf_fields_with_dotted_paths() {
        let m = json!({"dynamic": "strict", "properties": {
            "email": {"type": "keyword"},
            "name": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
            "address": {"properties": {"street": {"type": "text"}, "geo": {"properties": {"lat": {"type": "float"}}}}},
            "orders": {"type": "nested", "properties": {"sku": {"type": "keyword"}}},
        }});
        assert_eq!(
            fields(&m),
            [
                ("address.geo.lat".to_string(), "float".to_string()),
                ("address.street".into(), "text".into()),
                ("email".into(), "keyword".into()),
                ("name".into(), "text".into()),
                ("orders.sku".into(), "keyword".into()),
            ]
        );
        assert!(fields(&json!({})).is_empty());
    }
}
