//! Moving codec work off the copy loop. A backup's bytes are compressed and
//! encrypted on a task of their own (`WriteBehind`), and a restore's are
//! decrypted and decompressed ahead of the reader (`ReadAhead`), so the
//! host drains a child's pipe while it compresses the previous chunk: the
//! dump program and the codec run on two cores, as `pg_dump | gzip` would.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

/// Chunks queued between the two sides (each up to the copy buffer, 1 MiB).
const DEPTH: usize = 4;
/// Read size of the read-ahead task.
const CHUNK: usize = 1 << 20;

/// A writer whose bytes are written to `W` by a separate task.
pub struct WriteBehind<W> {
    queue: Option<PollSender<Vec<u8>>>,
    task: Option<JoinHandle<io::Result<W>>>,
    /// The task's error, for writes refused after it stopped.
    failed: Arc<Mutex<Option<String>>>,
}

impl<W: AsyncWrite + Send + Unpin + 'static> WriteBehind<W> {
    pub fn new(mut inner: W) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let failed = Arc::new(Mutex::new(None));
        let report = failed.clone();
        let task = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if let Err(e) = inner.write_all(&chunk).await {
                    *report.lock().expect("failure slot") = Some(e.to_string());
                    return Err(e);
                }
            }
            Ok(inner)
        });
        WriteBehind {
            queue: Some(PollSender::new(tx)),
            task: Some(task),
            failed,
        }
    }

    /// Queues `chunk` as it is (`poll_write` must copy what it is lent).
    pub async fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        self.queue_item(chunk)
    }

    /// Waits until every queued byte is written and gives `W` back.
    pub async fn finish(mut self) -> io::Result<W> {
        self.queue.take();
        let task = self.task.take().expect("finish runs once");
        task.await
            .map_err(|e| io::Error::other(format!("the write task failed: {e}")))?
    }
}

impl<W> WriteBehind<W> {
    /// Waits for room in the queue; fails once the write task stopped.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(queue) = self.queue.as_mut() else {
            return Poll::Ready(Err(io::Error::other("write after finish")));
        };
        match ready!(queue.poll_reserve(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(stopped(&self.failed))),
        }
    }

    /// Queues `chunk` in the room `poll_room` reserved.
    fn queue_item(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        match self.queue.as_mut().map(|q| q.send_item(chunk)) {
            Some(Ok(())) => Ok(()),
            _ => Err(stopped(&self.failed)),
        }
    }
}

impl<W> Drop for WriteBehind<W> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<W> AsyncWrite for WriteBehind<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        Poll::Ready(self.queue_item(buf.to_vec()).map(|()| buf.len()))
    }

    /// Bytes are flushed by `finish`; the queue itself holds nothing back.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn stopped(failed: &Mutex<Option<String>>) -> io::Error {
    let cause = failed.lock().expect("failure slot").clone();
    io::Error::other(cause.unwrap_or_else(|| "the write task stopped".to_string()))
}

/// A reader fed by a task that reads `R` ahead, up to `DEPTH` chunks.
pub struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
    task: JoinHandle<()>,
}

impl ReadAhead {
    pub fn new<R: AsyncRead + Send + Unpin + 'static>(mut inner: R) -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        let task = tokio::spawn(async move {
            loop {
                let mut buf = Vec::with_capacity(CHUNK);
                match inner.read_buf(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.send(Ok(buf)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        ReadAhead {
            chunks: rx,
            current: Vec::new(),
            offset: 0,
            task,
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset == this.current.len() {
            match ready!(this.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    this.current = chunk;
                    this.offset = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.current.len() - this.offset);
        buf.put_slice(&this.current[this.offset..this.offset + n]);
        this.offset += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_behind_and_read_ahead_keep_every_byte_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = WriteBehind::new(Vec::new());
        for chunk in data.chunks(77_777) {
            writer.write_all(chunk).await.unwrap();
        }
        let written = writer.finish().await.unwrap();
        assert_eq!(written, data);

        // Owned chunks and lent ones interleave in order.
        let mut writer = WriteBehind::new(Vec::new());
        for (i, chunk) in data.chunks(77_777).enumerate() {
            if i % 2 == 0 {
                writer.send(chunk.to_vec()).await.unwrap();
            } else {
                writer.write_all(chunk).await.unwrap();
            }
        }
        assert_eq!(writer.finish().await.unwrap(), data);

        let mut reader = ReadAhead::new(std::io::Cursor::new(written));
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);
    }

    /// A writer that fails after a few bytes.
    struct Broken(usize);
    impl AsyncWrite for Broken {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.0 == 0 {
                return Poll::Ready(Err(io::Error::other("disk full")));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failing_writer_surfaces_its_error() {
        let mut writer = WriteBehind::new(Broken(10));
        let mut error = None;
        for _ in 0..100 {
            if let Err(e) = writer.write_all(&[0u8; 1000]).await {
                error = Some(e);
                break;
            }
        }
        let message = match error {
            Some(e) => e.to_string(),
            None => writer
                .finish()
                .await
                .err()
                .expect("finish reports it")
                .to_string(),
        };
        assert!(message.contains("disk full"), "{message}");
    }
}
