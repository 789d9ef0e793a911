//! `envsync:plugin/streams`: byte streams owned by the host, and `splice`,
//! which moves bulk data host-side so it never passes through guest memory.

use super::HostResult;
use crate::capabilities::chunks::ChunkWriter;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::streams::{
    Host, HostByteSink, HostByteSource, HostTransfer,
};
use crate::runtime::sandbox::StepState;
use crate::store::ObjectWriter;
use crate::store::checksum::{ArtifactReader, ArtifactWriter};
use std::future::Future as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wasmtime::component::Resource;

/// Largest single `read` a plugin may ask for, so one call cannot make the
/// host allocate without bound.
const MAX_READ: u32 = 8 * 1024 * 1024;
/// Buffer of one `splice`.
const SPLICE_BUF: usize = 1024 * 1024;
/// How long a failed transfer reads on to learn whether its source was
/// damaged (the likely cause of the failure).
const VERIFY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// How often a long splice logs its progress (a copy between programs; an
/// artifact's progress is shown by `crate::progress`).
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// What a readable stream reads from.
pub enum SourceKind {
    /// A stored artifact; its bytes are hashed and checked by `verify`.
    Artifact(ArtifactReader),
    /// A child's stdout or a local file.
    Pipe(Box<dyn AsyncRead + Send + Unpin>),
    /// Temporarily moved out by a running `splice`.
    Busy,
}

/// A readable stream handed to a plugin.
pub struct ByteSource {
    kind: SourceKind,
    label: String,
    eof: bool,
}

impl ByteSource {
    pub fn new(label: impl Into<String>, kind: SourceKind) -> Self {
        ByteSource {
            kind,
            label: label.into(),
            eof: false,
        }
    }

    /// True once a stored artifact was read to its end and matched its
    /// manifest.
    pub fn verified(&self) -> bool {
        matches!(&self.kind, SourceKind::Artifact(r) if r.verified())
    }

    /// The artifact inside, for the host to verify when a plugin did not.
    pub fn artifact_mut(&mut self) -> Option<&mut ArtifactReader> {
        match &mut self.kind {
            SourceKind::Artifact(r) => Some(r),
            _ => None,
        }
    }

    fn reader(&mut self) -> Result<&mut (dyn AsyncRead + Send + Unpin), WitError> {
        match &mut self.kind {
            SourceKind::Artifact(r) => Ok(r),
            SourceKind::Pipe(r) => Ok(r.as_mut()),
            SourceKind::Busy => Err(WitError::Io(format!(
                "{} is in use by a splice",
                self.label
            ))),
        }
    }

    async fn read(&mut self, max: u32) -> Result<Vec<u8>, WitError> {
        let label = self.label.clone();
        // Read into spare capacity: zeroing a buffer the read overwrites
        // costs as much as a copy of the stream.
        let mut buf = Vec::with_capacity(max.clamp(1, MAX_READ) as usize);
        let n = self
            .reader()?
            .read_buf(&mut buf)
            .await
            .map_err(|e| WitError::Io(format!("reading {label} failed: {e}")))?;
        if n == 0 {
            self.eof = true;
        }
        Ok(buf)
    }

    async fn verify(&mut self) -> Result<(), WitError> {
        match &mut self.kind {
            SourceKind::Artifact(r) => r.verify().await.map_err(WitError::Integrity),
            _ if self.eof => Ok(()),
            _ => Err(WitError::Io(format!(
                "{} was not read to its end; read until an empty chunk before verify",
                self.label
            ))),
        }
    }
}

/// What a writable stream writes to.
pub enum SinkKind {
    /// The artifact of a backup; the host commits it after the plugin returns.
    Artifact(ArtifactWriter),
    /// A chunk of a backup; stored when closed.
    Chunk(Box<ChunkWriter>),
    /// A child's stdin.
    Pipe(Box<dyn AsyncWrite + Send + Unpin>),
    /// An object being written (`capabilities::objects`): visible only
    /// once `close` finishes it; dropped unclosed, it is aborted.
    Object(Box<dyn ObjectWriter>),
    /// Closed by the plugin (pipes are dropped so the reader sees EOF).
    Closed,
    /// Temporarily moved out by a running `splice`.
    Busy,
}

/// A writable stream handed to a plugin.
pub struct ByteSink {
    kind: SinkKind,
    label: String,
    closed: bool,
    /// Bytes written so far (for the objects capability's counts).
    written: u64,
}

impl ByteSink {
    pub fn new(label: impl Into<String>, kind: SinkKind) -> Self {
        ByteSink {
            kind,
            label: label.into(),
            closed: false,
            written: 0,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Gives back the artifact writer once the plugin is done with it.
    pub fn into_artifact(self) -> Option<ArtifactWriter> {
        match self.kind {
            SinkKind::Artifact(w) => Some(w),
            _ => None,
        }
    }

    fn writer(&mut self) -> Result<&mut (dyn AsyncWrite + Send + Unpin), WitError> {
        if self.closed {
            return Err(WitError::Io(format!("{} is closed", self.label)));
        }
        match &mut self.kind {
            SinkKind::Artifact(w) => Ok(w),
            SinkKind::Chunk(c) => match c.writer() {
                Some(w) => Ok(w),
                None => Err(WitError::Io(format!("{} is closed", self.label))),
            },
            SinkKind::Pipe(w) => Ok(w.as_mut()),
            SinkKind::Object(w) => Ok(w.as_mut()),
            SinkKind::Closed => Err(WitError::Io(format!("{} is closed", self.label))),
            SinkKind::Busy => Err(WitError::Io(format!(
                "{} is in use by a splice",
                self.label
            ))),
        }
    }

    pub(crate) async fn write(&mut self, bytes: Vec<u8>) -> Result<(), WitError> {
        self.writer()?; // refuses a closed or busy sink
        let len = bytes.len() as u64;
        let written = match &mut self.kind {
            // The artifact's codec task takes the buffer itself, uncopied.
            SinkKind::Artifact(w) => w.write_owned(bytes).await,
            SinkKind::Chunk(c) => match c.writer() {
                Some(w) => w.write_owned(bytes).await,
                None => unreachable!("refused by writer()"),
            },
            SinkKind::Pipe(w) => w.write_all(&bytes).await,
            SinkKind::Object(w) => w.write_all(&bytes).await,
            SinkKind::Closed | SinkKind::Busy => unreachable!("refused by writer()"),
        };
        written.map_err(|e| WitError::Io(format!("writing to {} failed: {e}", self.label)))?;
        self.written += len;
        Ok(())
    }

    /// Flushes and closes; a pipe is dropped so its reader sees end of input.
    pub async fn close(&mut self) -> Result<(), WitError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let label = self.label.clone();
        if matches!(self.kind, SinkKind::Object(_)) {
            let SinkKind::Object(w) = std::mem::replace(&mut self.kind, SinkKind::Closed) else {
                unreachable!("matched above")
            };
            return w
                .finish()
                .await
                .map_err(|e| WitError::Io(format!("writing {label} failed: {e:#}")));
        }
        let result = match &mut self.kind {
            SinkKind::Artifact(w) => w.flush().await,
            // A chunk is complete when closed: store it now.
            SinkKind::Chunk(c) => return c.close().await.map_err(WitError::Io),
            SinkKind::Pipe(w) => w.shutdown().await,
            SinkKind::Object(_) | SinkKind::Closed | SinkKind::Busy => Ok(()),
        };
        if matches!(self.kind, SinkKind::Pipe(_)) {
            self.kind = SinkKind::Closed;
        }
        // A child that exited before reading all its input gives EPIPE here;
        // its exit status tells the real story, so that is not an error.
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(WitError::Io(format!("closing {label} failed: {e}")))
            }
            _ => Ok(()),
        }
    }
}

/// Copies `reader` into `writer` with a large buffer, logging progress of
/// long copies. Errors say which side failed.
async fn copy(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    writer: &mut (dyn AsyncWrite + Send + Unpin),
    from: &str,
    to: &str,
) -> Result<u64, WitError> {
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut total = 0u64;
    let started = Instant::now();
    let mut next_report = started + PROGRESS_EVERY;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| WitError::Io(format!("reading {from} failed: {e}")))?;
        if n == 0 {
            break;
        }
        writer
            .write_all(&buf[..n])
            .await
            .map_err(|e| WitError::Io(format!("writing to {to} failed: {e}")))?;
        total += n as u64;
        if Instant::now() >= next_report {
            next_report += PROGRESS_EVERY;
            let mib = total as f64 / (1024.0 * 1024.0);
            let rate = mib / started.elapsed().as_secs_f64();
            if from.starts_with("artifact ") || to.starts_with("artifact ") {
                tracing::debug!("{from} → {to}: {mib:.0} MiB so far ({rate:.0} MiB/s)");
            } else {
                tracing::info!("{from} → {to}: {mib:.0} MiB so far ({rate:.0} MiB/s)");
            }
        }
    }
    writer
        .flush()
        .await
        .map_err(|e| WitError::Io(format!("writing to {to} failed: {e}")))?;
    Ok(total)
}

impl HostByteSource for StepState {
    async fn read(&mut self, this: Resource<ByteSource>, max: u32) -> HostResult<Vec<u8>> {
        Ok(self.table.get_mut(&this)?.read(max).await)
    }

    async fn verify(&mut self, this: Resource<ByteSource>) -> HostResult<()> {
        Ok(self.table.get_mut(&this)?.verify().await)
    }

    async fn drop(&mut self, this: Resource<ByteSource>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostByteSink for StepState {
    async fn write(&mut self, this: Resource<ByteSink>, bytes: Vec<u8>) -> HostResult<()> {
        Ok(self.table.get_mut(&this)?.write(bytes).await)
    }

    async fn close(&mut self, this: Resource<ByteSink>) -> HostResult<()> {
        let sink = self.table.get_mut(&this)?;
        let object = matches!(sink.kind, SinkKind::Object(_));
        let result = sink.close().await;
        if object && result.is_ok() {
            self.objects.stats.written += 1;
            self.objects.stats.bytes += sink.written;
        }
        Ok(result)
    }

    async fn drop(&mut self, this: Resource<ByteSink>) -> wasmtime::Result<()> {
        let mut sink = self.table.delete(this)?;
        match std::mem::replace(&mut sink.kind, SinkKind::Closed) {
            // An object the plugin did not close is abandoned, never
            // committed half-written.
            SinkKind::Object(w) => w.abort().await,
            // So is a chunk (its upload aborts): only a close says it is
            // complete.
            SinkKind::Chunk(chunk) => drop(chunk),
            // Dropping a child's stdin must not lose buffered bytes.
            kind => {
                sink.kind = kind;
                let _ = sink.close().await;
            }
        }
        Ok(())
    }
}

impl Host for StepState {
    async fn start_splice(
        &mut self,
        input: Resource<ByteSource>,
        output: Resource<ByteSink>,
        trailer: Vec<u8>,
    ) -> HostResult<Resource<Transfer>> {
        self.start_transfer(input, output, trailer, Then::Close)
    }

    async fn start_feed(
        &mut self,
        input: Resource<ByteSource>,
        output: Resource<ByteSink>,
        trailer: Vec<u8>,
    ) -> HostResult<Resource<Transfer>> {
        self.start_transfer(input, output, trailer, Then::GiveBack)
    }

    async fn wait_any(&mut self, transfers: Vec<Resource<Transfer>>) -> HostResult<u32> {
        Ok(self
            .wait_first(transfers, None)
            .await?
            .map(|ended| ended.expect("no deadline: one ended")))
    }

    async fn wait_any_within(
        &mut self,
        transfers: Vec<Resource<Transfer>>,
        timeout_ms: u32,
    ) -> HostResult<Option<u32>> {
        let deadline = Duration::from_millis(timeout_ms.into());
        self.wait_first(transfers, Some(deadline)).await
    }

    async fn splice(
        &mut self,
        input: Resource<ByteSource>,
        output: Resource<ByteSink>,
    ) -> HostResult<u64> {
        // Move both streams out of the table for the copy, then put them back
        // whatever happened, so the plugin can still verify or close them.
        let source = self.table.get_mut(&input)?;
        let from = source.label.clone();
        if let Err(e) = source.reader() {
            return Ok(Err(e));
        }
        let mut source_kind = std::mem::replace(&mut source.kind, SourceKind::Busy);
        let sink = self.table.get_mut(&output)?;
        let to = sink.label.clone();
        let result = match sink.writer() {
            Err(e) => Err(e),
            Ok(_) => {
                let mut sink_kind = std::mem::replace(&mut sink.kind, SinkKind::Busy);
                let reader: &mut (dyn AsyncRead + Send + Unpin) = match &mut source_kind {
                    SourceKind::Artifact(r) => r,
                    SourceKind::Pipe(r) => r.as_mut(),
                    SourceKind::Busy => unreachable!("checked above"),
                };
                let writer: &mut (dyn AsyncWrite + Send + Unpin) = match &mut sink_kind {
                    SinkKind::Artifact(w) => w,
                    SinkKind::Chunk(c) => c.writer().expect("checked above"),
                    SinkKind::Pipe(w) => w.as_mut(),
                    SinkKind::Object(w) => w.as_mut(),
                    SinkKind::Closed | SinkKind::Busy => unreachable!("checked above"),
                };
                let result = copy(reader, writer, &from, &to).await;
                let sink = self.table.get_mut(&output)?;
                sink.kind = sink_kind;
                if let Ok(n) = &result {
                    sink.written += n;
                }
                result
            }
        };
        let source = self.table.get_mut(&input)?;
        source.kind = source_kind;
        if result.is_ok() {
            source.eof = true;
        }
        Ok(result)
    }
}

/// What a transfer does with its output once the input went through whole.
#[derive(Clone, Copy)]
enum Then {
    /// Close it (`start-splice`): a child sees end of input, a chunk is stored.
    Close,
    /// Keep it open for `transfer.output` (`start-feed`).
    GiveBack,
}

impl StepState {
    /// The position of the first of `transfers` to end, or none when
    /// `deadline` passed first (every transfer then keeps running).
    async fn wait_first(
        &mut self,
        transfers: Vec<Resource<Transfer>>,
        deadline: Option<Duration>,
    ) -> HostResult<Option<u32>> {
        if transfers.is_empty() {
            return Ok(Err(WitError::InvalidParam(
                "waiting needs at least one transfer".into(),
            )));
        }
        for (position, t) in transfers.iter().enumerate() {
            if self.table.get(t)?.task.is_none() {
                return Ok(Ok(Some(position as u32)));
            }
        }
        // Take the running tasks out of the table to poll them together,
        // then put back those still running.
        let mut running = Vec::new();
        for (position, t) in transfers.iter().enumerate() {
            if let Some(task) = self.table.get_mut(t)?.task.take() {
                running.push((position, task));
            }
        }
        let first = std::future::poll_fn(|cx| {
            for (index, (_, task)) in running.iter_mut().enumerate() {
                if let std::task::Poll::Ready(joined) = std::pin::Pin::new(task).poll(cx) {
                    return std::task::Poll::Ready((index, joined));
                }
            }
            std::task::Poll::Pending
        });
        let ended = match deadline {
            None => Some(first.await),
            Some(deadline) => tokio::time::timeout(deadline, first).await.ok(),
        };
        let finished = ended.as_ref().map(|(index, _)| *index);
        let mut position = None;
        for (index_now, (at, task)) in running.into_iter().enumerate() {
            if Some(index_now) == finished {
                position = Some(at);
                continue;
            }
            self.table.get_mut(&transfers[at])?.task = Some(task);
        }
        if let (Some(at), Some((_, joined))) = (position, ended) {
            self.table.get_mut(&transfers[at])?.settle(joined);
        }
        Ok(Ok(position.map(|at| at as u32)))
    }

    fn start_transfer(
        &mut self,
        input: Resource<ByteSource>,
        output: Resource<ByteSink>,
        trailer: Vec<u8>,
        then: Then,
    ) -> HostResult<Resource<Transfer>> {
        let source = self.table.delete(input)?;
        let sink = self.table.delete(output)?;
        if sink.closed {
            return Ok(Err(WitError::Io(format!("{} is closed", sink.label))));
        }
        let task = tokio::spawn(run_transfer(source, sink, trailer, then));
        let transfer = Transfer {
            task: Some(task),
            result: None,
            output: None,
        };
        Ok(Ok(self.table.push(transfer)?))
    }
}

/// A copy running on the host's runtime (`start-splice`, `start-feed`). Dropping it (the
/// plugin dropped it, or its sandbox ended) stops the copy; its streams are
/// dropped with it, so a child sees its input end and a chunk is abandoned.
pub struct Transfer {
    task: Option<tokio::task::JoinHandle<Result<Fed, WitError>>>,
    result: Option<Result<u64, WitError>>,
    /// A `start-feed` transfer's output after it ended well, until taken.
    output: Option<ByteSink>,
}

/// What a transfer that ended well leaves: the bytes copied, and its output
/// when it was started to give it back.
type Fed = (u64, Option<ByteSink>);

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Transfer {
    fn settle(&mut self, joined: Result<Result<Fed, WitError>, tokio::task::JoinError>) {
        self.task = None;
        let ended =
            joined.unwrap_or_else(|e| Err(WitError::Other(format!("the transfer stopped: {e}"))));
        self.result = Some(ended.map(|(copied, output)| {
            self.output = output;
            copied
        }));
    }
}

/// The body of a transfer: copy, verify the source, write the trailer,
/// close the sink (or give it back), in that order, so a loader gets the
/// trailer (its commit) only after the bytes before it proved intact.
async fn run_transfer(
    mut source: ByteSource,
    mut sink: ByteSink,
    trailer: Vec<u8>,
    then: Then,
) -> Result<Fed, WitError> {
    let from = source.label.clone();
    let to = sink.label.clone();
    let copied = {
        let reader = source.reader()?;
        let writer = sink.writer()?;
        copy(reader, writer, &from, &to).await
    };
    let copied = match copied {
        Ok(n) => n,
        // A stored chunk that cannot be decoded is damaged (or the store
        // failed): either way nothing read from it may be committed.
        Err(WitError::Io(message))
            if message.starts_with("reading ")
                && matches!(source.kind, SourceKind::Artifact(_)) =>
        {
            let damage = source
                .artifact_mut()
                .and_then(|r| r.damage())
                .unwrap_or(message);
            return Err(WitError::Integrity(format!(
                "{damage}; {from} is damaged or unreadable: restore another backup (--artifact) \
                 or make a new one"
            )));
        }
        // The other end stopped taking bytes (a loader that failed): if
        // what it was fed was damaged, that is the cause to report, so read
        // on and check — for a bounded time, since the rest may be large.
        Err(e) => {
            if matches!(source.kind, SourceKind::Artifact(_)) {
                let verified = tokio::time::timeout(VERIFY_AFTER_FAILURE, source.verify()).await;
                if let Ok(Err(damage)) = verified {
                    return Err(damage);
                }
            }
            return Err(e);
        }
    };
    source.eof = true;
    source.verify().await?;
    if !trailer.is_empty() {
        sink.write(trailer).await?;
    }
    match then {
        Then::Close => {
            sink.close().await?;
            Ok((copied, None))
        }
        Then::GiveBack => {
            // What the trailer committed must reach the child now, not
            // when the plugin next writes.
            if let Ok(w) = sink.writer() {
                w.flush()
                    .await
                    .map_err(|e| WitError::Io(format!("writing to {to} failed: {e}")))?;
            }
            Ok((copied, Some(sink)))
        }
    }
}

impl HostTransfer for StepState {
    async fn wait(&mut self, this: Resource<Transfer>) -> HostResult<u64> {
        let transfer = self.table.get_mut(&this)?;
        if let Some(task) = transfer.task.as_mut() {
            let joined = task.await;
            transfer.settle(joined);
        }
        Ok(transfer.result.clone().expect("settled above"))
    }

    async fn output(
        &mut self,
        this: Resource<Transfer>,
    ) -> wasmtime::Result<Option<Resource<ByteSink>>> {
        let Some(sink) = self.table.get_mut(&this)?.output.take() else {
            return Ok(None);
        };
        Ok(Some(self.table.push(sink)?))
    }

    async fn drop(&mut self, this: Resource<Transfer>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
