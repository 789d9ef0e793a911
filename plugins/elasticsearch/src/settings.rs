//! Index settings as a backup keeps them: only what can be given to a
//! create-index request on another cluster.

use serde_json::{Map, Value};

/// Keys under `index` that describe one concrete index (identity, history,
/// placement, state) and are refused or meaningless on create.
const NOT_COPYABLE: &[&str] = &[
    "uuid",
    "creation_date",
    "creation_date_string",
    "version",
    "provided_name",
    "routing",
    "resize",
    "shrink",
    "blocks",
    "history_uuid",
    "verified_before_close",
    "frozen",
    "store",
    "replication",
    "remote_store",
    "segment_replication",
    "downsample",
    "lifecycle",
    "plugins",
];

/// The copyable part of `GET /INDEX/_settings`'s `settings` for one index
/// (nested form, `{"index": {...}}`), as `{"index": {...}}`.
pub fn copyable(settings: &Value) -> Value {
    let mut index = settings
        .get("index")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    index.retain(|k, _| !NOT_COPYABLE.contains(&k.as_str()));
    let mut out = Map::new();
    out.insert("index".into(), Value::Object(index));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_and_state_are_dropped() {
        let live = json!({"index": {
            "creation_date": "1795255310177",
            "number_of_replicas": "1",
            "number_of_shards": "3",
            "provided_name": "t1",
            "replication": {"type": "DOCUMENT"},
            "uuid": "osmem18ea",
            "version": {"created": "137297827"},
            "routing": {"allocation": {"include": {"_tier_preference": "data_content"}}},
            "resize": {"source": {"name": "x"}},
            "blocks": {"write": "true"},
            "analysis": {"analyzer": {"folded": {"type": "custom", "tokenizer": "standard"}}},
            "refresh_interval": "5s",
        }});
        assert_eq!(
            copyable(&live),
            json!({"index": {
                "number_of_replicas": "1",
                "number_of_shards": "3",
                "analysis": {"analyzer": {"folded": {"type": "custom", "tokenizer": "standard"}}},
                "refresh_interval": "5s",
            }})
        );
    }

    #[test]
    fn missing_settings_give_an_empty_index_object() {
        assert_eq!(copyable(&json!({})), json!({"index": {}}));
    }
}
