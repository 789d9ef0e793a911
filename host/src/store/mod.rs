//! Where artifacts live. `ObjectStore` is the small set of object operations
//! a backend provides (a local folder, S3); `catalog` builds the
//! artifact rules on top of it once for every backend: key layout, manifest,
//! checksum, pointer.

pub mod catalog;
pub mod checksum;
pub mod codec;
pub mod layout;
pub mod local;
pub mod manifest;
pub mod pipeline;
pub mod s3;
pub mod s3_client;
pub(crate) mod s3_errors;
pub mod upload_journal;

use crate::failure::{Failure, Kind};
use anyhow::Result;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// One stored object as listed.
#[derive(Clone, Debug)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// A streaming upload. Dropping it without `finish` aborts it: nothing
/// becomes visible under the key.
#[async_trait::async_trait]
pub trait ObjectWriter: AsyncWrite + Send + Unpin {
    /// Makes the object durable and visible under its key. Never overwrites
    /// an existing object.
    async fn finish(self: Box<Self>) -> Result<()>;
    /// Abandons the upload and removes whatever it stored so far.
    async fn abort(self: Box<Self>);
}

/// A backend holding objects under `/`-separated keys.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// The store's location, for messages.
    fn location(&self) -> String;
    /// Starts a streaming upload to `key`.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Streams the object at `key`.
    async fn open(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>>;
    /// The first `len` bytes of the object at `key` (all of it when it is
    /// shorter). A backend with ranged reads overrides this, so a look at
    /// an artifact's start does not begin (and abandon) its whole download.
    async fn open_prefix(&self, key: &str, len: u64) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        use tokio::io::AsyncReadExt;
        Ok(Box::new(self.open(key).await?.take(len)))
    }
    /// Reads a small object whole; None when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a small object atomically, replacing any previous one (only
    /// the "latest" pointer is ever replaced).
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Writes a small object atomically that must not exist yet: fails,
    /// changing nothing, when something is already stored under `key`.
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Lists finished objects whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Deletes the object at `key` (no error if it is already gone).
    async fn delete(&self, key: &str) -> Result<()>;
}

/// The failure of a write that would have replaced an existing object.
pub fn already_exists(location: &str, key: &str) -> anyhow::Error {
    Failure::new(
        Kind::StepFailed,
        format!(
            "refusing to overwrite {key} in {location}: an object is already stored there \
             (envsync never replaces an artifact or a manifest); nothing was changed"
        ),
    )
    .into()
}

/// How to reach stores that need settings (S3 today).
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub s3: s3::S3Options,
    /// The step's state folder, where S3 uploads are journaled until they
    /// complete (none: not journaled).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Opens the store at `location`: a folder path, a `file://` URL or an
/// `s3://bucket/prefix` URL.
pub async fn open(location: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    if let Some(path) = location.strip_prefix("file://") {
        return Ok(Arc::new(local::LocalStore::new(path)?));
    }
    if location.starts_with("s3://") {
        let journal = upload_journal::UploadJournal::in_state_dir(options.state_dir.as_deref());
        return Ok(Arc::new(
            s3::S3Store::connect(location, &options.s3, journal).await?,
        ));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(Failure::new(
            Kind::Usage,
            format!("store {location:?}: {scheme}:// stores are not supported by this build; use a folder path or file:// URL"),
        )
        .into());
    }
    Ok(Arc::new(local::LocalStore::new(location)?))
}

/// True when `a` and `b` name the same place or one lies inside the other
/// (for S3: the same bucket), so a backup to `a` would write into `b`.
pub fn overlaps(a: &str, b: &str) -> bool {
    fn place(location: &str) -> String {
        if let Some(rest) = location.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or_default();
            return format!("s3://{bucket}/");
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        let path = std::path::Path::new(path);
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        format!("{}/", path.display().to_string().trim_end_matches('/'))
    }
    let (a, b) = (place(a), place(b));
    a.starts_with(&b) || b.starts_with(&a)
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn stores_overlap_by_bucket_or_folder() {
        assert!(overlaps("s3://prod/db", "s3://prod"));
        assert!(overlaps("s3://prod", "s3://prod/other"));
        assert!(!overlaps("s3://prod", "s3://production"));
        assert!(overlaps("/srv/backups/prod", "file:///srv/backups"));
        assert!(!overlaps("/srv/backups/staging", "/srv/backups/prod"));
        assert!(!overlaps("s3://x", "/x"));
    }
}
