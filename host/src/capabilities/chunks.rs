//! `envsync:plugin/chunks`: the named chunks of a chunked artifact
//! (docs/decisions/0019). A backup creates them (each its own object, encoded
//! and checksummed like the main stream); a restore lists and opens them.

use super::HostResult;
use super::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::chunks::{ChunkInfo, Host};
use crate::runtime::sandbox::StepState;
use crate::store::catalog::Catalog;
use crate::store::checksum::ArtifactWriter;
use crate::store::codec::{Codec, Identities};
use crate::store::manifest::{Chunk, Manifest};
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
}

impl ChunkUploads {
    pub fn new(catalog: Catalog, artifact_key: String, codec: Codec) -> Self {
        ChunkUploads {
            catalog,
            artifact_key,
            codec,
            created: Vec::new(),
            stored: Arc::default(),
        }
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
        if let Err(e) = crate::store::layout::check_chunk_name(&name) {
            return Ok(Err(WitError::InvalidParam(e)));
        }
        if uploads.created.contains(&name) {
            return Ok(Err(WitError::InvalidParam(format!(
                "chunk {name:?} was already created in this backup"
            ))));
        }
        if uploads.created.len() >= MAX_CHUNKS {
            return Ok(Err(WitError::Denied(format!(
                "an artifact may have at most {MAX_CHUNKS} chunks"
            ))));
        }
        let writer = match uploads
            .catalog
            .begin_chunk(&uploads.artifact_key, &name, &uploads.codec)
            .await
        {
            Ok(writer) => writer,
            Err(e) => return Ok(Err(WitError::Io(format!("{e:#}")))),
        };
        uploads.created.push(name.clone());
        let label = format!("chunk {name} of {}", uploads.artifact_key);
        let chunk = ChunkWriter {
            name,
            writer: Some(writer),
            stored: uploads.stored.clone(),
        };
        let sink = ByteSink::new(label, SinkKind::Chunk(Box::new(chunk)));
        Ok(Ok(self.table.push(sink)?))
    }

    async fn contents(&mut self) -> HostResult<Vec<ChunkInfo>> {
        let ChunkAccess::Restore(reads) = &self.chunks else {
            return Ok(Err(WitError::Denied(
                "chunks can be listed only during a restore".into(),
            )));
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
        let label = format!("chunk {name} of {}", reads.manifest.key);
        let source = ByteSource::new(label, SourceKind::Artifact(reader));
        Ok(Ok(self.table.push(source)?))
    }
}
