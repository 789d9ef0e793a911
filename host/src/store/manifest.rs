//! The manifest stored beside each artifact.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What was dumped, by what, and how to check it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub plugin: String,
    pub plugin_version: String,
    /// The plugin's artifact format name, e.g. `postgres-custom`.
    pub format: String,
    /// Host-side compression applied on top of the format: `none`, `zstd`, `gzip`.
    pub compression: String,
    /// Client-side encryption of the stored bytes: `age`, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The public keys it is encrypted to (which identity a restore needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub source: Source,
    pub envsync_version: String,
    /// The chunks of a chunked artifact (docs/decisions/0019), in the order
    /// the backup created them; empty for a single-stream artifact. Each is
    /// one object under [`crate::store::layout::chunk_key`], encoded like
    /// the main stream, with its own size and checksum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

impl Manifest {
    /// The backup's stored size: the main artifact and every chunk.
    pub fn total_size(&self) -> u64 {
        self.size + self.chunks.iter().map(|c| c.size).sum::<u64>()
    }
}

/// One chunk of a chunked artifact, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Where the dumped database lived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub instance: String,
    pub database: String,
}
