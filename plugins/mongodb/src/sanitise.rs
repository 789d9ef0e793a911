//! Sanitised copies: the dump passes through the plugin, and the documents
//! of the collections the step's sanitiser wants go through
//! `sanitising.transform-documents` (as canonical Extended JSON, in batches)
//! before they reach the target; the per-collection and total counts are
//! written anew, since a sanitiser may drop documents.

use crate::format::{self, Line};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{ByteSink, ByteSource, Error, Reader, Writer, info, log};
use std::io::{BufRead, Write};

/// Documents per sanitiser call, and at most about this many bytes.
const BATCH: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;

/// Document lines gathered for one sanitiser call.
#[derive(Default)]
pub struct Batch {
    docs: Vec<String>,
    bytes: usize,
}

impl Batch {
    /// Adds `line`; true once the batch is full.
    pub fn push(&mut self, line: &str) -> bool {
        self.bytes += line.len();
        self.docs.push(line.to_string());
        self.docs.len() >= BATCH || self.bytes >= BATCH_BYTES
    }

    /// The lines so far (none when empty), leaving the batch empty.
    pub fn take(&mut self) -> Option<Vec<String>> {
        self.bytes = 0;
        Some(std::mem::take(&mut self.docs)).filter(|d| !d.is_empty())
    }
}

/// `None` when the step does not sanitise; `Some(None)` for every
/// collection, `Some(Some(list))` for those.
pub fn plan() -> Option<Option<Vec<String>>> {
    sanitising::plan().map(|p| p.tables)
}

struct Rewriter<'a> {
    out: Writer<'a>,
    tables: Option<Vec<String>>,
    collection: Option<(String, bool)>,
    batch: Batch,
    kept: u64,
    read: u64,
    collections: u64,
    documents: u64,
}

fn io(e: std::io::Error) -> Error {
    Error::Io(format!("writing to the target's loader: {e}"))
}

impl Rewriter<'_> {
    fn line(&mut self, line: &str) -> Result<(), Error> {
        self.out.write_all(line.as_bytes()).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)
    }

    fn flush(&mut self) -> Result<(), Error> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let (name, sanitise) = self.collection.clone().unwrap_or_default();
        let docs = if sanitise {
            sanitising::transform_documents(&name, &batch)
                .map_err(|e| e.context(format!("sanitising collection {name}")))?
        } else {
            batch
        };
        for doc in &docs {
            if doc.contains('\n') || !doc.starts_with('{') {
                return Err(Error::Other(format!(
                    "collection {name}: the sanitiser returned a document that is not one JSON object \
                     on one line"
                )));
            }
            self.line(doc)?;
        }
        self.kept += docs.len() as u64;
        Ok(())
    }

    fn feed(&mut self, line: &str, n: u64) -> Result<(), Error> {
        let bad = |why: String| Error::Other(format!("the source dump, line {n}: {why}"));
        match format::classify(line).map_err(bad)? {
            Line::Document => {
                if self.collection.is_none() {
                    return Err(bad("a document outside any collection".into()));
                }
                self.read += 1;
                if self.batch.push(line) {
                    self.flush()?;
                }
            }
            Line::Collection(name) => {
                let sanitise = self
                    .tables
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|n| n == &name));
                self.collection = Some((name, sanitise));
                self.kept = 0;
                self.line(line)?;
            }
            Line::EndCollection(name) => {
                self.flush()?;
                self.line(&format::end_collection_line(&name, self.kept))?;
                self.collections += 1;
                self.documents += self.kept;
                self.collection = None;
                log::progress("documents", self.read, None);
            }
            Line::End => {
                self.line(&format::end_line(self.collections, self.documents))?;
            }
            Line::Other => self.line(line)?,
        }
        Ok(())
    }
}

/// Calls `f` with every line of the dump `dump` (without its newline) and
/// its number; a last line without a newline means the dump was cut off.
pub fn for_each_line(
    dump: &ByteSource,
    mut f: impl FnMut(&str, u64) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut reader = Reader::new(dump);
    let mut buf = String::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = reader
            .read_line(&mut buf)
            .map_err(|e| Error::Io(format!("reading the source dump: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        let line = buf
            .strip_suffix('\n')
            .ok_or_else(|| Error::Other(format!("the source dump is cut off in line {n}")))?;
        f(line, n)?;
    }
}

/// Copies the dump from `dump` into `sink` with the documents of `tables`
/// (None: all) sanitised. Does not close `sink`.
pub fn rewrite(
    dump: &ByteSource,
    sink: &ByteSink,
    tables: Option<Vec<String>>,
) -> Result<(), Error> {
    let mut rewriter = Rewriter {
        out: Writer::new(sink),
        tables,
        collection: None,
        batch: Batch::default(),
        kept: 0,
        read: 0,
        collections: 0,
        documents: 0,
    };
    for_each_line(dump, |line, n| rewriter.feed(line, n))?;
    let (read, kept) = (rewriter.read, rewriter.documents);
    rewriter.out.finish()?;
    info(format!(
        "sanitised copy: read {read} documents, kept {kept}"
    ));
    Ok(())
}
