//! SHA-256 and size of artifact bytes as they stream, in both directions.

use super::ObjectWriter;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Size and digest of a finished stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    pub size: u64,
    pub sha256: String,
}

/// An upload that hashes what passes through it.
pub struct ArtifactWriter {
    key: String,
    inner: Box<dyn ObjectWriter>,
    hasher: Sha256,
    size: u64,
}

impl ArtifactWriter {
    pub fn new(key: String, inner: Box<dyn ObjectWriter>) -> Self {
        ArtifactWriter {
            key,
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Completes the upload; returns what was written.
    pub async fn finish(self) -> Result<Digested> {
        let digested = Digested {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        };
        self.inner.finish().await?;
        Ok(digested)
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

/// A download that hashes what passes through it and can prove it matched
/// the manifest.
pub struct ArtifactReader {
    key: String,
    inner: Box<dyn AsyncRead + Send + Unpin>,
    hasher: Sha256,
    size: u64,
    expected: Digested,
    verified: bool,
}

impl ArtifactReader {
    pub fn new(key: String, inner: Box<dyn AsyncRead + Send + Unpin>, expected: Digested) -> Self {
        ArtifactReader {
            key,
            inner,
            hasher: Sha256::new(),
            size: 0,
            expected,
            verified: false,
        }
    }

    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Reads whatever is left and compares size and SHA-256 with the
    /// manifest. The message says what to do.
    pub async fn verify(&mut self) -> Result<(), String> {
        if self.verified {
            return Ok(());
        }
        let mut rest = vec![0u8; 1 << 20];
        loop {
            match self.read(&mut rest).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "reading {} failed while verifying it: {e}",
                        self.key
                    ));
                }
            }
        }
        let actual = hex::encode(self.hasher.clone().finalize());
        if self.size != self.expected.size {
            return Err(format!(
                "artifact {} has {} bytes but its manifest says {}: it is truncated or was changed; \
                 restore another backup (--artifact) or make a new one",
                self.key, self.size, self.expected.size
            ));
        }
        if actual != self.expected.sha256 {
            return Err(format!(
                "artifact {} does not match its manifest checksum (sha256 {actual}, manifest says {}): \
                 it is damaged; restore another backup (--artifact) or make a new one",
                self.key, self.expected.sha256
            ));
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
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        self.hasher.update(fresh);
        self.size += fresh.len() as u64;
        Poll::Ready(Ok(()))
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
