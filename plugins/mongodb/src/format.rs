//! The artifact: NDJSON, written by `js/dump.js` and read by `js/load.js`.
//!
//! ```text
//! {"$envsync":"mongodb","format":1,"database":"shop"}
//! {"$envsync":"collection","name":"users","options":{…},"indexes":[…]}   canonical EJSON
//! {"_id":{"$oid":"…"},"email":"…"}                                       one document per line
//! {"$envsync":"end-collection","name":"users","documents":1}
//! {"$envsync":"end","collections":1,"documents":1}
//! ```
//!
//! Marker lines start with `{"$envsync":`; a stored document starts with
//! its `_id`, so no document line can. The counts let a loader tell a
//! whole artifact from a cut one.
//!
//! A sanitised backup is format 2, written by the host from three calls
//! (`sanitised_backup`): its documents come back from the sanitiser, which
//! may reorder their keys and drop documents, and no single call sees a
//! whole collection, so documents come in counted runs instead of between a
//! header and an end line:
//!
//! ```text
//! {"$envsync":"mongodb","format":2,"database":"shop"}
//! {"$envsync":"collection","name":"users","options":{…},"indexes":[…]}
//! {"$envsync":"documents","name":"users","documents":2}                  the next 2 lines
//! {"_id":{"$oid":"…"},"email":"…"}
//! {"_id":{"$oid":"…"},"email":"…"}
//! {"$envsync":"end","format":2}
//! ```

use envsync_plugin_sdk::sniff;
use serde_json::Value;

pub const FORMAT: &str = "mongodb-ejson";
pub const MAGIC: &[u8] = br#"{"$envsync":"mongodb","format":1,"#;
/// The start of a sanitised (format 2) artifact.
pub const MAGIC_V2: &[u8] = br#"{"$envsync":"mongodb","format":2,"#;
const MARKER: &str = r#"{"$envsync":"#;
/// mongodump's `--archive` files start with this magic number.
const MONGODUMP_ARCHIVE: &[u8] = &[0x6d, 0xe2, 0x99, 0x81];

/// Whether `head` (the artifact's first bytes) is in this plugin's format;
/// else what it is.
pub fn check_head(head: &[u8]) -> Result<(), String> {
    if head.starts_with(MAGIC) || head.starts_with(MAGIC_V2) {
        return Ok(());
    }
    let what = if head.starts_with(MONGODUMP_ARCHIVE) {
        "a mongodump --archive file".to_string()
    } else if head.is_empty() {
        "an empty file".to_string()
    } else {
        sniff::identify(head).map_or_else(
            || "not an envsync MongoDB artifact".to_string(),
            |f| f.description().to_string(),
        )
    };
    Err(format!(
        "this is {what}, not an envsync MongoDB artifact (format {FORMAT}, starting with {}); \
         restore it with the plugin that made it",
        String::from_utf8_lossy(MAGIC)
    ))
}

/// One line of the artifact, as a sanitising copy needs to see it.
#[derive(Debug, PartialEq)]
pub enum Line {
    Collection(String),
    EndCollection(String),
    End,
    Other,
    Document,
}

pub fn classify(line: &str) -> Result<Line, String> {
    if !line.starts_with(MARKER) {
        return Ok(Line::Document);
    }
    let v: Value =
        serde_json::from_str(line).map_err(|e| format!("a marker that is not JSON: {e}"))?;
    let name = || v["name"].as_str().unwrap_or_default().to_string();
    Ok(match v["$envsync"].as_str() {
        Some("collection") => Line::Collection(name()),
        Some("end-collection") => Line::EndCollection(name()),
        Some("end") => Line::End,
        _ => Line::Other,
    })
}

pub fn end_collection_line(name: &str, documents: u64) -> String {
    serde_json::json!({"$envsync": "end-collection", "name": name, "documents": documents})
        .to_string()
}

pub fn end_line(collections: u64, documents: u64) -> String {
    serde_json::json!({"$envsync": "end", "collections": collections, "documents": documents})
        .to_string()
}

/// Format 2's first line.
pub fn head_line_v2(database: &str) -> String {
    serde_json::json!({"$envsync": "mongodb", "format": 2, "database": database}).to_string()
}

/// Format 2's last line.
pub fn end_line_v2() -> String {
    serde_json::json!({"$envsync": "end", "format": 2}).to_string()
}

/// The line before a run of `documents` document lines of `name`.
pub fn documents_line(name: &str, documents: usize) -> String {
    serde_json::json!({"$envsync": "documents", "name": name, "documents": documents}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_recognised_or_named() {
        assert!(check_head(br#"{"$envsync":"mongodb","format":1,"database":"x"}"#).is_ok());
        let e = check_head(&[0x6d, 0xe2, 0x99, 0x81, 0, 0]).unwrap_err();
        assert!(e.contains("mongodump"), "{e}");
        let e = check_head(b"\x1f\x8b\x08\x00").unwrap_err();
        assert!(e.contains("gzip"), "{e}");
        let e = check_head(b"PGDMP\x01\x0e").unwrap_err();
        assert!(e.contains("not an envsync MongoDB artifact"), "{e}");
        assert!(check_head(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(classify(r#"{"_id":1}"#).unwrap(), Line::Document);
        assert_eq!(
            classify(r#"{"$envsync":"collection","name":"u","options":{}}"#).unwrap(),
            Line::Collection("u".into())
        );
        assert_eq!(
            classify(&end_collection_line("u", 3)).unwrap(),
            Line::EndCollection("u".into())
        );
        assert_eq!(classify(&end_line(1, 3)).unwrap(), Line::End);
        assert!(classify(r#"{"$envsync":"#).is_err());
    }
}
