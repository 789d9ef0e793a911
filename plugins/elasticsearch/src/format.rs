//! The artifact: NDJSON, one JSON object per line.
//!
//! ```text
//! {"envsync":"search-ndjson","version":1}
//! {"index":{"name":"products-v1","settings":{…},"mappings":{…},"aliases":{"products":{}}}}
//! {"_index":"products-v1","_id":"1","_source":{…}}
//! …
//! {"end":{"indices":2,"documents":10500}}
//! ```
//!
//! The first line marks the format (what `check` looks at); every index's
//! header comes before its documents; the last line counts what was written,
//! so a cut-off artifact is refused before anything goes live.

use serde_json::{Map, Value, json};

/// The format name recorded in manifests.
pub const FORMAT: &str = "search-ndjson";
/// The first line of every artifact.
pub const MAGIC: &str = "{\"envsync\":\"search-ndjson\",\"version\":1}";
/// The first line of a sanitised backup, which the host writes from three
/// calls (contract 0.2): every index header first, then the documents the
/// sanitiser kept, grouped by index and naming it as `schema` does (the
/// base name), then an end line counting only the indices (the documents
/// are counted by the host's manifest instead).
pub const MAGIC_V2: &str = "{\"envsync\":\"search-ndjson\",\"version\":2}";

/// What one index looks like, without its documents.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexHeader {
    pub name: String,
    pub settings: Value,
    pub mappings: Value,
    pub aliases: Value,
}

/// One line of an artifact.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// The format line, with its version (1 or 2).
    Magic(u8),
    Index(IndexHeader),
    Doc {
        index: String,
        id: String,
        source: Value,
    },
    End {
        indices: u64,
        /// None in version 2.
        documents: Option<u64>,
    },
}

/// A header line (with its newline).
pub fn header_line(h: &IndexHeader) -> String {
    let mut s = json!({"index": {
        "name": h.name,
        "settings": h.settings,
        "mappings": h.mappings,
        "aliases": h.aliases,
    }})
    .to_string();
    s.push('\n');
    s
}

/// A document line (with its newline); `source` is the document's JSON text.
pub fn doc_line(out: &mut String, index: &str, id: &str, source: &str) {
    out.push_str("{\"_index\":");
    out.push_str(&Value::from(index).to_string());
    out.push_str(",\"_id\":");
    out.push_str(&Value::from(id).to_string());
    out.push_str(",\"_source\":");
    out.push_str(source.trim());
    out.push_str("}\n");
}

/// The last line (with its newline).
pub fn end_line(indices: u64, documents: u64) -> String {
    format!(
        "{}\n",
        json!({"end": {"indices": indices, "documents": documents}})
    )
}

/// The last line of a version 2 artifact (with its newline).
pub fn end_line_v2(indices: u64) -> String {
    format!("{}\n", json!({"end": {"indices": indices}}))
}

/// Parses one line (without its newline); `n` is its 1-based number, for
/// messages.
pub fn parse_line(line: &str, n: u64) -> Result<Line, String> {
    if line == MAGIC {
        return Ok(Line::Magic(1));
    }
    if line == MAGIC_V2 {
        return Ok(Line::Magic(2));
    }
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("line {n} is not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err(format!("line {n} is not a JSON object"));
    };
    if let Some(Value::Object(h)) = obj.get("index") {
        let name = h
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {n}: index header without a name"))?;
        let field = |k: &str| {
            h.get(k)
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()))
        };
        return Ok(Line::Index(IndexHeader {
            name: name.to_string(),
            settings: field("settings"),
            mappings: field("mappings"),
            aliases: field("aliases"),
        }));
    }
    if let Some(Value::Object(e)) = obj.get("end") {
        let count = |k: &str| e.get(k).and_then(Value::as_u64);
        return match (count("indices"), e.get("documents")) {
            (Some(indices), None) => Ok(Line::End {
                indices,
                documents: None,
            }),
            (Some(indices), Some(d)) if d.is_u64() => Ok(Line::End {
                indices,
                documents: d.as_u64(),
            }),
            _ => Err(format!("line {n}: malformed end line")),
        };
    }
    let index = obj.get("_index").and_then(Value::as_str).map(String::from);
    let id = obj.get("_id").and_then(Value::as_str).map(String::from);
    match (index, id, obj.remove("_source")) {
        (Some(index), Some(id), Some(source)) => Ok(Line::Doc { index, id, source }),
        _ => Err(format!(
            "line {n} is neither an index header nor a document with _index, _id and _source"
        )),
    }
}

/// `check`: the artifact starts with the format's first line.
pub fn check_head(head: &[u8]) -> Result<(), String> {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if first == MAGIC.as_bytes() || first == MAGIC_V2.as_bytes() {
        return Ok(());
    }
    if head.is_empty() {
        return Err("the artifact is empty".into());
    }
    let what =
        envsync_plugin_sdk::sniff::identify(head).map_or("an unknown format", |f| f.description());
    Err(format!(
        "not an envsync search-ndjson artifact (it does not start with {MAGIC}): looks like {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let h = IndexHeader {
            name: "products-v1".into(),
            settings: json!({"index": {"number_of_shards": "1"}}),
            mappings: json!({"properties": {"a": {"type": "keyword"}}}),
            aliases: json!({"products": {}}),
        };
        let line = header_line(&h);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(parse_line(line.trim_end(), 2), Ok(Line::Index(h)));

        let mut doc = String::new();
        doc_line(&mut doc, "p\"1", "id\n7", " {\"a\":\"x\\ny\"} ");
        assert_eq!(doc.matches('\n').count(), 1, "one line: {doc}");
        assert_eq!(
            parse_line(doc.trim_end(), 3),
            Ok(Line::Doc {
                index: "p\"1".into(),
                id: "id\n7".into(),
                source: json!({"a": "x\ny"})
            })
        );
        assert_eq!(
            parse_line(end_line(2, 9).trim_end(), 4),
            Ok(Line::End {
                indices: 2,
                documents: Some(9)
            })
        );
        assert_eq!(
            parse_line(end_line_v2(2).trim_end(), 4),
            Ok(Line::End {
                indices: 2,
                documents: None
            })
        );
        assert_eq!(parse_line(MAGIC, 1), Ok(Line::Magic(1)));
        assert_eq!(parse_line(MAGIC_V2, 1), Ok(Line::Magic(2)));
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(parse_line("{nope", 5).unwrap_err().contains("line 5"));
        assert!(
            parse_line("[1]", 6)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            parse_line("{\"_index\":\"a\"}", 7)
                .unwrap_err()
                .contains("line 7")
        );
    }

    #[test]
    fn check_accepts_only_the_magic_line() {
        assert!(check_head(format!("{MAGIC}\n{{}}").as_bytes()).is_ok());
        assert!(check_head(MAGIC.as_bytes()).is_ok());
        assert!(check_head(b"").unwrap_err().contains("empty"));
        assert!(check_head(b"-- PostgreSQL database dump\n").is_err());
    }
}
