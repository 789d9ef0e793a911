//! S3 and S3-compatible object storage (`s3://bucket/prefix`).
//!
//! Uploads stream as multipart uploads: the writer fills one part buffer at a
//! time and hands full parts to upload tasks; a semaphore of `parts_in_flight`
//! permits, one per buffer (the one being filled included), bounds memory to
//! part size × parts in flight. Each part is retried with backoff; a failed
//! or abandoned upload is aborted so no parts linger in the bucket. Objects
//! smaller than one part go up with a single PUT. Downloads stream, and a
//! dropped connection resumes with a ranged GET from the last byte read.
//!
//! Artifacts and manifests are written with `If-None-Match: *` (the single
//! PUT, CompleteMultipartUpload, the manifest's PUT): the server refuses to
//! replace an object that exists, atomically, where a HEAD before the write
//! would race. Only the "latest" pointer is overwritten, by design. A server
//! that ignores the header still meets `Catalog::begin`'s check that the key
//! is unused before the upload starts.

use super::upload_journal::{JournalEntry, OpenUpload, UploadJournal};
use super::{ObjectMeta, ObjectStore, ObjectWriter};
use super::{s3_client, s3_errors};
use crate::failure::{Failure, Kind};
use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSemaphore;

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Attempts per request of our own (each on top of the SDK's retries).
const ATTEMPTS: u32 = 5;
/// Times a download reconnects after a dropped connection.
const RESUMES: u32 = 10;

/// How to reach the S3 service. Unset fields come from the standard AWS
/// chain (environment, profile, web identity).
#[derive(Clone, Debug)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible servers; default: on when an endpoint is given.
    pub path_style: Option<bool>,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            path_style: None,
            part_size: 16 << 20,
            parts_in_flight: 4,
        }
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket, empty or ending in `/`.
    prefix: String,
    part_size: usize,
    parts_in_flight: usize,
    location: String,
    journal: UploadJournal,
}

/// The full message of an SDK error (its `Display` alone says "service
/// error"), without the SDK's Debug structures.
fn describe<E: std::error::Error + 'static>(e: &E) -> String {
    s3_errors::describe(e)
}

/// Sends `request` (a CreateMultipartUpload of `key` in `bucket`, headers
/// set) journaled first, so a run killed before the answer still leaves a
/// trace; returns the upload id and its entry, which the caller closes once
/// the upload is completed or aborted. The one place uploads are started.
pub(crate) async fn start_journaled_upload(
    journal: &UploadJournal,
    bucket: &str,
    key: &str,
    request: aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
) -> Result<(String, JournalEntry)> {
    let mut entry = journal.starting(bucket, key);
    let out = match request.send().await {
        Ok(out) => out,
        Err(e) => {
            // Refused: there is no upload. Without an answer (a timeout, a
            // dropped connection) the server may have made one, so the
            // entry stays for the next run.
            if matches!(e, aws_sdk_s3::error::SdkError::ServiceError(_)) {
                entry.close();
            }
            bail!("starting the multipart upload of {key}: {}", describe(&e));
        }
    };
    let id = out
        .upload_id()
        .context("the server returned no upload id")?
        .to_string();
    entry.started(&id);
    Ok((id, entry))
}

impl S3Store {
    /// Connects to the bucket of `url` (`s3://bucket/prefix`) and checks it
    /// is reachable, so bad credentials or a missing bucket fail up front.
    pub async fn connect(url: &str, options: &S3Options, journal: UploadJournal) -> Result<Self> {
        let rest = url.strip_prefix("s3://").context("not an s3:// URL")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                format!("store {url:?} names no bucket; use s3://bucket/prefix"),
            )
            .into());
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        if options.part_size < MIN_PART_SIZE {
            return Err(Failure::new(
                Kind::Usage,
                format!("S3 part size must be at least {} MiB", MIN_PART_SIZE >> 20),
            )
            .into());
        }
        let location = url.trim_end_matches('/').to_string();
        let (client, endpoint) = s3_client::build(options, None, &location).await?;
        let store = S3Store {
            client,
            bucket: bucket.to_string(),
            prefix,
            part_size: options.part_size,
            parts_in_flight: options.parts_in_flight.max(1),
            location,
            journal,
        };
        store.check_bucket(endpoint.as_deref()).await?;
        store.abort_abandoned_uploads().await;
        Ok(store)
    }

    async fn check_bucket(&self, endpoint: Option<&str>) -> Result<()> {
        let at = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(s3_errors::bucket_unusable(&e, &self.bucket, &at).into()),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// One small object, replacing what is there or (`new`) only if nothing is.
    async fn put_object(&self, key: &str, bytes: &[u8], new: bool) -> Result<()> {
        let full = self.key(key);
        let data = Bytes::copy_from_slice(bytes);
        with_retries(&format!("writing {full}"), || async {
            let mut request = self.client.put_object().bucket(&self.bucket).key(&full);
            if new {
                request = request.if_none_match("*");
            }
            request
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .map_err(|e| write_error(&e, &self.bucket, &full))
        })
        .await?;
        Ok(())
    }

    /// Aborts uploads an earlier run on this machine left open (killed, or
    /// the server was unreachable when it tried to abort).
    async fn abort_abandoned_uploads(&self) {
        abort_abandoned_uploads(&self.client, &self.bucket, &self.journal).await;
    }
}

/// Aborts the uploads into `bucket` an earlier run on this machine left
/// open (killed, or the server was unreachable when it tried to abort).
pub(crate) async fn abort_abandoned_uploads(
    client: &Client,
    bucket: &str,
    journal: &UploadJournal,
) {
    let abandoned = match journal.abandoned(bucket) {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("cannot read the open-upload journal: {e:#}");
            return;
        }
    };
    for entry in abandoned {
        let open = entry.upload();
        let ids = match &open.upload_id {
            Some(id) => vec![id.clone()],
            // Killed before the server's answer arrived: the upload, if the
            // server made one, is found among the key's open uploads.
            None => match open_uploads_of_key(client, open).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(
                        "an earlier run was killed while starting the multipart upload of {} \
                         and the server cannot list open uploads to find it ({e}); \
                         if it made one, it stays open until an AbortIncompleteMultipartUpload \
                         lifecycle rule on bucket {bucket} removes it",
                        open.key
                    );
                    entry.close();
                    continue;
                }
            },
        };
        let mut all_gone = true;
        for id in ids {
            let result = client
                .abort_multipart_upload()
                .bucket(&open.bucket)
                .key(&open.key)
                .upload_id(&id)
                .send()
                .await;
            match result {
                Ok(_) => tracing::info!(
                    "aborted the multipart upload of {} left open by an earlier run",
                    open.key
                ),
                Err(e) if e.code() == Some("NoSuchUpload") => {}
                Err(e) => {
                    tracing::warn!(
                        "could not abort the upload of {} left by an earlier run: {}",
                        open.key,
                        describe(&e)
                    );
                    all_gone = false;
                }
            }
        }
        if all_gone {
            entry.close();
        }
    }
}

/// The ids of every open upload of exactly `open.key`. Not only the one the
/// killed run started: an open upload of a key envsync is about to write is
/// an orphan of some earlier run. (The uploads' start times cannot narrow
/// it: servers differ, moto reports a fixed date.)
async fn open_uploads_of_key(client: &Client, open: &OpenUpload) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let (mut key_marker, mut id_marker) = (None, None);
    // A server that never stops saying "truncated" must not hold the run.
    for _ in 0..LIST_UPLOADS_PAGES_MAX {
        let page = client
            .list_multipart_uploads()
            .bucket(&open.bucket)
            .prefix(&open.key)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .map_err(|e| anyhow!("{}", describe(&e)))?;
        for upload in page.uploads() {
            if upload.key() == Some(open.key.as_str()) {
                ids.extend(upload.upload_id().map(str::to_string));
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(ids);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() && id_marker.is_none() {
            return Ok(ids);
        }
    }
    bail!(
        "it answered more than {LIST_UPLOADS_PAGES_MAX} pages of open uploads of {}",
        open.key
    )
}

/// Pages of ListMultipartUploads read for one key (1,000 uploads each).
const LIST_UPLOADS_PAGES_MAX: usize = 100;

/// The error of a write refused because an object is already at `key`
/// (HTTP 412 to `If-None-Match: *`), as a `Failure`; other errors described.
fn write_error<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    key: &str,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if e.code() == Some("PreconditionFailed") || status == Some(412) {
        return super::already_exists(&format!("bucket {bucket}"), key);
    }
    anyhow!("{}", describe(e))
}

/// Retries `op` with exponential backoff (0.2 s, 0.4 s, … up to 5 tries).
async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match op().await {
            Ok(v) => return Ok(v),
            // A `Failure` is a definite answer (the object exists): retrying
            // cannot change it.
            Err(e) if attempt < ATTEMPTS && crate::failure::kind_of(&e).is_none() => {
                tracing::warn!(
                    "{what} failed (attempt {attempt} of {ATTEMPTS}), retrying in {delay:?}: {e:#}"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.context(format!("{what} failed {ATTEMPTS} times"))),
        }
    }
    unreachable!("the last attempt returns")
}

/// What the part tasks of one upload share.
struct Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: OnceCell<String>,
    /// The first part failure, so the writer stops taking bytes.
    failed: Mutex<Option<String>>,
    journal: UploadJournal,
    /// This upload's journal entry, from just before it was requested.
    entry: Mutex<Option<JournalEntry>>,
    /// Limits concurrent part requests to `parts_in_flight` (the buffer
    /// permits of the writer bound memory; these bound connections).
    in_flight: Semaphore,
    put: PutOptions,
}

/// How an upload writes its object.
#[derive(Clone, Debug, Default)]
pub(crate) struct PutOptions {
    /// Only if no object is at the key (`If-None-Match: *`): artifacts and
    /// manifests. Off for objects a sync replaces.
    pub new_only: bool,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: Option<std::collections::HashMap<String, String>>,
}

impl Upload {
    async fn upload_id(&self) -> Result<&String> {
        self.upload_id
            .get_or_try_init(|| async {
                let request = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .set_content_type(self.put.content_type.clone())
                    .set_metadata(self.put.metadata.clone());
                let (id, entry) =
                    start_journaled_upload(&self.journal, &self.bucket, &self.key, request).await?;
                *self.entry.lock().unwrap() = Some(entry);
                Ok(id)
            })
            .await
    }

    async fn upload_part(&self, number: i32, data: Bytes) -> Result<CompletedPart> {
        let id = self.upload_id().await?.clone();
        let _slot = self.in_flight.acquire().await.context("upload closed")?;
        let what = format!("uploading part {number} of {}", self.key);
        let etag = with_retries(&what, || async {
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .map_err(|e| anyhow!("{}", describe(&e)))?;
            Ok(out.e_tag().unwrap_or_default().to_string())
        })
        .await?;
        tracing::debug!(
            key = self.key,
            part = number,
            bytes = data.len(),
            "uploaded part"
        );
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    /// Aborts the upload, retrying; if the server stays unreachable the
    /// journal keeps it, and the next run that opens the bucket aborts it.
    async fn abort(&self) {
        let Some(id) = self.upload_id.get() else {
            return;
        };
        let result = with_retries(&format!("aborting the upload of {}", self.key), || async {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| anyhow!("{}", describe(&e)))
        })
        .await;
        match result {
            Ok(_) => {
                tracing::info!("aborted the multipart upload of {}", self.key);
                self.close_entry();
            }
            Err(e) => tracing::warn!(
                "could not abort the multipart upload {id} of {} ({e:#}); the next run against this bucket will",
                self.key
            ),
        }
    }

    fn completed(&self) {
        self.close_entry();
    }

    fn close_entry(&self) {
        if let Some(entry) = self.entry.lock().unwrap().take() {
            entry.close();
        }
    }
}

pub(crate) struct S3Writer {
    upload: Arc<Upload>,
    part_size: usize,
    permits: PollSemaphore,
    /// The part being filled and the permit that pays for its buffer.
    current: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    next_part: i32,
    tasks: Vec<JoinHandle<Result<CompletedPart>>>,
    /// Set once finish or abort has run; Drop then has nothing to clean up.
    settled: bool,
}

impl S3Writer {
    /// A streaming upload of `key` in `bucket`: one part buffer being
    /// filled plus `parts_in_flight` uploading bound its memory.
    pub(crate) fn new(
        client: Client,
        bucket: &str,
        key: String,
        part_size: usize,
        parts_in_flight: usize,
        journal: UploadJournal,
        put: PutOptions,
    ) -> Self {
        let upload = Arc::new(Upload {
            client,
            bucket: bucket.to_string(),
            key,
            upload_id: OnceCell::new(),
            failed: Mutex::new(None),
            journal,
            entry: Mutex::new(None),
            in_flight: Semaphore::new(parts_in_flight),
            put,
        });
        S3Writer {
            upload,
            part_size,
            // One permit per part buffer: the one being filled plus those uploading.
            permits: PollSemaphore::new(Arc::new(Semaphore::new(parts_in_flight + 1))),
            current: Vec::new(),
            permit: None,
            next_part: 1,
            tasks: Vec::new(),
            settled: false,
        }
    }

    fn send_part(&mut self) {
        let number = self.next_part;
        self.next_part += 1;
        let data = Bytes::from(std::mem::take(&mut self.current));
        let permit = self.permit.take();
        let upload = self.upload.clone();
        self.tasks.push(tokio::spawn(async move {
            let result = upload.upload_part(number, data).await;
            drop(permit);
            if let Err(e) = &result {
                upload
                    .failed
                    .lock()
                    .expect("failure slot")
                    .get_or_insert_with(|| format!("{e:#}"));
            }
            result
        }));
    }

    async fn put_single(&mut self) -> Result<()> {
        let data = Bytes::from(std::mem::take(&mut self.current));
        let up = &self.upload;
        with_retries(&format!("uploading {}", up.key), || async {
            up.client
                .put_object()
                .bucket(&up.bucket)
                .key(&up.key)
                .set_if_none_match(up.put.new_only.then(|| "*".to_string()))
                .set_content_type(up.put.content_type.clone())
                .set_metadata(up.put.metadata.clone())
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .map_err(|e| write_error(&e, &up.bucket, &up.key))
        })
        .await?;
        Ok(())
    }

    async fn complete(&mut self) -> Result<()> {
        if !self.current.is_empty() {
            self.send_part();
        }
        let mut parts = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.drain(..) {
            parts.push(task.await.context("a part upload task failed")??);
        }
        parts.sort_by_key(|p| p.part_number());
        let up = &self.upload;
        let id = up.upload_id().await?.clone();
        let count = parts.len();
        up.client
            .complete_multipart_upload()
            .bucket(&up.bucket)
            .key(&up.key)
            .upload_id(&id)
            .set_if_none_match(up.put.new_only.then(|| "*".to_string()))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                write_error(&e, &up.bucket, &up.key)
                    .context(format!("completing the multipart upload of {}", up.key))
            })?;
        up.completed();
        tracing::debug!(key = up.key, parts = count, "multipart upload complete");
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectWriter for S3Writer {
    async fn finish(mut self: Box<Self>) -> Result<()> {
        let result = if self.next_part == 1 {
            self.put_single().await
        } else {
            self.complete().await
        };
        if result.is_err() {
            self.upload.abort().await;
        }
        self.settled = true;
        result
    }

    async fn abort(mut self: Box<Self>) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.upload.abort().await;
        self.settled = true;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped without finish or abort (a panic): abort in the background.
        for task in &self.tasks {
            task.abort();
        }
        if self.upload.upload_id.get().is_some()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let upload = self.upload.clone();
            handle.spawn(async move { upload.abort().await });
        }
    }
}

impl AsyncWrite for S3Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.upload.failed.lock().expect("failure slot").as_ref() {
            return Poll::Ready(Err(std::io::Error::other(e.clone())));
        }
        if self.permit.is_none() {
            match ready!(self.permits.poll_acquire(cx)) {
                Some(permit) => {
                    self.permit = Some(permit);
                    let size = self.part_size;
                    self.current.reserve_exact(size);
                }
                None => return Poll::Ready(Err(std::io::Error::other("upload closed"))),
            }
        }
        let room = self.part_size - self.current.len();
        let n = room.min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == self.part_size {
            self.send_part();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type BodyReader = Box<dyn AsyncRead + Send + Unpin>;
type Opening = Pin<Box<dyn Future<Output = Result<(BodyReader, Option<String>)>> + Send>>;

/// A streaming download that reconnects with a ranged GET when the
/// connection drops, pinned to the object's ETag so it never mixes versions.
pub(crate) struct S3Reader {
    client: Client,
    bucket: String,
    key: String,
    offset: u64,
    etag: Option<String>,
    resumes: u32,
    state: ReaderState,
}

impl S3Reader {
    /// Starts reading `key` in `bucket`; fails when it cannot be read.
    pub(crate) async fn open(client: Client, bucket: &str, key: String) -> Result<Self> {
        let (body, etag) = open_at(
            client.clone(),
            bucket.to_string(),
            key.clone(),
            (0, None),
            None,
        )
        .await?;
        Ok(S3Reader {
            client,
            bucket: bucket.to_string(),
            key,
            offset: 0,
            etag,
            resumes: 0,
            state: ReaderState::Reading(body),
        })
    }

    /// Like `open`, and also what the GET said of the object, so a copy
    /// needs no HEAD before it.
    pub(crate) async fn open_with_head(
        client: Client,
        bucket: &str,
        key: String,
    ) -> Result<(Self, GetHead)> {
        let out = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| get_error(&e, &key, bucket))?;
        let head = GetHead {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(str::to_string),
            last_modified: out.last_modified().map(|t| t.secs()),
            content_type: out.content_type().map(str::to_string),
            metadata: out.metadata().cloned(),
        };
        let body: BodyReader = Box::new(out.body.into_async_read());
        let reader = S3Reader {
            client,
            bucket: bucket.to_string(),
            key,
            offset: 0,
            etag: head.etag.clone(),
            resumes: 0,
            state: ReaderState::Reading(body),
        };
        Ok((reader, head))
    }
}

/// What a GET answered besides the body.
pub(crate) struct GetHead {
    pub size: u64,
    /// As the server gave it, quotes included.
    pub etag: Option<String>,
    /// Unix seconds.
    pub last_modified: Option<i64>,
    pub content_type: Option<String>,
    pub metadata: Option<std::collections::HashMap<String, String>>,
}

fn get_error(
    e: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
    key: &str,
    bucket: &str,
) -> anyhow::Error {
    match e.code() {
        Some("NoSuchKey") => anyhow!("{key} does not exist in bucket {bucket}"),
        Some("PreconditionFailed") => anyhow!("{key} changed while it was being read"),
        _ => anyhow!("reading {key}: {}", describe(e)),
    }
}

enum ReaderState {
    Reading(BodyReader),
    Opening(Opening),
    Done,
}

/// The one GET of an object's body: from byte `offset` to byte `last`
/// (inclusive; none: to the end), pinned to `etag` when given.
fn open_at(
    client: Client,
    bucket: String,
    key: String,
    (offset, last): (u64, Option<u64>),
    etag: Option<String>,
) -> Opening {
    Box::pin(async move {
        let mut request = client.get_object().bucket(&bucket).key(&key);
        match last {
            Some(last) => request = request.range(format!("bytes={offset}-{last}")),
            None if offset > 0 => request = request.range(format!("bytes={offset}-")),
            None => {}
        }
        if let Some(etag) = &etag {
            request = request.if_match(etag);
        }
        let out = request
            .send()
            .await
            .map_err(|e| get_error(&e, &key, &bucket))?;
        let etag = out.e_tag().map(str::to_string);
        let body: BodyReader = Box::new(out.body.into_async_read());
        Ok((body, etag))
    })
}

impl AsyncRead for S3Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let this = &mut *self;
            match &mut this.state {
                ReaderState::Done => return Poll::Ready(Ok(())),
                ReaderState::Opening(fut) => match ready!(fut.as_mut().poll(cx)) {
                    Ok((body, etag)) => {
                        if this.etag.is_none() {
                            this.etag = etag;
                        }
                        this.state = ReaderState::Reading(body);
                    }
                    Err(e) => {
                        this.state = ReaderState::Done;
                        return Poll::Ready(Err(std::io::Error::other(format!("{e:#}"))));
                    }
                },
                ReaderState::Reading(body) => {
                    let before = buf.filled().len();
                    match ready!(Pin::new(body).poll_read(cx, buf)) {
                        Ok(()) => {
                            let n = buf.filled().len() - before;
                            this.offset += n as u64;
                            if n == 0 {
                                this.state = ReaderState::Done;
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Err(e) if this.resumes < RESUMES => {
                            this.resumes += 1;
                            tracing::warn!(
                                "download of {} broke at byte {} ({e}); resuming with a ranged GET (attempt {})",
                                this.key,
                                this.offset,
                                this.resumes
                            );
                            this.state = ReaderState::Opening(open_at(
                                this.client.clone(),
                                this.bucket.clone(),
                                this.key.clone(),
                                (this.offset, None),
                                this.etag.clone(),
                            ));
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer::new(
            self.client.clone(),
            &self.bucket,
            self.key(key),
            self.part_size,
            self.parts_in_flight,
            self.journal.clone(),
            PutOptions {
                new_only: true,
                ..Default::default()
            },
        )))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(
            S3Reader::open(self.client.clone(), &self.bucket, self.key(key)).await?,
        ))
    }

    async fn open_prefix(&self, key: &str, len: u64) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        // One small ranged GET: nothing to resume.
        let range = (0, Some(len.max(1) - 1));
        let (body, _) = open_at(
            self.client.clone(),
            self.bucket.clone(),
            self.key(key),
            range,
            None,
        )
        .await?;
        Ok(body)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let full = self.key(key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.code() == Some("NoSuchKey")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                return Ok(None);
            }
            Err(e) => bail!("reading {full}: {}", describe(&e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .with_context(|| format!("reading {full}"))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_object(key, bytes, false).await
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_object(key, bytes, true).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| anyhow!("listing {}: {}", self.location, describe(&e)))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0) as u64,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| anyhow!("deleting {full}: {}", describe(&e)))?;
        Ok(())
    }
}
