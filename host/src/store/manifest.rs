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
}

/// Where the dumped database lived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub instance: String,
    pub database: String,
}
