//! SHA-256 and size of the stored bytes as they stream, in both directions.
//! The digest is taken at the store end of the codec chain (after
//! compression and encryption on the way up, before them on the way down),
//! so the manifest checksum covers exactly the bytes in the store.

use super::ObjectWriter;
use super::codec::{self, Codec, EncodeWriter, Identities};
use super::pipeline::{ReadAhead, WriteBehind};
use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Size and digest of a finished stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    pub size: u64,
    pub sha256: String,
}

/// A running SHA-256 shared between a tap inside a codec chain and the
/// artifact that owns the chain.
#[derive(Clone, Default)]
struct Digest(Arc<Mutex<DigestState>>);

#[derive(Default)]
struct DigestState {
    hasher: Sha256,
    size: u64,
    /// The stream below reported its end.
    ended: bool,
}

impl Digest {
    fn update(&self, bytes: &[u8]) {
        let mut state = self.0.lock().expect("digest");
        state.hasher.update(bytes);
        state.size += bytes.len() as u64;
    }

    fn end(&self) {
        self.0.lock().expect("digest").ended = true;
    }

    fn ended(&self) -> bool {
        self.0.lock().expect("digest").ended
    }

    fn snapshot(&self) -> Digested {
        let state = self.0.lock().expect("digest");
        Digested {
            size: state.size,
            sha256: hex::encode(state.hasher.clone().finalize()),
        }
    }
}

/// Counts the stored bytes of an artifact while it streams, for progress
/// displays (a clone of the artifact's digest state, read-only).
#[derive(Clone)]
pub struct Meter(Digest);

impl Meter {
    /// Stored bytes so far.
    pub fn bytes(&self) -> u64 {
        self.0.0.lock().expect("digest").size
    }
}

type SharedObject = Arc<Mutex<Option<Box<dyn ObjectWriter>>>>;

/// The innermost writer of an upload chain: hashes and passes bytes to the
/// store's upload, which stays reachable from the artifact for finish/abort.
struct UploadTap {
    object: SharedObject,
    digest: Digest,
}

impl UploadTap {
    fn poll_object<T>(
        &self,
        f: impl FnOnce(Pin<&mut (dyn ObjectWriter + 'static)>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut slot = self.object.lock().expect("upload");
        match slot.as_mut() {
            Some(object) => f(Pin::new(object.as_mut())),
            None => Poll::Ready(Err(io::Error::other("the upload is already finished"))),
        }
    }
}

impl AsyncWrite for UploadTap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.poll_object(|o| o.poll_write(cx, buf)))?;
        self.digest.update(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_object(|o| o.poll_flush(cx))
    }

    /// Closing the codec chain must not finish the upload: that is the
    /// artifact's decision, after every layer has written its trailer.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_object(|o| o.poll_flush(cx))
    }
}

/// A backup artifact being uploaded: plugin bytes → codec → tap → store.
pub struct ArtifactWriter {
    key: String,
    encoder: WriteBehind<EncodeWriter<UploadTap>>,
    object: SharedObject,
    digest: Digest,
    /// The first plaintext bytes the plugin wrote, up to `head_limit`: what
    /// the engine's `check` is run on when the host cannot decode the
    /// stored artifact (encrypted to recipients only).
    head: Vec<u8>,
    head_limit: usize,
}

impl ArtifactWriter {
    pub fn new(key: String, object: Box<dyn ObjectWriter>, codec: &Codec) -> Result<Self> {
        let object: SharedObject = Arc::new(Mutex::new(Some(object)));
        let digest = Digest::default();
        let tap = UploadTap {
            object: object.clone(),
            digest: digest.clone(),
        };
        let encoder = WriteBehind::new(codec::encode_writer_over(tap, codec)?);
        Ok(ArtifactWriter {
            key,
            encoder,
            object,
            digest,
            head: Vec::new(),
            head_limit: 0,
        })
    }

    /// Keeps the first `limit` plaintext bytes written (see [`Self::head`]).
    pub fn keep_head(&mut self, limit: usize) {
        self.head_limit = limit;
    }

    /// The first plaintext bytes written, up to the `keep_head` limit.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    fn note_head(&mut self, bytes: &[u8]) {
        let room = self.head_limit.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    /// Stored bytes written so far, readable while the upload runs.
    pub fn meter(&self) -> Meter {
        Meter(self.digest.clone())
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes every codec trailer, completes the upload and returns the size
    /// and checksum of the stored bytes.
    pub async fn finish(self) -> Result<Digested> {
        let ArtifactWriter {
            key,
            encoder,
            object,
            digest,
            ..
        } = self;
        let encoder = encoder
            .finish()
            .await
            .with_context(|| format!("writing {key}"))?;
        let tap = encoder
            .finish()
            .await
            .with_context(|| format!("finishing {key}"))?;
        drop(tap);
        let object = object
            .lock()
            .expect("upload")
            .take()
            .context("the upload is already finished")?;
        object.finish().await?;
        Ok(digest.snapshot())
    }

    /// Writes `chunk`, handing the buffer itself to the codec task.
    pub async fn write_owned(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.note_head(&chunk);
        self.encoder.send(chunk).await
    }

    /// Abandons the upload; nothing becomes visible in the store.
    pub async fn abort(self) {
        let object = self.object.lock().expect("upload").take();
        drop(self.encoder);
        if let Some(object) = object {
            object.abort().await;
        }
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.encoder).poll_write(cx, buf))?;
        self.note_head(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.encoder).poll_flush(cx)
    }

    /// A plugin closing its sink only flushes: the host finishes the upload.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.encoder).poll_flush(cx)
    }
}

/// The innermost reader of a download chain: hashes the stored bytes.
struct DownloadTap {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    digest: Digest,
}

impl AsyncRead for DownloadTap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() && buf.remaining() > 0 {
            self.digest.end();
        }
        self.digest.update(fresh);
        Poll::Ready(Ok(()))
    }
}

/// An artifact being restored: store → tap → codec → plugin. `verify`
/// proves the stored bytes matched the manifest.
pub struct ArtifactReader {
    key: String,
    decoded: Box<dyn AsyncRead + Send + Unpin>,
    digest: Digest,
    expected: Digested,
    verified: bool,
}

impl ArtifactReader {
    pub async fn new(
        key: String,
        stored: Box<dyn AsyncRead + Send + Unpin>,
        expected: Digested,
        codec: &Codec,
        identities: &Identities,
    ) -> Result<Self> {
        let digest = Digest::default();
        let tap = DownloadTap {
            inner: stored,
            digest: digest.clone(),
        };
        let decoded = codec::decode_reader(Box::new(tap), codec, identities, &key).await?;
        let decoded = Box::new(ReadAhead::new(decoded));
        Ok(ArtifactReader {
            key,
            decoded,
            digest,
            expected,
            verified: false,
        })
    }

    /// Stored bytes read so far, readable while the download runs.
    pub fn meter(&self) -> Meter {
        Meter(self.digest.clone())
    }

    pub fn verified(&self) -> bool {
        self.verified
    }

    /// When the stored bytes were read to their end and do not match the
    /// manifest: why. Used after a failed restore, to report a damaged
    /// artifact as the cause rather than the loader's confusion about it.
    pub fn damage(&self) -> Option<String> {
        if !self.digest.ended() {
            return None;
        }
        self.mismatch(&self.digest.snapshot())
    }

    fn mismatch(&self, actual: &Digested) -> Option<String> {
        if actual.size != self.expected.size {
            return Some(format!(
                "artifact {} has {} bytes but its manifest says {}: it is truncated or was changed; \
                 restore another backup (--artifact) or make a new one",
                self.key, actual.size, self.expected.size
            ));
        }
        if actual.sha256 != self.expected.sha256 {
            return Some(format!(
                "artifact {} does not match its manifest checksum (sha256 {}, manifest says {}): \
                 it is damaged; restore another backup (--artifact) or make a new one",
                self.key, actual.sha256, self.expected.sha256
            ));
        }
        None
    }

    /// Reads whatever is left and compares size and SHA-256 of the stored
    /// bytes with the manifest. The message says what to do.
    pub async fn verify(&mut self) -> Result<(), String> {
        if self.verified {
            return Ok(());
        }
        let mut rest = vec![0u8; 1 << 20];
        loop {
            match self.decoded.read(&mut rest).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "artifact {} is damaged: reading it failed while verifying it: {e}",
                        self.key
                    ));
                }
            }
        }
        if let Some(problem) = self.mismatch(&self.digest.snapshot()) {
            return Err(problem);
        }
        self.verified = true;
        Ok(())
    }
}

impl AsyncRead for ArtifactReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.decoded).poll_read(cx, buf)
    }
}

/// SHA-256 and size of a whole stream.
pub async fn digest(mut reader: impl AsyncRead + Unpin) -> io::Result<Digested> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digested {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}
