//! Sanitised backups (contract 0.2): the host writes the artifact, in the
//! format's version 2 (`format::MAGIC_V2`).
//!
//! - `structure`: before the rows, the format line and every index's header
//!   (settings, mappings, aliases: metadata reads are all the host answers
//!   here); after them, the end line counting the indices.
//! - `rows`: every index's documents, page by page, handed to the host
//!   (`sanitising::write_documents`) with their `_id` inside, under the
//!   index's base name (the name `schema` lists and sanitiser rules use).
//! - `encode`: a document line for each document the sanitiser kept.

use crate::aliases::base_name;
use crate::client::Cluster;
use crate::dump::{self, Consumer};
use crate::format::{self, IndexHeader};
use crate::{config, options};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{ByteSink, Error, Piece, StructurePart, info, write_all};
use std::collections::BTreeSet;

/// The headers before the documents, or the end line after them.
pub fn structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
    let patterns = config::read_patterns("source")?;
    let headers = dump::resolve(Cluster::SOURCE, &patterns)?;
    let mut bases = BTreeSet::new();
    if let Some(twice) = headers
        .iter()
        .map(|h| base_name(&h.name))
        .find(|b| !bases.insert(*b))
    {
        return Err(Error::InvalidParam(format!(
            "two indices of {} are restored copies of {twice}; a sanitised backup names \
             documents by that name, so it needs one index per name: narrow the pattern",
            patterns.join(",")
        )));
    }
    let text = match part {
        StructurePart::BeforeRows => {
            let mut text = format!("{}\n", format::MAGIC_V2);
            for header in &headers {
                text.push_str(&format::header_line(header));
            }
            text
        }
        StructurePart::AfterRows => format::end_line_v2(headers.len() as u64),
    };
    write_all(artifact, text.as_bytes())
}

/// Every document, through the host's `write-documents`.
pub fn rows() -> Result<(), Error> {
    let patterns = config::read_patterns("source")?;
    let (indices, read) = dump::dump(Cluster::SOURCE, &patterns, &options()?, None, &mut ToHost)?;
    info(format!(
        "handed {read} documents of {indices} index(es) to the host"
    ));
    Ok(())
}

/// Pages go to the host under the index's base name, `_id` inside.
struct ToHost;

impl Consumer for ToHost {
    fn begin_index(&mut self, _header: &IndexHeader) -> Result<(), Error> {
        Ok(())
    }

    fn documents(&mut self, index: &str, docs: Vec<(String, String)>) -> Result<(), Error> {
        let texts = docs
            .iter()
            .map(|(id, source)| dump::with_id(id, source))
            .collect::<Result<Vec<_>, _>>()?;
        sanitising::write_documents(base_name(index), &texts)
            .map_err(|e| e.context(format!("sanitising index {index}")))?;
        Ok(())
    }

    fn end_index(&mut self, _index: &str, _documents: u64) -> Result<(), Error> {
        Ok(())
    }
}

/// Document lines for what the sanitiser kept.
pub fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
    let Piece::Documents(d) = piece else {
        return Err(Error::Other(
            "search artifacts hold documents, not table rows".into(),
        ));
    };
    let mut out = String::new();
    for doc in &d.documents {
        let (id, source) = dump::split_id(&d.index, doc)?;
        format::doc_line(&mut out, &d.index, &id, &source);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envsync_plugin_sdk::IndexDocuments;

    #[test]
    fn kept_documents_become_lines_of_their_index() {
        let piece = Piece::Documents(IndexDocuments {
            index: "customers".into(),
            documents: vec![r#"{"_id":"7","email":"x@example.invalid"}"#.into()],
        });
        let text = String::from_utf8(encode(piece).unwrap()).unwrap();
        assert_eq!(
            format::parse_line(text.trim_end(), 2),
            Ok(format::Line::Doc {
                index: "customers".into(),
                id: "7".into(),
                source: serde_json::json!({"email": "x@example.invalid"}),
            })
        );
    }
}
