//! The backup direction: plugin bytes → compress → encrypt → upload.

use super::{Codec, Compression, Encryption};
use crate::failure::{Failure, Kind};
use anyhow::{Context as _, Result};
use async_compression::Level;
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::compat::{FuturesAsyncWriteCompatExt, TokioAsyncWriteCompatExt};

/// A boxed writer, the default inner writer of [`EncodeWriter`].
pub type DynWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The writer chain of a backup: what is written is compressed, then
/// encrypted, then written to the inner writer.
///
/// `shutdown` (and [`EncodeWriter::finish`]) end every layer — the zstd or
/// gzip trailer, age's final chunk — and flush the inner writer but never
/// shut it down: `finish` hands it back so the caller can complete (or
/// abort) the upload itself.
pub struct EncodeWriter<W = DynWrite> {
    top: DynWrite,
    bottom: Bottom<W>,
    finished: bool,
    what: String,
}

/// Builds the writer chain for `codec` over `inner`. Recipients are checked
/// here, before any byte is written.
pub fn encode_writer(inner: DynWrite, codec: &Codec) -> Result<EncodeWriter> {
    encode_writer_over(inner, codec)
}

/// [`encode_writer`] over any writer type, which `finish` gives back as is.
pub fn encode_writer_over<W>(inner: W, codec: &Codec) -> Result<EncodeWriter<W>>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let bottom = Bottom::new(inner);
    let mut chain: DynWrite = Box::new(bottom.clone());
    if let Some(encryption) = &codec.encryption {
        chain = Box::new(age_writer(bottom.clone(), encryption)?);
    }
    let top: DynWrite = match codec.compression {
        Compression::None => chain,
        Compression::Zstd { level } => Box::new(ZstdEncoder::with_quality_and_params(
            chain,
            Level::Precise(level),
            // As the zstd tool does: a damaged frame fails to decode
            // instead of decoding to wrong bytes.
            &[async_compression::zstd::CParameter::checksum_flag(true)],
        )),
        Compression::Gzip { level } => Box::new(GzipEncoder::with_quality(
            chain,
            Level::Precise(i32::try_from(level).unwrap_or(i32::MAX)),
        )),
    };
    Ok(EncodeWriter {
        top,
        bottom,
        finished: false,
        what: codec.describe(),
    })
}

/// age's stream writer over `bottom`. Its header is written by an async fn;
/// the bottom captures it in memory (a few hundred bytes) so this stays
/// synchronous, and sends it before anything else.
fn age_writer<W>(
    bottom: Bottom<W>,
    encryption: &Encryption,
) -> Result<impl AsyncWrite + Send + Unpin + 'static>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let recipients = encryption.parsed_recipients()?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| {
                Failure::new(
                    Kind::Usage,
                    format!("cannot encrypt to the given age recipients: {e}"),
                )
            })?;
    bottom.lock().capturing = true;
    let header =
        encryptor.wrap_async_output(TokioAsyncWriteCompatExt::compat_write(bottom.clone()));
    let polled = pin!(header).poll(&mut Context::from_waker(Waker::noop()));
    bottom.lock().capturing = false;
    match polled {
        Poll::Ready(Ok(stream)) => Ok(FuturesAsyncWriteCompatExt::compat_write(stream)),
        Poll::Ready(Err(e)) => Err(anyhow::Error::from(e).context("writing the age header")),
        Poll::Pending => Err(anyhow::anyhow!(
            "writing the age header did not complete in memory"
        )),
    }
}

impl<W> EncodeWriter<W>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    /// Ends every layer, writes all trailing bytes to the inner writer,
    /// flushes it, and returns it (not shut down).
    pub async fn finish(mut self) -> Result<W> {
        self.shutdown()
            .await
            .with_context(|| format!("finishing the {} artifact stream", self.what))?;
        let mut state = self.bottom.lock();
        debug_assert!(state.pending.is_empty());
        state
            .inner
            .take()
            .ok_or_else(|| anyhow::anyhow!("the artifact writer was already taken"))
    }
}

impl<W> AsyncWrite for EncodeWriter<W>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.finished {
            return Poll::Ready(Err(io::Error::other(
                "write to an artifact stream that was already finished",
            )));
        }
        Pin::new(&mut self.top).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.finished {
            return Pin::new(&mut self.bottom).poll_flush(cx);
        }
        Pin::new(&mut self.top).poll_flush(cx)
    }

    /// Ends every layer; the inner writer is flushed, not shut down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.finished {
            ready!(Pin::new(&mut self.top).poll_shutdown(cx))?;
            self.finished = true;
        }
        Pin::new(&mut self.bottom).poll_flush(cx)
    }
}

/// The end of the writer chain: forwards to the caller's writer, whose
/// shutdown it turns into a flush, and which it can hand back even though
/// age's writer owns its output for good (hence the shared slot; it is
/// never contended).
struct Bottom<W> {
    state: Arc<Mutex<BottomState<W>>>,
}

struct BottomState<W> {
    inner: Option<W>,
    /// Writes go to `pending` instead of `inner` (the age header).
    capturing: bool,
    pending: Vec<u8>,
    sent: usize,
}

impl<W> Bottom<W> {
    fn new(inner: W) -> Self {
        Bottom {
            state: Arc::new(Mutex::new(BottomState {
                inner: Some(inner),
                capturing: false,
                pending: Vec::new(),
                sent: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BottomState<W>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<W> Clone for Bottom<W> {
    fn clone(&self) -> Self {
        Bottom {
            state: Arc::clone(&self.state),
        }
    }
}

impl<W: AsyncWrite + Unpin> BottomState<W> {
    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("the artifact writer was already handed back"))
    }

    /// Sends what was captured before anything else.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let BottomState {
                inner,
                pending,
                sent,
                ..
            } = self;
            let inner = inner
                .as_mut()
                .ok_or_else(|| io::Error::other("the artifact writer was already handed back"))?;
            let n = ready!(Pin::new(inner).poll_write(cx, &pending[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Bottom<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        if state.capturing {
            state.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(state.poll_drain(cx))?;
        Pin::new(state.inner()?).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        if state.capturing {
            return Poll::Ready(Ok(()));
        }
        ready!(state.poll_drain(cx))?;
        Pin::new(state.inner()?).poll_flush(cx)
    }

    /// A flush: the caller's writer stays open for the caller to finish.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
