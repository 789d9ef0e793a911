//! Sanitised backups (contract 0.2): the host writes the artifact, in the
//! format's version 2 (`format`), from three calls.
//!
//! - `structure`: the format line before the documents and the end line
//!   after them; both need only the job's parameters, no database access.
//! - `rows`: `js/dump.js` on the source; every collection's header (options,
//!   validator, indexes) and then its documents are handed to the host
//!   (`sanitising::write_documents`) under the collection's name. The header
//!   goes that way too, as one document of its own (`header_document`):
//!   mongosh cannot be limited to metadata the way `pg_dump --schema-only`
//!   can, so the call that reads the header can read documents, and nothing
//!   it produces may reach the artifact without passing the sanitiser.
//! - `encode`: the sanitiser's output as artifact lines: a header document
//!   becomes the collection's header line, other documents runs of document
//!   lines, each run announced with its collection and count.

use crate::format::{self, Line};
use crate::sanitise::{self, Batch};
use crate::shell::{self, Script};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{ByteSink, Error, Piece, StructurePart, connection, info, write_all};
use serde_json::{Map, Value, json};

/// How a collection's header document starts: the marker key first, then
/// the header under a key no sanitiser rule for real fields can name.
const HEADER_START: &str = r#"{"$envsync":"collection","$collection":"#;

/// The format line, or the end line.
pub fn structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    let line = match part {
        StructurePart::BeforeRows => format::head_line_v2(&connection("source")?.database),
        StructurePart::AfterRows => format::end_line_v2(),
    };
    write_all(artifact, format!("{line}\n").as_bytes())
}

/// Every collection's header and documents, through the host.
pub fn rows() -> Result<(), Error> {
    let mut dump = shell::spawn(Script::Dump, "source", false)?;
    let stdout = dump.take_stdout()?;
    let mut to_host = ToHost::default();
    let result = sanitise::for_each_line(&stdout, |line, n| to_host.feed(line, n));
    drop(stdout);
    if let Err(e) = result {
        return Err(dump.abort_upstream(e));
    }
    dump.finish()
        .map_err(|e| e.context("dumping the source database"))?;
    if !to_host.ended {
        return Err(Error::Other(
            "the source dump has no end line: mongosh stopped early".into(),
        ));
    }
    info(format!(
        "handed {} documents of {} collection(s) to the host",
        to_host.documents, to_host.collections
    ));
    Ok(())
}

#[derive(Default)]
struct ToHost {
    collection: Option<String>,
    batch: Batch,
    collections: u64,
    documents: u64,
    ended: bool,
}

impl ToHost {
    fn feed(&mut self, line: &str, n: u64) -> Result<(), Error> {
        let bad = |why: String| Error::Other(format!("the source dump, line {n}: {why}"));
        match format::classify(line).map_err(bad)? {
            Line::Document => {
                if self.collection.is_none() {
                    return Err(bad("a document outside any collection".into()));
                }
                self.documents += 1;
                if self.batch.push(line) {
                    self.flush()?;
                }
            }
            Line::Collection(name) => {
                let header = header_document(line).map_err(bad)?;
                send(&name, &[header])?;
                self.collection = Some(name);
            }
            Line::EndCollection(name) => {
                if self.collection.as_deref() != Some(&name) {
                    return Err(bad(format!(
                        "the end of collection {name} comes unexpected"
                    )));
                }
                self.flush()?;
                self.collection = None;
                self.collections += 1;
            }
            Line::End => self.ended = true,
            // The format line dump.js starts with.
            Line::Other if n == 1 => {}
            Line::Other => return Err(bad("an unknown marker line".into())),
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        match self.batch.take() {
            Some(batch) => send(self.collection.as_deref().unwrap_or_default(), &batch),
            None => Ok(()),
        }
    }
}

fn send(collection: &str, documents: &[String]) -> Result<(), Error> {
    sanitising::write_documents(collection, documents)
        .map(|_| ())
        .map_err(|e| e.context(format!("sanitising collection {collection}")))
}

/// A header line of dump.js (`{"$envsync":"collection","name":…,
/// "options":…,"indexes":…}`) as the document the sanitiser gets.
fn header_document(line: &str) -> Result<String, String> {
    let Value::Object(mut marker) = serde_json::from_str::<Value>(line)
        .map_err(|e| format!("a collection header that is not JSON: {e}"))?
    else {
        return Err("a collection header that is not a JSON object".into());
    };
    marker.remove("$envsync");
    Ok(json!({"$envsync": "collection", "$collection": marker}).to_string())
}

/// Artifact lines for what the sanitiser kept of a collection's documents.
pub fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
    let Piece::Documents(d) = piece else {
        return Err(Error::Other(
            "MongoDB artifacts hold documents, not table rows".into(),
        ));
    };
    let mut out = String::new();
    let mut run: Vec<&str> = Vec::new();
    for doc in &d.documents {
        if doc.starts_with(HEADER_START) {
            push_run(&mut out, &d.index, &mut run);
            out.push_str(&header_line(&d.index, doc).map_err(Error::Other)?);
            out.push('\n');
        } else if doc.starts_with('{') && doc.ends_with('}') && !doc.contains(['\n', '\r']) {
            run.push(doc);
        } else {
            return Err(Error::Other(format!(
                "collection {}: the sanitiser returned a document that is not one JSON object \
                 on one line",
                d.index
            )));
        }
    }
    push_run(&mut out, &d.index, &mut run);
    Ok(out.into_bytes())
}

fn push_run(out: &mut String, collection: &str, run: &mut Vec<&str>) {
    if run.is_empty() {
        return;
    }
    out.push_str(&format::documents_line(collection, run.len()));
    out.push('\n');
    for doc in run.drain(..) {
        out.push_str(doc);
        out.push('\n');
    }
}

/// The header line of `collection` from its header document, checked: it
/// names that collection and holds only options and indexes.
fn header_line(collection: &str, doc: &str) -> Result<String, String> {
    let bad = |why: &str| format!("collection {collection}: a header document {why}");
    let value: Value = serde_json::from_str(doc).map_err(|_| bad("that is not JSON"))?;
    let Some(Value::Object(header)) = value.get("$collection") else {
        return Err(bad("without its header"));
    };
    if value.as_object().map_or(0, Map::len) != 2 {
        return Err(bad("with fields besides the header"));
    }
    if header.get("name").and_then(Value::as_str) != Some(collection) {
        return Err(bad("naming another collection"));
    }
    let options = header.get("options").cloned().unwrap_or_else(|| json!({}));
    let indexes = header.get("indexes").cloned().unwrap_or_else(|| json!([]));
    if !options.is_object() || !indexes.is_array() || header.len() > 3 {
        return Err(bad("that is not a collection's name, options and indexes"));
    }
    Ok(json!({
        "$envsync": "collection",
        "name": collection,
        "options": options,
        "indexes": indexes,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envsync_plugin_sdk::IndexDocuments;

    fn encoded(index: &str, documents: &[&str]) -> Result<String, Error> {
        encode(Piece::Documents(IndexDocuments {
            index: index.into(),
            documents: documents.iter().map(|d| d.to_string()).collect(),
        }))
        .map(|b| String::from_utf8(b).unwrap())
    }

    const HEADER: &str = r#"{"$envsync":"collection","name":"users","options":{"validator":{"age":{"$gte":{"$numberInt":"0"}}}},"indexes":[{"v":{"$numberInt":"2"},"key":{"b":{"$numberInt":"1"},"a":{"$numberInt":"-1"}},"name":"b_1_a_-1"}]}"#;

    #[test]
    fn a_header_round_trips_through_its_document_with_key_order_kept() {
        let doc = header_document(HEADER).unwrap();
        assert!(doc.starts_with(HEADER_START), "{doc}");
        let text = encoded("users", &[&doc, r#"{"_id":1,"email":"x"}"#]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // A compound index's key order is the index: it must survive.
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            r#"{"$envsync":"documents","name":"users","documents":1}"#
        );
        assert_eq!(lines[2], r#"{"_id":1,"email":"x"}"#);
        assert_eq!(
            format::classify(lines[0]),
            Ok(Line::Collection("users".into()))
        );
    }

    #[test]
    fn documents_come_in_counted_runs() {
        let text = encoded("users", &[r#"{"_id":1}"#, r#"{"_id":2}"#]).unwrap();
        assert_eq!(
            text,
            "{\"$envsync\":\"documents\",\"name\":\"users\",\"documents\":2}\n{\"_id\":1}\n{\"_id\":2}\n"
        );
        assert_eq!(encoded("users", &[]).unwrap(), "");
    }

    #[test]
    fn what_a_sanitiser_could_smuggle_is_refused() {
        let header = header_document(HEADER).unwrap();
        // Documents that would break the line format.
        for doc in [
            "{\"_id\":1}\n{\"$envsync\":\"end\",\"format\":2}",
            "[1]",
            "",
            "{\"_id\":1}\r",
        ] {
            assert!(encoded("users", &[doc]).is_err(), "{doc:?}");
        }
        // A header filed under another collection, or carrying more.
        assert!(encoded("orders", &[&header]).is_err());
        let extra = header.replacen(
            r#""$collection":"#,
            r#""$collection":{"name":"users","options":{},"indexes":[],"rows":[1]},"x":"#,
            1,
        );
        assert!(encoded("users", &[&extra]).is_err(), "{extra}");
        let more = format!("{}{}", &header[..header.len() - 1], r#","leak":"x"}"#);
        assert!(encoded("users", &[&more]).is_err(), "{more}");
    }
}
