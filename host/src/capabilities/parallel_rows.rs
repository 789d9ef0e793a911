//! The rows of a chunked sanitised backup (docs/decisions/0021), sanitised
//! in parallel.
//!
//! The engine's one `backup-rows` call hands batches to `write-rows` as in
//! a single-stream backup, and every batch is checked the same way before
//! it goes anywhere. Then, instead of being sanitised and encoded before
//! the call returns, it is queued to one of N workers, each with its own
//! sanitiser instance (configured with the same rules, salt and run
//! context, so masks are the same whichever instance made them) and its
//! own encoder sandbox with nothing granted, writing chunks named
//! `rows-NNNNN`. Each worker keeps one chunk open per table run and starts
//! a new one past [`CHUNK_BYTES`]; batches go round the workers, so a
//! large table is sanitised N ways at once and restored N ways at once.
//! The queues are short, so memory stays bounded by a few batches per
//! worker, and the engine waits when every worker is busy.

use super::chunks::ChunkUploads;
use super::sanitised_rows::{NameCheck, PieceWriter};
use super::streams::ByteSink;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::types::{RowBatch, ValueKind};
use crate::sanitiser::SanitiserSession;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A row chunk is closed once this many encoded bytes are in it (before
/// compression), so one chunk is a restore session's share of minutes,
/// not hours.
pub const CHUNK_BYTES: u64 = 64 << 20;
/// Batches waiting per worker.
const QUEUE: usize = 2;
/// Prefix of the chunks the host names; the engine lists them with
/// `chunks.contents` in `backup-structure(after-rows)`.
pub const ROWS_PREFIX: &str = "rows-";

/// The chunks being written, shared by the workers.
pub type SharedUploads = Arc<tokio::sync::Mutex<ChunkUploads>>;

/// What a worker needs: its sanitiser and its encoder.
pub struct WorkerParts {
    pub session: SanitiserSession,
    pub writer: PieceWriter,
}

/// The state `write-rows` reaches during a chunked sanitised backup.
pub struct ParallelRows {
    check: NameCheck,
    queues: Vec<mpsc::Sender<Batch>>,
    workers: Vec<JoinHandle<SanitiserSession>>,
    /// Round-robin position.
    next: usize,
    failure: Failure,
}

/// The first failure of any worker or check: the step fails with it even
/// if the engine ignores the error it got.
#[derive(Clone, Default)]
struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    fn get(&self) -> Option<String> {
        self.0.lock().expect("failure").clone()
    }

    /// Keeps the first failure (not logged here: the sanitiser logs its
    /// own, and the step reports the one it fails with).
    fn record(&self, why: String) -> String {
        self.0.lock().expect("failure").get_or_insert(why).clone()
    }
}

struct Batch {
    table: String,
    columns: Vec<String>,
    kinds: Vec<ValueKind>,
    rows: RowBatch,
}

/// How the parallel part ended.
pub struct Finished {
    /// One per worker, for the summary and the strict residual check.
    pub sessions: Vec<SanitiserSession>,
    pub failure: Option<String>,
}

impl ParallelRows {
    /// Starts one worker per part.
    pub fn start(check: NameCheck, parts: Vec<WorkerParts>, uploads: SharedUploads) -> Self {
        let failure = Failure::default();
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for parts in parts {
            let (tx, rx) = mpsc::channel(QUEUE);
            let worker = Worker {
                session: parts.session,
                writer: parts.writer,
                chunk: None,
                uploads: uploads.clone(),
                failure: failure.clone(),
            };
            queues.push(tx);
            workers.push(tokio::spawn(worker.run(rx)));
        }
        ParallelRows {
            check,
            queues,
            workers,
            next: 0,
            failure,
        }
    }

    /// `write-rows`: checked here, then queued to a worker. Returns the
    /// rows accepted; what the sanitiser keeps is written after the call.
    pub async fn write_rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        kinds: Vec<ValueKind>,
        rows: RowBatch,
    ) -> Result<u32, WitError> {
        if let Some(f) = self.failure.get() {
            return Err(WitError::Other(format!(
                "the sanitised artifact failed earlier: {f}"
            )));
        }
        if let Err(why) = self.check.rows(&table, &columns, &kinds) {
            return Err(WitError::Denied(self.failure.record(why)));
        }
        let count = rows.rows;
        let batch = Batch {
            table,
            columns,
            kinds,
            rows,
        };
        self.dispatch(batch).await?;
        Ok(count)
    }

    /// Gives the batch to the next worker with room, else waits for the
    /// next in turn.
    async fn dispatch(&mut self, batch: Batch) -> Result<(), WitError> {
        let n = self.queues.len();
        let mut batch = batch;
        for i in 0..n {
            let k = (self.next + i) % n;
            match self.queues[k].try_send(batch) {
                Ok(()) => {
                    self.next = (k + 1) % n;
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(b)) => batch = b,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.ended()),
            }
        }
        let k = self.next;
        self.next = (k + 1) % n;
        self.queues[k].send(batch).await.map_err(|_| self.ended())
    }

    /// A worker stopped: it recorded why.
    fn ended(&self) -> WitError {
        WitError::Other(
            self.failure
                .get()
                .unwrap_or_else(|| "a sanitising worker stopped".into()),
        )
    }

    /// Waits for every worker to write what it holds and close its chunk.
    pub async fn finish(self) -> Finished {
        drop(self.queues);
        let mut sessions = Vec::new();
        for worker in self.workers {
            match worker.await {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    self.failure
                        .record(format!("a sanitising worker panicked: {e}"));
                }
            }
        }
        Finished {
            sessions,
            failure: self.failure.get(),
        }
    }
}

/// A row chunk being written: one table's rows.
struct OpenChunk {
    name: String,
    sink: ByteSink,
    table: String,
    rows: u64,
}

struct Worker {
    session: SanitiserSession,
    writer: PieceWriter,
    /// The open chunk.
    chunk: Option<OpenChunk>,
    uploads: SharedUploads,
    failure: Failure,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Batch>) -> SanitiserSession {
        while let Some(batch) = queue.recv().await {
            if self.failure.get().is_some() {
                break;
            }
            if let Err(why) = self.write(batch).await {
                self.failure.record(why);
                break;
            }
        }
        if self.failure.get().is_none()
            && let Err(why) = self.close_chunk().await
        {
            self.failure.record(why);
        }
        // An open chunk of a failed backup is dropped, which aborts it.
        self.session
    }

    async fn write(&mut self, batch: Batch) -> Result<(), String> {
        let Batch {
            table,
            columns,
            kinds,
            rows,
        } = batch;
        let kept = self
            .session
            .transform_rows(table.clone(), columns.clone(), rows)
            .await?;
        let full = self.writer.bytes >= CHUNK_BYTES;
        if self.writer.open_table() != Some(table.as_str()) || full {
            self.close_chunk().await?;
        }
        if self.chunk.is_none() {
            self.writer.bytes = 0;
            let (name, sink) = open_chunk(&self.uploads).await?;
            self.chunk = Some(OpenChunk {
                name,
                sink,
                table: table.clone(),
                rows: 0,
            });
        }
        let chunk = self.chunk.as_mut().expect("opened above");
        let written = self
            .writer
            .rows(&mut chunk.sink, table, columns, kinds, kept)
            .await?;
        chunk.rows += u64::from(written);
        Ok(())
    }

    async fn close_chunk(&mut self) -> Result<(), String> {
        let Some(mut chunk) = self.chunk.take() else {
            return Ok(());
        };
        self.writer.end_run(&mut chunk.sink).await?;
        chunk
            .sink
            .close()
            .await
            .map_err(|e| crate::failure::wit_message(&e).to_string())?;
        self.uploads
            .lock()
            .await
            .note_rows(&chunk.name, chunk.table, chunk.rows);
        Ok(())
    }
}

/// Starts the next row chunk (a free function: a worker holds sandboxes,
/// which may move between threads but not be shared).
async fn open_chunk(uploads: &SharedUploads) -> Result<(String, ByteSink), String> {
    let mut uploads = uploads.lock().await;
    let name = format!("{ROWS_PREFIX}{:05}", uploads.created_with(ROWS_PREFIX) + 1);
    let sink = uploads
        .create(&name)
        .await
        .map_err(|e| crate::failure::wit_message(&e).to_string())?;
    Ok((name, sink))
}
