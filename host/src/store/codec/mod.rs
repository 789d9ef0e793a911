//! Streaming transforms between a plugin's bytes and the stored bytes:
//! compression (zstd, gzip) and client-side encryption to age recipients.
//!
//! - Backup, [`encode_writer`]: plugin bytes → compress → encrypt → upload.
//! - Restore, [`decode_reader`]: download → decrypt → decompress → plugin.
//!
//! Every layer streams through a small fixed buffer (the compressor's window,
//! one 64 KiB age chunk, a few I/O buffers), so memory does not grow with the
//! artifact. The manifest records [`Codec::compression_manifest_name`] and
//! [`Codec::encryption_manifest_name`]; restore rebuilds the codec with
//! [`Codec::from_manifest`].

use anyhow::Result;

mod compression;
mod decode;
mod encode;
mod encryption;
#[cfg(test)]
mod tests;

pub use compression::{Compression, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, choose_compression};
pub use decode::decode_reader;
pub use encode::{DynWrite, EncodeWriter, encode_writer, encode_writer_over};
pub use encryption::{
    Encryption, Identities, load_identities, parse_recipient, read_recipients_file,
};

/// The transforms between the plugin's bytes and the stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub encryption: Option<Encryption>,
}

impl Codec {
    /// Stored as the plugin wrote it.
    pub fn plain() -> Self {
        Codec {
            compression: Compression::None,
            encryption: None,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// What the codec appends to the plugin's extension in the key:
    /// `.zst`, `.gz`, `.zst.age`, `.gz.age`, `.age` or nothing.
    pub fn extension_suffix(&self) -> String {
        let mut suffix = self.compression.extension_suffix().to_string();
        if self.encryption.is_some() {
            suffix.push_str(".age");
        }
        suffix
    }

    /// The manifest's compression field.
    pub fn compression_manifest_name(&self) -> &'static str {
        self.compression.manifest_name()
    }

    /// The manifest's encryption field; None when not encrypted.
    pub fn encryption_manifest_name(&self) -> Option<&'static str> {
        self.encryption.as_ref().map(Encryption::manifest_name)
    }

    /// Rebuilds the codec a manifest records, for restore. `encryption`
    /// None, `""` or `"none"` means not encrypted.
    pub fn from_manifest(compression: &str, encryption: Option<&str>) -> Result<Self> {
        let encryption = match encryption {
            None | Some("") | Some("none") => None,
            Some(name) => Some(Encryption::from_manifest(name)?),
        };
        Ok(Codec {
            compression: Compression::from_manifest(compression)?,
            encryption,
        })
    }

    fn describe(&self) -> String {
        match (&self.compression, &self.encryption) {
            (Compression::None, None) => "plain".into(),
            (Compression::None, Some(_)) => "age-encrypted".into(),
            (c, None) => format!("{}-compressed", c.manifest_name()),
            (c, Some(_)) => format!("{}-compressed, age-encrypted", c.manifest_name()),
        }
    }
}
