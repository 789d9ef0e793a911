//! The restore direction: download → decrypt → decompress → plugin.

use super::{Codec, Compression, Identities};
use crate::failure::{Failure, Kind};
use anyhow::Result;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, BufReader, ReadBuf};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// Buffer between the store's stream and the decoders.
const READ_BUFFER: usize = 64 * 1024;

/// Builds the reader chain for `codec` over the stored bytes: decrypt, then
/// decompress. Reads the age header right away, so a missing or wrong
/// identity fails here, before the plugin sees a byte. `artifact` (the key)
/// names the artifact in messages. Errors of the inner reader come out
/// unchanged; errors of a layer say which layer and which artifact.
pub async fn decode_reader<R>(
    inner: R,
    codec: &Codec,
    identities: &Identities,
    artifact: &str,
) -> Result<Box<dyn AsyncRead + Send + Unpin>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    if codec.compression == Compression::None && codec.encryption.is_none() {
        return Ok(Box::new(inner));
    }
    let mut reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(Explain {
        inner,
        mode: Mode::Store,
    });
    if codec.encryption.is_some() {
        reader = decrypt(reader, identities, artifact).await?;
    }
    reader = match codec.compression {
        Compression::None => reader,
        Compression::Zstd { .. } => {
            let mut decoder = ZstdDecoder::new(BufReader::with_capacity(READ_BUFFER, reader));
            decoder.multiple_members(true);
            Box::new(Explain {
                inner: decoder,
                mode: Mode::Layer(format!(
                    "artifact {artifact}: its zstd-compressed data is corrupt or truncated"
                )),
            })
        }
        Compression::Gzip { .. } => {
            let mut decoder = GzipDecoder::new(BufReader::with_capacity(READ_BUFFER, reader));
            decoder.multiple_members(true);
            Box::new(Explain {
                inner: decoder,
                mode: Mode::Layer(format!(
                    "artifact {artifact}: its gzip-compressed data is corrupt or truncated"
                )),
            })
        }
    };
    Ok(Box::new(Explain {
        inner: reader,
        mode: Mode::Top,
    }))
}

async fn decrypt(
    stored: Box<dyn AsyncRead + Send + Unpin>,
    identities: &Identities,
    artifact: &str,
) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
    if identities.is_empty() {
        return Err(Failure::new(
            Kind::Usage,
            format!("artifact {artifact} is encrypted; pass --identity FILE with an age identity"),
        )
        .into());
    }
    let input = TokioAsyncReadCompatExt::compat(BufReader::with_capacity(READ_BUFFER, stored));
    let decryptor = match age::Decryptor::new_async_buffered(input).await {
        Ok(decryptor) => decryptor,
        Err(e) => return Err(header_error(e, artifact)),
    };
    if decryptor.is_scrypt() {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "artifact {artifact} is encrypted with a passphrase; envsync-host decrypts only \
                 with age identities (--identity FILE)"
            ),
        )
        .into());
    }
    let keys = identities
        .keys
        .iter()
        .map(|k| k.as_ref() as &dyn age::Identity);
    match decryptor.decrypt_async(keys) {
        Ok(stream) => Ok(Box::new(Explain {
            inner: FuturesAsyncReadCompatExt::compat(stream),
            mode: Mode::Layer(format!(
                "artifact {artifact}: its age-encrypted data is damaged or truncated"
            )),
        })),
        // The artifact cannot be used with what was given: rejected before
        // the target changed (a missing identity is a usage error instead).
        Err(age::DecryptError::NoMatchingKeys) => Err(Failure::new(
            Kind::ArtifactRejected,
            format!(
                "artifact {artifact} is encrypted to other recipients: none of the identities in \
                 {} can decrypt it; pass the right --identity",
                identities.describe_files()
            ),
        )
        .into()),
        Err(e) => Err(header_error(e, artifact)),
    }
}

fn header_error(e: age::DecryptError, artifact: &str) -> anyhow::Error {
    match e {
        age::DecryptError::Io(e) if is_carried(&e) => {
            anyhow::Error::from(uncarry(e)).context(format!("reading artifact {artifact}"))
        }
        age::DecryptError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Failure::new(
            Kind::ArtifactRejected,
            format!("artifact {artifact}: its age header is truncated"),
        )
        .into(),
        e => Failure::new(
            Kind::ArtifactRejected,
            format!(
                "artifact {artifact} is not a readable age file though its manifest says it is \
                 encrypted: {}",
                e.to_string().trim_end()
            ),
        )
        .into(),
    }
}

/// An error on its way up the reader chain that already says what it is:
/// the store's own error (passed on unchanged) or a layer's, explained.
#[derive(Debug)]
enum Carried {
    Store(io::Error),
    Explained(String),
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carried::Store(e) => e.fmt(f),
            Carried::Explained(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Carried {}

fn is_carried(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Carried>())
}

fn uncarry(e: io::Error) -> io::Error {
    if !is_carried(&e) {
        return e;
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<Carried>()) {
        Some(Ok(carried)) => match *carried {
            Carried::Store(original) => original,
            Carried::Explained(message) => io::Error::new(kind, message),
        },
        Some(Err(other)) => io::Error::new(kind, other),
        None => io::Error::from(kind),
    }
}

enum Mode {
    /// Marks the store's errors so the layers above pass them on.
    Store,
    /// Explains this layer's own errors.
    Layer(String),
    /// Unwraps whatever comes up.
    Top,
}

struct Explain<R> {
    inner: R,
    mode: Mode,
}

impl Mode {
    fn explain(&self, e: io::Error) -> io::Error {
        match self {
            Mode::Top => uncarry(e),
            _ if is_carried(&e) => e,
            Mode::Store => io::Error::new(e.kind(), Carried::Store(e)),
            Mode::Layer(what) => {
                let kind = match e.kind() {
                    io::ErrorKind::Other => io::ErrorKind::InvalidData,
                    kind => kind,
                };
                io::Error::new(kind, Carried::Explained(format!("{what}: {e}")))
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Explain<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                // A decoder may hand over bytes together with the error of
                // the reader below it; tokio's contract is that an error
                // reads nothing (the step fails anyway).
                buf.set_filled(before);
                Poll::Ready(Err(this.mode.explain(e)))
            }
        }
    }
}
