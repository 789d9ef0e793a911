//! The local folder store, the embedded default. Uploads go to a hidden
//! partial file that is synced and linked into place only on `finish`.
//! Artifacts and manifests are placed with `link(2)`, which fails when the
//! name exists, so an existing object is never replaced (a rename would
//! replace it silently, and a check before the rename would race).

use super::{ObjectMeta, ObjectStore, ObjectWriter};
use crate::failure::{Failure, Kind};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};

/// Write buffer: large writes keep syscalls few on multi-GB dumps.
const WRITE_BUF: usize = 1 << 20;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.as_os_str().is_empty() {
            return Err(Failure::new(Kind::Usage, "the store path is empty").into());
        }
        Ok(LocalStore { root })
    }

    /// Writes `bytes` to a temporary file and moves it to `key`: replacing
    /// what is there, or (`new`) only when nothing is.
    async fn write_small(&self, key: &str, bytes: &[u8], new: bool) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().context("key has no folder")?.to_path_buf();
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let bytes = bytes.to_vec();
        let result = tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            if new {
                return place_new(&tmp, &path);
            }
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)?;
            Ok(())
        })
        .await?;
        match result {
            // Already says what and where.
            Err(e) if crate::failure::kind_of(&e).is_some() => Err(e),
            other => other.with_context(|| format!("writing {key} in {}", self.root.display())),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            bail!("invalid store key {key:?}");
        }
        Ok(self.root.join(key))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Gives the finished file `from` the name `to` unless `to` exists, then
/// drops the name `from` and syncs the folder.
fn place_new(from: &Path, to: &Path) -> Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(from);
            let dir = to.parent().unwrap_or(Path::new("."));
            let key = to.file_name().unwrap_or_default().to_string_lossy();
            return Err(super::already_exists(&dir.display().to_string(), &key));
        }
        Err(e) => {
            return Err(e).context(
                "linking the finished file into place (the store's file system must support hard links)",
            );
        }
    }
    std::fs::remove_file(from)?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

struct LocalWriter {
    file: Option<BufWriter<tokio::fs::File>>,
    partial: PathBuf,
    dest: PathBuf,
}

impl LocalWriter {
    fn file(&mut self) -> std::io::Result<&mut BufWriter<tokio::fs::File>> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload already finished"))
    }
}

#[async_trait::async_trait]
impl ObjectWriter for LocalWriter {
    async fn finish(mut self: Box<Self>) -> Result<()> {
        let mut file = self.file.take().context("upload already finished")?;
        file.flush().await?;
        let file = file.into_inner();
        file.sync_all()
            .await
            .context("syncing the artifact to disk")?;
        drop(file);
        let (partial, dest) = (self.partial.clone(), self.dest.clone());
        tokio::task::spawn_blocking(move || place_new(&partial, &dest))
            .await?
            .with_context(|| format!("moving the finished artifact to {}", self.dest.display()))?;
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        // Drop removes the partial file.
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not finished: the upload is abandoned, remove its partial file.
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl AsyncWrite for LocalWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.file() {
            Ok(f) => Pin::new(f).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.file() {
            Ok(f) => Pin::new(f).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.file() {
            Ok(f) => Pin::new(f).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(key)?;
        let dir = dest.parent().context("key has no folder")?;
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating store folder {}", dir.display()))?;
        let name = dest
            .file_name()
            .context("key has no name")?
            .to_string_lossy();
        let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUF, file)),
            partial,
            dest,
        }))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Box::new(file))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.write_small(key, bytes, false).await
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.write_small(key, bytes, true).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", path.display())),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await?
    }
}

/// Collects visible files under `dir` whose key starts with `prefix`.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue; // partial uploads and temp files
        }
        let path = entry.path();
        let key = path
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let as_folder = format!("{key}/");
            if as_folder.starts_with(prefix) || prefix.starts_with(&as_folder) {
                walk(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(ObjectMeta {
                key,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn existing_objects_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        store.put_new("i/a.manifest.json", b"first").await.unwrap();
        let refused = store.put_new("i/a.manifest.json", b"second").await;
        let message = format!("{:#}", refused.unwrap_err());
        assert!(message.contains("refusing to overwrite"), "{message}");
        assert_eq!(
            store.get("i/a.manifest.json").await.unwrap().unwrap(),
            b"first"
        );

        // An upload finishing onto an existing artifact.
        store.put_new("i/a.dump", b"original").await.unwrap();
        let mut upload = store.create("i/a.dump").await.unwrap();
        upload.write_all(b"replacement").await.unwrap();
        let refused = upload.finish().await;
        assert!(format!("{:#}", refused.unwrap_err()).contains("refusing to overwrite"));
        assert_eq!(store.get("i/a.dump").await.unwrap().unwrap(), b"original");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("i"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no partial file is left: {names:?}");

        // The pointer is the one object that is replaced.
        store.put("i/latest-a.txt", b"one").await.unwrap();
        store.put("i/latest-a.txt", b"two").await.unwrap();
        assert_eq!(store.get("i/latest-a.txt").await.unwrap().unwrap(), b"two");
    }
}
