//! envsync engine plugin for Elasticsearch and OpenSearch, in logical mode:
//! it talks to the clusters only through the host's `http` capability (the
//! host adds the URL and credentials and refuses other hosts).
//!
//! - backup: every matching index's settings, mappings and aliases, then its
//!   documents, as NDJSON (`format`), read page by page (`dump`) and
//!   sanitised in the stream when the step sanitises;
//! - restore: each index loaded under a new name with `_bulk`, every item
//!   checked, counted, then made live with one atomic alias swap (`load`,
//!   `aliases`); on failure the new indices are deleted;
//! - copy: the same from a source cluster straight into the target;
//! - schema: indices and their mapping fields, for `sanitise check`.
//!
//! With `mode=snapshot`, backup and restore use repository snapshots
//! instead (`snapshot_mode`).

mod aliases;
mod backoff;
mod bulk;
mod client;
mod config;
mod dump;
mod format;
mod load;
mod sanitised_backup;
mod schema;
mod settings;
mod snapshot;
mod snapshot_mode;
mod snapshot_restore;

use client::Cluster;
use dump::{Consumer, Options};
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{
    ArtifactFormat, ByteSink, ByteSource, CredentialEnv, Engine, Error, Operation, Piece,
    PluginInfo, Reader, StructurePart, TableInfo, Writer, info,
};
use format::{IndexHeader, Line};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// How many leading bytes `check` looks at.
const HEAD_SIZE: u32 = 256;

fn artifact_format() -> ArtifactFormat {
    ArtifactFormat {
        name: format::FORMAT.into(),
        extension: "ndjson".into(),
        // JSON text: the host compresses it.
        compressed: false,
        head_size: HEAD_SIZE,
    }
}

fn options() -> Result<Options, Error> {
    Ok(Options {
        page_size: config::page_size()?,
        keep_alive: config::keep_alive()?,
    })
}

/// Writes what is read to the artifact.
struct ArtifactWriter<'a> {
    out: Writer<'a>,
    line: String,
    /// Documents written (after the sanitiser, which may drop some).
    written: u64,
}

fn io_error(e: std::io::Error) -> Error {
    Error::Io(format!("writing the artifact: {e}"))
}

impl Consumer for ArtifactWriter<'_> {
    fn begin_index(&mut self, header: &IndexHeader) -> Result<(), Error> {
        self.out
            .write_all(format::header_line(header).as_bytes())
            .map_err(io_error)
    }

    fn documents(&mut self, index: &str, docs: Vec<(String, String)>) -> Result<(), Error> {
        self.line.clear();
        for (id, source) in &docs {
            format::doc_line(&mut self.line, index, id, source);
        }
        self.written += docs.len() as u64;
        self.out.write_all(self.line.as_bytes()).map_err(io_error)
    }

    fn end_index(&mut self, _index: &str, _documents: u64) -> Result<(), Error> {
        Ok(())
    }
}

fn backup(artifact: &ByteSink) -> Result<(), Error> {
    if snapshot_mode::enabled()? {
        return snapshot_mode::backup(artifact);
    }
    let patterns = config::read_patterns("source")?;
    let options = options()?;
    let mut writer = ArtifactWriter {
        out: Writer::new(artifact),
        line: String::new(),
        written: 0,
    };
    writer
        .out
        .write_all(format!("{}\n", format::MAGIC).as_bytes())
        .map_err(io_error)?;
    let (indices, _read) = dump::dump(
        Cluster::SOURCE,
        &patterns,
        &options,
        sanitising::plan(),
        &mut writer,
    )?;
    let written = writer.written;
    writer
        .out
        .write_all(format::end_line(indices, written).as_bytes())
        .map_err(io_error)?;
    writer.out.finish()?;
    info(format!(
        "backed up {indices} index(es), {written} documents"
    ));
    Ok(())
}

fn restore(artifact: &ByteSource) -> Result<(), Error> {
    if snapshot_mode::enabled()? {
        return snapshot_mode::restore(artifact);
    }
    let mut loader = load::Loader::new(Cluster::TARGET);
    match read_artifact(artifact, &mut loader) {
        Ok(()) => loader.finish(|| artifact.verify()),
        Err(e) => {
            loader.clean_up();
            Err(e.context("target left unchanged"))
        }
    }
    .map_err(|e| {
        if e.message().starts_with("target left unchanged") {
            e
        } else {
            e.context("restore failed, target left unchanged")
        }
    })
}

/// Feeds the artifact's indices and documents into `loader`. Version 1
/// (plain backups): each index's header, then its documents. Version 2
/// (sanitised backups, written by the host): every header first, then the
/// documents grouped by index, naming it by its base name.
fn read_artifact(artifact: &ByteSource, loader: &mut load::Loader) -> Result<(), Error> {
    let mut reader = Reader::new(artifact);
    let mut buf = String::new();
    let mut n = 0u64;
    let mut version = 0u8;
    // (the name documents give, the index being loaded, documents so far)
    let mut current: Option<(String, String, u64)> = None;
    // Version 2: headers not begun yet, by the name documents give.
    let mut pending: BTreeMap<String, IndexHeader> = BTreeMap::new();
    let (mut indices, mut documents) = (0u64, 0u64);
    let mut end = None;
    loop {
        buf.clear();
        let read = reader
            .read_line(&mut buf)
            .map_err(|e| Error::Io(format!("reading the artifact: {e}")))?;
        if read == 0 {
            break;
        }
        n += 1;
        let line = buf
            .strip_suffix('\n')
            .ok_or_else(|| Error::BadArtifact(format!("the artifact is cut off in line {n}")))?;
        if end.is_some() {
            return Err(Error::BadArtifact(format!(
                "line {n} comes after the end line"
            )));
        }
        let parsed = format::parse_line(line, n).map_err(Error::BadArtifact)?;
        match parsed {
            Line::Magic(v) if n == 1 => version = v,
            _ if n == 1 => {
                return Err(Error::BadArtifact(
                    "the artifact does not start with its format line".into(),
                ));
            }
            Line::Magic(_) => {
                return Err(Error::BadArtifact(format!(
                    "line {n}: a second format line"
                )));
            }
            Line::Index(header) if version == 1 => {
                if let Some((_, name, count)) = current.take() {
                    loader.end_index(&name, count)?;
                }
                loader.begin_index(&header)?;
                indices += 1;
                current = Some((header.name.clone(), header.name, 0));
            }
            Line::Index(header) => {
                if documents > 0 {
                    return Err(Error::BadArtifact(format!(
                        "line {n}: an index header after documents"
                    )));
                }
                let key = aliases::base_name(&header.name).to_string();
                if pending.insert(key.clone(), header).is_some() {
                    return Err(Error::BadArtifact(format!(
                        "line {n}: a second header for index {key}"
                    )));
                }
                indices += 1;
            }
            Line::Doc { index, id, source } => {
                if version == 2 && current.as_ref().is_none_or(|(key, _, _)| *key != index) {
                    if let Some((_, name, count)) = current.take() {
                        loader.end_index(&name, count)?;
                    }
                    let Some(header) = pending.remove(&index) else {
                        return Err(Error::BadArtifact(format!(
                            "line {n}: a document of index {index}, which has no header or whose \
                             documents came earlier"
                        )));
                    };
                    loader.begin_index(&header)?;
                    current = Some((index.clone(), header.name, 0));
                }
                let Some((key, _, count)) = current.as_mut() else {
                    return Err(Error::BadArtifact(format!(
                        "line {n}: a document before any index"
                    )));
                };
                if *key != index {
                    return Err(Error::BadArtifact(format!(
                        "line {n}: a document of index {index} among those of {key}"
                    )));
                }
                loader.add(&id, &source.to_string())?;
                *count += 1;
                documents += 1;
            }
            Line::End { indices, documents } => end = Some((indices, documents)),
        }
    }
    if let Some((_, name, count)) = current.take() {
        loader.end_index(&name, count)?;
    }
    // Version 2: indices the sanitiser kept no document of.
    for header in std::mem::take(&mut pending).into_values() {
        loader.begin_index(&header)?;
        loader.end_index(&header.name, 0)?;
    }
    match end {
        None => Err(Error::BadArtifact(
            "the artifact has no end line: it is cut off".into(),
        )),
        Some((i, _)) if i != indices => Err(Error::BadArtifact(format!(
            "the artifact's end line counts {i} index(es), but it holds {indices}"
        ))),
        Some((_, Some(d))) if d != documents => Err(Error::BadArtifact(format!(
            "the artifact's end line counts {d} documents, but it holds {documents}"
        ))),
        Some((_, None)) if version == 1 => Err(Error::BadArtifact(
            "the artifact's end line does not count its documents".into(),
        )),
        Some(_) => {
            info(format!("read {indices} index(es), {documents} documents"));
            Ok(())
        }
    }
}

/// Snapshot mode copies index files, which a sanitiser cannot rewrite.
fn no_snapshot_sanitising() -> Result<(), Error> {
    if snapshot_mode::enabled()? {
        return Err(snapshot_mode::cannot_sanitise());
    }
    Ok(())
}

fn copy() -> Result<(), Error> {
    if snapshot_mode::enabled()? {
        return Err(Error::InvalidParam(
            "mode=snapshot is for backup and restore; copy streams documents (mode=logical)".into(),
        ));
    }
    let patterns = config::read_patterns("source")?;
    envsync_plugin_sdk::connection("target")?;
    let options = options()?;
    let mut loader = load::Loader::new(Cluster::TARGET);
    match dump::dump(
        Cluster::SOURCE,
        &patterns,
        &options,
        sanitising::plan(),
        &mut loader,
    ) {
        Ok(_) => loader.finish(|| Ok(())),
        Err(e) => {
            loader.clean_up();
            Err(e)
        }
    }
    .map_err(|e| e.context("copy failed, target left unchanged"))
}

struct Search;

impl Engine for Search {
    fn describe() -> PluginInfo {
        PluginInfo {
            metrics_engine: None,
            name: "elasticsearch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Elasticsearch and OpenSearch over HTTP: NDJSON backups (settings, mappings, \
                          aliases, documents), restores and copies into new indices made live by \
                          one atomic alias swap; or repository snapshots (mode=snapshot)"
                    .into(),
            operations: vec![Operation::Backup, Operation::Restore, Operation::Copy],
            programs: vec![],
            artifact: artifact_format(),
            // Sanitised backups: format version 2, written by the host
            // (`sanitised_backup`).
            sanitised_artifact: Some(artifact_format()),
            credentials: CredentialEnv {
                host: None,
                port: None,
                user: None,
                password: None,
                passthrough: vec![],
            },
            params: config::infos(),
        }
    }

    fn check(head: Vec<u8>) -> Result<(), Error> {
        if snapshot::is_manifest(&head) {
            return Ok(());
        }
        format::check_head(&head).map_err(Error::BadArtifact)
    }

    fn backup(artifact: &ByteSink) -> Result<(), Error> {
        backup(artifact)
    }

    fn restore(artifact: &ByteSource) -> Result<(), Error> {
        restore(artifact)
    }

    fn backup_structure(part: StructurePart, artifact: &ByteSink) -> Result<(), Error> {
        no_snapshot_sanitising()?;
        sanitised_backup::structure(part, artifact)
    }

    fn backup_rows() -> Result<(), Error> {
        no_snapshot_sanitising()?;
        sanitised_backup::rows()
    }

    fn encode(piece: Piece) -> Result<Vec<u8>, Error> {
        sanitised_backup::encode(piece)
    }

    fn transform(_script: &ByteSource) -> Result<(), Error> {
        Err(Error::Other(
            "the elasticsearch plugin has no transform".into(),
        ))
    }

    fn copy() -> Result<(), Error> {
        copy()
    }

    fn schema() -> Result<Vec<TableInfo>, Error> {
        // The schema only serves sanitising, which snapshot mode cannot do.
        no_snapshot_sanitising()?;
        schema::schema()
    }
}

envsync_plugin_sdk::export_engine!(Search);
