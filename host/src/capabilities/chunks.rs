//! `envsync:plugin/chunks`: the named chunks of a chunked artifact
//! (docs/decisions/0019). A backup creates them (each its own object, encoded
//! and checksummed like the main stream); a restore lists and opens them.

use super::HostResult;
use super::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::progress::Tracker;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::chunks::{ChunkInfo, Host, RowChunk};
use crate::runtime::sandbox::StepState;
use crate::store::catalog::Catalog;
use crate::store::checksum::ArtifactWriter;
use crate::store::codec::{Codec, Identities};
use crate::store::manifest::{Chunk, Manifest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::component::Resource;

/// Most chunks one artifact may have: each is an object and a manifest line.
pub const MAX_CHUNKS: usize = 10_000;

/// What a step grants of this interface.
#[derive(Default)]
pub enum ChunkAccess {
    /// Neither a plain backup nor a restore: every call is refused.
    #[default]
    None,
    Backup(ChunkUploads),
    Restore(Box<ChunkReads>),
}

/// The chunks of the backup being written.
pub struct ChunkUploads {
    catalog: Catalog,
    artifact_key: String,
    codec: Codec,
    /// Every name created, in order, to refuse duplicates.
    created: Vec<String>,
    /// Chunks stored so far, in the order they were finished.
    stored: Arc<Mutex<Vec<Chunk>>>,
    /// The host's own row chunks (a chunked sanitised backup): their table
    /// and rows, for `rows-in`.
    row_chunks: BTreeMap<String, RowChunk>,
    /// The step's progress, which counts every chunk's bytes.
    progress: Option<Tracker>,
}

impl ChunkUploads {
    pub fn new(catalog: Catalog, artifact_key: String, codec: Codec) -> Self {
        ChunkUploads {
            catalog,
            artifact_key,
            codec,
            created: Vec::new(),
            stored: Arc::default(),
            row_chunks: BTreeMap::new(),
            progress: None,
        }
    }

    /// Counts the bytes of every chunk in `progress`.
    pub fn metered(mut self, progress: Tracker) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Starts chunk `name`: checked, unique, within the limit.
    pub async fn create(&mut self, name: &str) -> Result<ByteSink, WitError> {
        crate::store::layout::check_chunk_name(name).map_err(WitError::InvalidParam)?;
        if self.created.iter().any(|c| c == name) {
            return Err(WitError::InvalidParam(format!(
                "chunk {name:?} was already created in this backup"
            )));
        }
        if self.created.len() >= MAX_CHUNKS {
            return Err(WitError::Denied(format!(
                "an artifact may have at most {MAX_CHUNKS} chunks"
            )));
        }
        let writer = self
            .catalog
            .begin_chunk(&self.artifact_key, name, &self.codec)
            .await
            .map_err(|e| WitError::Io(format!("{e:#}")))?;
        self.created.push(name.to_string());
        if let Some(progress) = &self.progress {
            progress.add_chunk(writer.meter());
        }
        let label = format!("chunk {name} of {}", self.artifact_key);
        let chunk = ChunkWriter {
            name: name.to_string(),
            writer: Some(writer),
            stored: self.stored.clone(),
        };
        Ok(ByteSink::new(label, SinkKind::Chunk(Box::new(chunk))))
    }

    /// Records what the host wrote into its row chunk `name`.
    pub fn note_rows(&mut self, name: &str, table: String, rows: u64) {
        self.row_chunks
            .insert(name.to_string(), RowChunk { table, rows });
    }

    /// How many chunks were created whose name starts with `prefix`.
    pub fn created_with(&self, prefix: &str) -> usize {
        self.created
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// The chunks stored so far, in the order they were created.
    pub fn stored_so_far(&self) -> Vec<ChunkInfo> {
        let stored = self.stored.lock().expect("chunks");
        self.created
            .iter()
            .filter_map(|name| stored.iter().find(|c| &c.name == name))
            .map(|c| ChunkInfo {
                name: c.name.clone(),
                stored_size: c.size,
            })
            .collect()
    }

    /// The stored chunks in the order they were created, or which one the
    /// plugin never finished.
    pub fn finish(self) -> Result<Vec<Chunk>, String> {
        let stored = self.stored.lock().expect("chunks").clone();
        let mut out = Vec::with_capacity(self.created.len());
        for name in &self.created {
            match stored.iter().find(|c| &c.name == name) {
                Some(chunk) => out.push(chunk.clone()),
                None => {
                    return Err(format!(
                        "chunk {name:?} was created but never finished (its sink was not closed)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The chunks of the artifact being restored.
pub struct ChunkReads {
    pub catalog: Catalog,
    pub manifest: Manifest,
    pub identities: Arc<Identities>,
}

/// A chunk being written: stored (upload finished) when its sink closes.
pub struct ChunkWriter {
    name: String,
    writer: Option<ArtifactWriter>,
    stored: Arc<Mutex<Vec<Chunk>>>,
}

impl ChunkWriter {
    pub fn writer(&mut self) -> Option<&mut ArtifactWriter> {
        self.writer.as_mut()
    }

    /// Finishes the upload and records the chunk; later calls do nothing.
    pub async fn close(&mut self) -> Result<(), String> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let digest = writer
            .finish()
            .await
            .map_err(|e| format!("storing chunk {}: {e:#}", self.name))?;
        self.stored.lock().expect("chunks").push(Chunk {
            name: self.name.clone(),
            size: digest.size,
            sha256: digest.sha256,
        });
        Ok(())
    }
}

impl Host for StepState {
    async fn create(&mut self, name: String) -> HostResult<Resource<ByteSink>> {
        let ChunkAccess::Backup(uploads) = &mut self.chunks else {
            return Ok(Err(WitError::Denied(
                "chunks can be created only during a backup".into(),
            )));
        };
        match uploads.create(&name).await {
            Ok(sink) => Ok(Ok(self.table.push(sink)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn contents(&mut self) -> HostResult<Vec<ChunkInfo>> {
        let reads = match &self.chunks {
            ChunkAccess::Restore(reads) => reads,
            // A backup lists what it stored so far (a sanitised backup's
            // engine names the host's row chunks this way).
            ChunkAccess::Backup(uploads) => return Ok(Ok(uploads.stored_so_far())),
            ChunkAccess::None => {
                return Ok(Err(WitError::Denied(
                    "chunks can be listed only during a backup or a restore".into(),
                )));
            }
        };
        Ok(Ok(reads
            .manifest
            .chunks
            .iter()
            .map(|c| ChunkInfo {
                name: c.name.clone(),
                stored_size: c.size,
            })
            .collect()))
    }

    async fn rows_in(&mut self, name: String) -> HostResult<Option<RowChunk>> {
        let ChunkAccess::Backup(uploads) = &self.chunks else {
            return Ok(Err(WitError::Denied(
                "a row chunk can be described only during the backup that wrote it".into(),
            )));
        };
        Ok(Ok(uploads.row_chunks.get(&name).cloned()))
    }

    async fn open(&mut self, name: String) -> HostResult<Resource<ByteSource>> {
        let ChunkAccess::Restore(reads) = &self.chunks else {
            return Ok(Err(WitError::Denied(
                "chunks can be opened only during a restore".into(),
            )));
        };
        let reader = match reads
            .catalog
            .open_chunk(&reads.manifest, &name, &reads.identities)
            .await
        {
            Ok(reader) => reader,
            Err(e) => return Ok(Err(WitError::BadArtifact(e))),
        };
        if let Some(progress) = &self.progress {
            progress.add_chunk(reader.meter());
        }
        let label = format!("chunk {name} of {}", reads.manifest.key);
        let source = ByteSource::new(label, SourceKind::Artifact(reader));
        Ok(Ok(self.table.push(source)?))
    }
}
