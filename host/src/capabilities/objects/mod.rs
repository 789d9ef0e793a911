//! `envsync:plugin/objects`: objects in the S3 locations the operator gave
//! the step's connections. The plugin names a role and a key relative to
//! that role's prefix; the host checks the key, holds the credentials,
//! builds one client per role on first use and counts what was copied,
//! written and deleted for the step's result line.
//!
//! A location is a connection read the object-store way: `host` is the
//! endpoint URL (none: AWS), `database` is `bucket/prefix`, `user` the
//! access key id and the password its secret (neither: the AWS chain).

mod etag_memory;

use super::HostResult;
use super::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::connection::Connection;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::objects::{
    Copied, CopyMethod, Host, ListPage, LocationInfo, ObjectHead, ObjectInfo,
};
use crate::runtime::sandbox::StepState;
use crate::store::s3::{
    PutOptions, S3Options, S3Reader, S3Writer, abort_abandoned_uploads, start_journaled_upload,
};
use crate::store::s3_client::{self, AccessKey};
use crate::store::s3_errors;
use crate::store::upload_journal::UploadJournal;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use etag_memory::{EtagMemory, Seen};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use wasmtime::component::Resource;

/// Objects copied at once by one `copy` batch.
pub const OBJECTS_IN_FLIGHT: usize = 8;
/// HEADs of one `etags` call in flight (each a few hundred bytes).
const HEADS_IN_FLIGHT: usize = 16;
/// Listing pages of each role whose sizes and ETags the host keeps, so a
/// server-side copy of a listed key needs no HEAD: a plugin's copy batch
/// spans a few pages at most (1,000 keys a page; a key not kept is HEADed).
const PAGES_KEPT: usize = 4;
/// Of those, objects larger than one part streamed at once: each holds up
/// to `1 + STREAM_PARTS_IN_FLIGHT` part buffers, a small one at most one.
const LARGE_IN_FLIGHT: usize = 2;
/// Part size of streamed writes (S3's minimum, so small objects hold
/// little memory; grown for objects that would need more than 9,000 parts).
const STREAM_PART: usize = crate::store::s3::MIN_PART_SIZE;
const STREAM_PARTS_IN_FLIGHT: usize = 2;
/// Largest object CopyObject copies in one request; above, UploadPartCopy.
const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Part size of a server-side multipart copy.
const COPY_PART: u64 = 512 << 20;
/// Parts of one server-side multipart copy in flight (a request each; no
/// bytes pass through the host).
const COPY_PARTS_IN_FLIGHT: usize = 4;
/// Most parts one multipart upload may have (S3's limit).
const MAX_PARTS: u64 = 10_000;

/// The parts of a server-side copy of `size` bytes in `part`-byte ranges
/// (larger where `part` would need more than S3's 10,000 parts): part
/// number (from 1) and its `CopySourceRange` (inclusive bounds).
fn copy_ranges(size: u64, part: u64) -> impl Iterator<Item = (i32, String)> {
    let part = part.max(size.div_ceil(MAX_PARTS));
    (0..size)
        .step_by(part as usize)
        .enumerate()
        .map(move |(n, start)| {
            let end = (start + part).min(size) - 1;
            (n as i32 + 1, format!("bytes={start}-{end}"))
        })
}

/// User metadata a copy carries when its ETag will differ from its
/// source's: the source's ETag. A streamed or multipart copy gets an ETag
/// of its own (other parts), and so does a CopyObject of a
/// multipart-uploaded source (a whole-object MD5 on AWS); the plugin can
/// still tell it is a copy of this very source object.
pub const SOURCE_ETAG: &str = "envsync-source-etag";
/// Longest key S3 accepts, prefix included.
const MAX_KEY: usize = 1024;

/// One role's location as the operator configured it.
#[derive(Clone, Debug)]
pub struct ObjectLocation {
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Empty or ending in `/`.
    pub prefix: String,
    pub key: Option<AccessKey>,
    /// The region requests to it are signed for, when the location sets
    /// one (else the environment's S3 region).
    pub region: Option<String>,
}

impl ObjectLocation {
    /// Reads `conn` as a location (see the module comment).
    pub fn from_connection(conn: &Connection) -> Result<Self, String> {
        let endpoint = match &conn.host {
            None => None,
            Some(h) if h.starts_with("http://") || h.starts_with("https://") => {
                if conn.port.is_some() {
                    return Err(format!(
                        "the endpoint {h:?} is a URL; put the port in it instead of setting port"
                    ));
                }
                Some(h.trim_end_matches('/').to_string())
            }
            Some(h) => {
                return Err(format!(
                    "the object store endpoint {h:?} is not a URL: give host as \
                     \"https://s3.example.com\" (with the port, if any), or leave it out for AWS"
                ));
            }
        };
        let (bucket, prefix) = conn
            .database
            .split_once('/')
            .unwrap_or((&conn.database, ""));
        if bucket.is_empty() || bucket.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(format!(
                "{:?} names no bucket: give the location as BUCKET or BUCKET/PREFIX",
                conn.database
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            check_relative(prefix).map_err(|e| format!("the configured prefix: {e}"))?;
        }
        let key = match (&conn.user, &conn.password) {
            (Some(id), Some(secret)) => Some(AccessKey {
                id: id.clone(),
                secret: secret.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("user (the access key id) is set without its secret: set \
                            password_file or password_env to the secret access key"
                    .into());
            }
            (None, Some(_)) => {
                return Err("a password (secret access key) is set without user (the \
                            access key id)"
                    .into());
            }
        };
        Ok(ObjectLocation {
            endpoint,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            key,
            region: conn.region.clone(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.bucket,
            self.prefix,
            self.endpoint.as_deref().unwrap_or("AWS")
        )
    }

    /// Whether a server-side copy from `self` to `other` can be signed by
    /// one client: same endpoint, same credentials.
    fn same_account(&self, other: &ObjectLocation) -> bool {
        // One endpoint, one key and one region: a server-side copy is one
        // signed request to the target.
        self.endpoint == other.endpoint
            && self.region == other.region
            && match (&self.key, &other.key) {
                (None, None) => true,
                (Some(a), Some(b)) => a.id == b.id && a.secret.expose() == b.secret.expose(),
                _ => false,
            }
    }
}

/// Refuses a relative key that could leave the prefix or confuse a server:
/// empty, absolute, an empty, `.` or `..` segment, a backslash, a control
/// character. A trailing `/` is allowed only where `dir` (a listing prefix).
fn check_key(key: &str, dir: bool) -> Result<(), String> {
    if dir && key.is_empty() {
        return Ok(());
    }
    let body = if dir {
        key.strip_suffix('/').unwrap_or(key)
    } else {
        key
    };
    check_relative(body)
}

fn check_relative(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.starts_with('/') {
        return Err(format!(
            "{key:?} is absolute; keys are relative to the granted prefix"
        ));
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return Err(format!("{key:?} holds a backslash or a control character"));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "{key:?} has an empty, \".\" or \"..\" segment; keys must stay inside the granted prefix"
        ));
    }
    Ok(())
}

/// What the plugin did through this capability, counted by the host.
#[derive(Clone, Debug, Default)]
pub struct ObjectStats {
    pub copied: u64,
    pub server_side: u64,
    pub written: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Bytes copied and written.
    pub bytes: u64,
}

impl ObjectStats {
    /// The result line's part, none when the plugin used no object.
    pub fn summary(&self) -> Option<String> {
        if self.copied + self.written + self.deleted + self.unchanged == 0 {
            return None;
        }
        Some(format!(
            "objects: {} copied ({} server-side), {} written, {} unchanged, {} deleted; {}",
            self.copied,
            self.server_side,
            self.written,
            self.unchanged,
            self.deleted,
            crate::step::human_size(self.bytes)
        ))
    }
}

/// The locations of one step by role, their clients and the counts.
#[derive(Default)]
pub struct ObjectGrant {
    locations: BTreeMap<String, ObjectLocation>,
    /// Region and addressing of every client (the environment's S3 settings).
    options: S3Options,
    clients: BTreeMap<String, Client>,
    /// Sizes and ETags of the last `PAGES_KEPT` listing pages of each role,
    /// by full key.
    listed: BTreeMap<String, VecDeque<HashMap<String, Listed>>>,
    /// Per role, the next listing page, asked for as soon as the one before
    /// came back: a plugin merging two listings reads them alternately, so
    /// each side's next page is fetched while the other is read. Dropped
    /// (and its request aborted) when not asked for.
    next_pages: BTreeMap<String, NextPage>,
    /// Where the ETag memories and the upload journal live (none: nothing
    /// is remembered or journaled).
    state_dir: Option<PathBuf>,
    /// Endpoints (none: AWS) seen listing objects without ETags: only
    /// their buckets get an ETag memory.
    etagless: HashSet<Option<String>>,
    /// Open ETag memories by file, none where opening failed (said once).
    memories: BTreeMap<String, Option<EtagMemory>>,
    /// Per role, where its last listing page ended: the full prefix, the
    /// continuation it gave and its last full key, so the next page of
    /// that listing knows the range it covers.
    page_ends: BTreeMap<String, (String, String, String)>,
    pub stats: ObjectStats,
}

/// A listing page requested ahead: for which prefix and continuation.
struct NextPage {
    prefix: String,
    continuation: String,
    page: AbortOnDropHandle<Result<ListObjectsV2Output, ListError>>,
}

type ListError = aws_sdk_s3::error::SdkError<
    aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
    aws_sdk_s3::config::http::HttpResponse,
>;

/// One ListObjectsV2 page of `prefix` (full key prefix) in `bucket`.
async fn list_page(
    client: Client,
    bucket: String,
    prefix: String,
    continuation: Option<String>,
) -> Result<ListObjectsV2Output, ListError> {
    client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .set_continuation_token(continuation)
        .max_keys(1000)
        .send()
        .await
}

impl ObjectGrant {
    /// Grants the step's connections as object locations. A connection
    /// that is not one is left out, and the plugin is told why on use.
    pub fn new(
        connections: &BTreeMap<String, Connection>,
        options: &S3Options,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let locations = connections
            .iter()
            .filter_map(|(role, c)| Some((role.clone(), ObjectLocation::from_connection(c).ok()?)))
            .collect();
        ObjectGrant {
            locations,
            options: S3Options {
                endpoint: None,
                ..options.clone()
            },
            clients: BTreeMap::new(),
            listed: BTreeMap::new(),
            next_pages: BTreeMap::new(),
            state_dir,
            etagless: HashSet::new(),
            memories: BTreeMap::new(),
            page_ends: BTreeMap::new(),
            stats: ObjectStats::default(),
        }
    }

    /// The journal of this step's streamed uploads, in its state folder.
    fn journal(&self) -> UploadJournal {
        UploadJournal::in_state_dir(self.state_dir.as_deref())
    }

    /// The ETag memory of `location`'s bucket when its endpoint lists no
    /// ETags and there is a state folder; opened on first use.
    fn memory(&mut self, location: &ObjectLocation) -> Option<&EtagMemory> {
        if !self.etagless.contains(&location.endpoint) {
            return None;
        }
        let state_dir = self.state_dir.as_deref()?;
        self.memories
            .entry(etag_memory::file_id(location))
            .or_insert_with(|| match EtagMemory::open(state_dir, location) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(
                        "{} lists objects without ETags, and its ETag memory could not be \
                         opened ({e:#}): objects of equal size on both sides are compared with \
                         a HEAD each",
                        location.describe()
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Applies `change` to `location`'s ETag memory, if it has one. A
    /// failure costs HEADs later, not correctness: it is logged.
    fn with_memory(
        &mut self,
        location: &ObjectLocation,
        change: impl FnOnce(&EtagMemory) -> anyhow::Result<()>,
    ) {
        if let Some(m) = self.memory(location)
            && let Err(e) = change(m)
        {
            tracing::warn!("ETag memory {}: {e:#}", m.path().display());
        }
    }

    fn location(
        &self,
        role: &str,
        conns: &BTreeMap<String, Connection>,
    ) -> Result<&ObjectLocation, WitError> {
        if let Some(l) = self.locations.get(role) {
            return Ok(l);
        }
        Err(match conns.get(role) {
            None => WitError::Denied(format!(
                "this step has no {role:?} object location (roles: {})",
                conns.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(c) => WitError::InvalidParam(match ObjectLocation::from_connection(c) {
                Err(e) => format!("the {role} connection is not an object location: {e}"),
                Ok(_) => unreachable!("granted locations are the connections that parse"),
            }),
        })
    }

    /// The client of `role`, built (and its bucket checked) on first use.
    async fn client(
        &mut self,
        role: &str,
        conns: &BTreeMap<String, Connection>,
    ) -> Result<(Client, ObjectLocation), WitError> {
        let location = self.location(role, conns)?.clone();
        if let Some(c) = self.clients.get(role) {
            return Ok((c.clone(), location));
        }
        let options = S3Options {
            endpoint: location.endpoint.clone(),
            region: location
                .region
                .clone()
                .or_else(|| self.options.region.clone()),
            ..self.options.clone()
        };
        let what = location.describe();
        let (client, _) = s3_client::build(&options, location.key.as_ref(), &what)
            .await
            .map_err(|e| WitError::Io(format!("{role} location: {e:#}")))?;
        let at = format!(" at {}", location.endpoint.as_deref().unwrap_or("AWS"));
        if let Err(e) = client.head_bucket().bucket(&location.bucket).send().await {
            let failure = s3_errors::bucket_unusable(&e, &location.bucket, &at);
            return Err(WitError::Io(format!("{role} location: {failure}")));
        }
        // Uploads a killed earlier run left open in this bucket (streamed
        // copies of large objects) are aborted, as the artifact store does.
        abort_abandoned_uploads(&client, &location.bucket, &self.journal()).await;
        self.clients.insert(role.to_string(), client.clone());
        Ok((client, location))
    }

    /// The client of `role` and the full keys of `keys` in its location,
    /// each checked to stay inside the granted prefix: the one way a call
    /// naming keys reaches a bucket.
    async fn client_for<'k>(
        &mut self,
        role: &str,
        conns: &BTreeMap<String, Connection>,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(Client, ObjectLocation, Vec<String>), WitError> {
        let (client, location) = self.client(role, conns).await?;
        let full = keys
            .into_iter()
            .map(|k| full_key(&location, k))
            .collect::<Result<_, _>>()?;
        Ok((client, location, full))
    }

    /// For a page listed from a server that left ETags out: fills them
    /// from the bucket's ETag memory where size and second match, after
    /// forgetting what the page's range (`covered`, after a key or from
    /// the start, through a key or to the end of `full`) no longer holds.
    fn recall(
        &mut self,
        location: &ObjectLocation,
        full: &str,
        covered: Option<(Option<String>, Option<String>)>,
        objects: &mut [ObjectInfo],
    ) {
        if !objects.iter().any(|o| o.etag.is_empty()) {
            return;
        }
        self.etagless.insert(location.endpoint.clone());
        let prefix = &location.prefix;
        self.with_memory(location, |memory| {
            if let Some((after, through)) = &covered {
                let keys: Vec<String> = objects
                    .iter()
                    .map(|o| format!("{prefix}{}", o.key))
                    .collect();
                let listed: HashSet<&str> = keys.iter().map(String::as_str).collect();
                memory.forget_unlisted(full, after.as_deref(), through.as_deref(), &listed)?;
            }
            memory.fill(objects.iter_mut().map(|o| {
                (
                    format!("{prefix}{}", o.key),
                    o.size,
                    o.last_modified,
                    &mut o.etag,
                )
            }))?;
            Ok(())
        });
    }

    /// Remembers the sizes and ETags of a page `role` listed, dropping the
    /// oldest.
    fn remember_page(&mut self, role: &str, location: &ObjectLocation, page: &[ObjectInfo]) {
        let pages = self.listed.entry(role.to_string()).or_default();
        if pages.len() == PAGES_KEPT {
            pages.pop_front();
        }
        pages.push_back(
            page.iter()
                .map(|o| {
                    let listed = Listed {
                        size: o.size,
                        etag_known: !o.etag.is_empty(),
                        multipart: is_multipart_etag(&o.etag),
                    };
                    (format!("{}{}", location.prefix, o.key), listed)
                })
                .collect(),
        );
    }

    /// What a kept page of `role` listed for the full key `key`, if any.
    fn listed(&self, role: &str, key: &str) -> Option<Listed> {
        self.listed
            .get(role)?
            .iter()
            .rev()
            .find_map(|page| page.get(key).copied())
    }
}

/// A listed object as a server-side copy needs it.
#[derive(Clone, Copy, Debug)]
struct Listed {
    size: u64,
    /// The listing (or the ETag memory) gave its ETag.
    etag_known: bool,
    /// Its ETag is a multipart upload's (`<md5>-<parts>`).
    multipart: bool,
}

/// Whether an ETag (quotes removed) is a multipart upload's, `<hex>-<n>`.
fn is_multipart_etag(etag: &str) -> bool {
    etag.split_once('-').is_some_and(|(md5, parts)| {
        !md5.is_empty()
            && md5.bytes().all(|b| b.is_ascii_hexdigit())
            && !parts.is_empty()
            && parts.bytes().all(|b| b.is_ascii_digit())
    })
}

fn full_key(location: &ObjectLocation, key: &str) -> Result<String, WitError> {
    check_key(key, false).map_err(WitError::Denied)?;
    let full = format!("{}{key}", location.prefix);
    if full.len() > MAX_KEY {
        return Err(WitError::Denied(format!(
            "{key:?} is longer than S3's {MAX_KEY} bytes with the prefix"
        )));
    }
    Ok(full)
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

fn seconds(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.map(|t| t.secs()).unwrap_or_default()
}

fn io<E: std::error::Error + 'static>(what: &str, e: &E) -> WitError {
    WitError::Io(format!("{what}: {}", s3_errors::describe(e)))
}

/// The full keys `keys` as HEADs show them, `HEADS_IN_FLIGHT` at a time:
/// for servers (s3s-fs) that list objects without ETags. A key that cannot
/// be read (gone since the listing, say) is none, so the plugin compares
/// it as changed and its copy reports the error.
async fn head_all(client: &Client, bucket: &str, keys: Vec<String>) -> Vec<Option<Seen>> {
    let slots = Arc::new(Semaphore::new(HEADS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = vec![None; keys.len()];
    for (i, key) in keys.into_iter().enumerate() {
        let client = client.clone();
        let bucket = bucket.to_string();
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let r = client.head_object().bucket(bucket).key(&key).send().await;
            drop(slot);
            (i, r.ok().map(|h| seen_in_head(key, &h)))
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, s)) = done {
            seen[i] = s;
        }
    }
    seen
}

fn seen_in_head(key: String, h: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> Seen {
    Seen {
        key,
        size: h.content_length().unwrap_or(0).max(0) as u64,
        last_modified: seconds(h.last_modified()),
        etag: unquote(h.e_tag()),
    }
}

/// Sends `request`; the ETag and modification second the copy answered,
/// if both.
async fn send_copy(
    request: aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder,
    from_key: &str,
    to_key: &str,
) -> Result<Option<(String, i64)>, WitError> {
    let out = request
        .send()
        .await
        .map_err(|e| io(&format!("copying {from_key} to {to_key}"), &e))?;
    Ok(out
        .copy_object_result()
        .and_then(|r| Some((unquote(Some(r.e_tag()?)), r.last_modified()?.secs()))))
}

/// `bucket/key` percent-encoded for `x-amz-copy-source`.
fn copy_source(bucket: &str, key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, KEEP)
    )
}

/// The source's user metadata plus [`SOURCE_ETAG`].
fn metadata_with_source(
    metadata: Option<&HashMap<String, String>>,
    etag: Option<&str>,
) -> HashMap<String, String> {
    let mut metadata = metadata.cloned().unwrap_or_default();
    metadata.insert(SOURCE_ETAG.to_string(), unquote(etag));
    metadata
}

/// Both ends of one copy batch.
#[derive(Clone)]
struct Ends {
    from: (Client, ObjectLocation),
    to: (Client, ObjectLocation),
    server_side: bool,
    /// HEAD a source whose ETag no listing gave before a server-side copy,
    /// so the source's ETag memory learns it.
    head_unknown: bool,
    large: Arc<Semaphore>,
    journal: UploadJournal,
}

/// One object copied, and what the responses showed of both ends for the
/// ETag memories.
struct CopyOutcome {
    copied: Copied,
    source: Option<Seen>,
    /// None: the target changed and its ETag or second is not known.
    target: Option<Seen>,
}

impl Ends {
    /// Copies one object. `listed` is what a listing the host kept showed
    /// of it: a server-side copy of it below 5 GiB is then one CopyObject
    /// (the COPY directive keeps content type and metadata), no HEAD first,
    /// unless it was uploaded in parts (see [`Ends::copy_object_marked`])
    /// or its ETag is to be learnt (`head_unknown`).
    async fn copy_one(
        &self,
        from_key: String,
        to_key: String,
        listed: Option<Listed>,
    ) -> Result<CopyOutcome, WitError> {
        let (from, from_loc) = &self.from;
        let (to, to_loc) = &self.to;
        let target_seen = |size, out: Option<(String, i64)>| {
            out.map(|(etag, last_modified)| Seen {
                key: to_key.clone(),
                size,
                last_modified,
                etag,
            })
        };
        if let Some(l) = listed.filter(|l| {
            self.server_side
                && l.size <= MAX_SINGLE_COPY
                && !l.multipart
                && (l.etag_known || !self.head_unknown)
        }) {
            let out = self.copy_object(&from_key, &to_key).await?;
            return Ok(CopyOutcome {
                copied: Copied {
                    method: CopyMethod::ServerSide,
                    bytes: l.size,
                },
                source: None,
                target: target_seen(l.size, out),
            });
        }
        if self.server_side {
            let head = from
                .head_object()
                .bucket(&from_loc.bucket)
                .key(&from_key)
                .send()
                .await
                .map_err(|e| io(&format!("reading {from_key}"), &e))?;
            let source = seen_in_head(from_key.clone(), &head);
            let size = source.size;
            let out = if size > MAX_SINGLE_COPY {
                self.multipart_copy(&from_key, &to_key, size, &head).await?;
                None
            } else if is_multipart_etag(&source.etag) {
                self.copy_object_marked(&from_key, &to_key, &head).await?
            } else {
                self.copy_object(&from_key, &to_key).await?
            };
            return Ok(CopyOutcome {
                copied: Copied {
                    method: CopyMethod::ServerSide,
                    bytes: size,
                },
                source: Some(source),
                target: target_seen(size, out),
            });
        }
        // Streamed: the GET answers size, content type and metadata, so no
        // HEAD first. A body waiting for a large slot holds a connection,
        // not memory.
        let (mut reader, got) =
            S3Reader::open_with_head(from.clone(), &from_loc.bucket, from_key.clone())
                .await
                .map_err(|e| WitError::Io(format!("{e:#}")))?;
        let size = got.size;
        let part = STREAM_PART.max((size / 9_000) as usize + 1);
        let _large = if size as usize > part {
            Some(self.large.acquire().await.expect("never closed"))
        } else {
            None
        };
        let mut writer = Box::new(S3Writer::new(
            to.clone(),
            &to_loc.bucket,
            to_key.clone(),
            part,
            STREAM_PARTS_IN_FLIGHT,
            self.journal.clone(),
            PutOptions {
                new_only: false,
                content_type: got.content_type.clone(),
                metadata: Some(metadata_with_source(
                    got.metadata.as_ref(),
                    got.etag.as_deref(),
                )),
            },
        ));
        let mut buf = vec![0u8; (size as usize).clamp(8 << 10, 256 << 10)];
        let mut bytes = 0u64;
        let moved: std::io::Result<()> = async {
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                writer.write_all(&buf[..n]).await?;
                bytes += n as u64;
            }
            Ok(())
        }
        .await;
        use crate::store::ObjectWriter as _;
        if let Err(e) = moved {
            writer.abort().await;
            return Err(WitError::Io(format!("copying {from_key} to {to_key}: {e}")));
        }
        writer
            .finish()
            .await
            .map_err(|e| WitError::Io(format!("writing {to_key}: {e:#}")))?;
        let source = match (got.etag, got.last_modified) {
            (Some(etag), Some(last_modified)) => Some(Seen {
                key: from_key,
                size,
                last_modified,
                etag: unquote(Some(&etag)),
            }),
            _ => None,
        };
        // The upload's response has no modification time: the target is
        // learnt by the next compare's HEAD.
        Ok(CopyOutcome {
            copied: Copied {
                method: CopyMethod::Streamed,
                bytes,
            },
            source,
            target: None,
        })
    }

    /// One CopyObject, content type and user metadata copied with it.
    /// Returns the copy's ETag and modification second when the server
    /// gave them.
    async fn copy_object(
        &self,
        from_key: &str,
        to_key: &str,
    ) -> Result<Option<(String, i64)>, WitError> {
        let request = self
            .copy_request(from_key, to_key)
            .metadata_directive(MetadataDirective::Copy);
        send_copy(request, from_key, to_key).await
    }

    /// One CopyObject of a multipart-uploaded source, which gets a
    /// whole-object ETag unlike its source's: its metadata is replaced by
    /// the source's (from `head`) plus [`SOURCE_ETAG`], so a rerun
    /// recognises the copy (with one HEAD of it) instead of copying it
    /// again every run. The headers a REPLACE would drop are passed on.
    async fn copy_object_marked(
        &self,
        from_key: &str,
        to_key: &str,
        head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> Result<Option<(String, i64)>, WitError> {
        let request = self
            .copy_request(from_key, to_key)
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(metadata_with_source(head.metadata(), head.e_tag())))
            .set_content_type(head.content_type().map(str::to_string))
            .set_content_encoding(head.content_encoding().map(str::to_string))
            .set_content_disposition(head.content_disposition().map(str::to_string))
            .set_content_language(head.content_language().map(str::to_string))
            .set_cache_control(head.cache_control().map(str::to_string));
        send_copy(request, from_key, to_key).await
    }

    /// A CopyObject of `from_key` to `to_key`, directive and headers unset.
    fn copy_request(
        &self,
        from_key: &str,
        to_key: &str,
    ) -> aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder {
        self.to
            .0
            .copy_object()
            .bucket(&self.to.1.bucket)
            .key(to_key)
            .copy_source(copy_source(&self.from.1.bucket, from_key))
    }

    /// UploadPartCopy in `COPY_PART` ranges, for objects over 5 GiB.
    async fn multipart_copy(
        &self,
        from_key: &str,
        to_key: &str,
        size: u64,
        head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> Result<(), WitError> {
        let (to, to_loc) = &self.to;
        let what = format!("copying {from_key} to {to_key}");
        let request = to
            .create_multipart_upload()
            .bucket(&to_loc.bucket)
            .key(to_key)
            .set_content_type(head.content_type().map(str::to_string))
            .set_metadata(Some(metadata_with_source(head.metadata(), head.e_tag())));
        let (id, entry) = start_journaled_upload(&self.journal, &to_loc.bucket, to_key, request)
            .await
            .map_err(|e| WitError::Io(format!("{what}: {e:#}")))?;
        let source = copy_source(&self.from.1.bucket, from_key);
        // Parts are copied a few at a time: each is a request the server
        // works on alone (S3 copies one part at some tens of MiB/s).
        let slots = Arc::new(Semaphore::new(COPY_PARTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for (number, range) in copy_ranges(size, COPY_PART) {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            let request = to
                .upload_part_copy()
                .bucket(&to_loc.bucket)
                .key(to_key)
                .upload_id(&id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(range);
            tasks.spawn(async move {
                let out = request.send().await;
                drop(slot);
                out.map(|out| {
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|r| r.e_tag().map(str::to_string)),
                        )
                        .build()
                })
            });
        }
        let mut parts = Vec::new();
        let mut result = Ok(());
        // The first failure ends the copy; the other parts' requests are
        // dropped with the set.
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(part)) => parts.push(part),
                Ok(Err(e)) => {
                    result = Err(io(&what, &e));
                    break;
                }
                Err(e) => {
                    result = Err(WitError::Io(format!("{what}: a part copy failed: {e}")));
                    break;
                }
            }
        }
        drop(tasks);
        parts.sort_by_key(|p| p.part_number());
        if result.is_ok() {
            result = to
                .complete_multipart_upload()
                .bucket(&to_loc.bucket)
                .key(to_key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| io(&what, &e));
        }
        if result.is_err() {
            let aborted = to
                .abort_multipart_upload()
                .bucket(&to_loc.bucket)
                .key(to_key)
                .upload_id(&id)
                .send()
                .await;
            // Not aborted: the entry stays, and the next run aborts it.
            if aborted.is_err() {
                return result;
            }
        }
        entry.close();
        result
    }
}

/// A request the grant refused ends the host call with the plugin's typed
/// error; the call itself (the wasmtime result) succeeded.
macro_rules! or_refuse {
    ($result:expr) => {
        match $result {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl Host for StepState {
    async fn location(&mut self, role: String) -> HostResult<LocationInfo> {
        let conns = &self.job.connections;
        let here = or_refuse!(self.objects.location(&role, conns));
        let same = self
            .objects
            .locations
            .iter()
            .filter(|(r, _)| **r != role)
            .any(|(_, other)| here.same_account(other));
        Ok(Ok(LocationInfo {
            endpoint: here.endpoint.clone().unwrap_or_else(|| "aws".into()),
            bucket: here.bucket.clone(),
            prefix: here.prefix.clone(),
            same_account_as_other: same,
        }))
    }

    async fn list(
        &mut self,
        role: String,
        prefix: String,
        continuation: Option<String>,
    ) -> HostResult<ListPage> {
        if let Err(e) = check_key(&prefix, true) {
            return Ok(Err(WitError::Denied(e)));
        }
        let (client, location) =
            or_refuse!(self.objects.client(&role, &self.job.connections).await);
        let full = format!("{}{prefix}", location.prefix);
        // Where the page starts: after the last key of the page that gave
        // this continuation (unknown when it was not this role's last page).
        let after = match &continuation {
            None => Some(None),
            Some(c) => self
                .objects
                .page_ends
                .get(&role)
                .filter(|(p, next, _)| *p == full && next == c)
                .map(|(_, _, last)| Some(last.clone())),
        };
        let ahead = self.objects.next_pages.remove(&role).filter(|next| {
            next.prefix == full && continuation.as_deref() == Some(next.continuation.as_str())
        });
        // A read-ahead task that failed itself (it panicked) is asked again.
        let fetched = match ahead {
            Some(next) => next.page.await.ok(),
            None => None,
        };
        let page = match fetched {
            Some(page) => page,
            None => {
                let bucket = location.bucket.clone();
                list_page(client.clone(), bucket, full.clone(), continuation).await
            }
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => return Ok(Err(io(&format!("listing {}", location.describe()), &e))),
        };
        let mut objects: Vec<ObjectInfo> = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.strip_prefix(&location.prefix)?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: unquote(o.e_tag()),
                    last_modified: seconds(o.last_modified()),
                })
            })
            .collect();
        let continuation = if page.is_truncated() == Some(true) {
            page.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        let last = objects
            .last()
            .map(|o| format!("{}{}", location.prefix, o.key));
        // The keys the page covers: from `after` to its last key, or to
        // the end of the prefix on the last page.
        let covered = match (after, &continuation, &last) {
            (Some(after), None, _) => Some((after, None)),
            (Some(after), Some(_), Some(last)) => Some((after, Some(last.clone()))),
            _ => None,
        };
        self.objects.recall(&location, &full, covered, &mut objects);
        match (&continuation, last) {
            (Some(next), Some(last)) => {
                let end = (full.clone(), next.clone(), last);
                self.objects.page_ends.insert(role.clone(), end);
            }
            _ => {
                self.objects.page_ends.remove(&role);
            }
        }
        self.objects.remember_page(&role, &location, &objects);
        if let Some(next) = &continuation {
            let fetch = list_page(
                client,
                location.bucket.clone(),
                full.clone(),
                Some(next.clone()),
            );
            self.objects.next_pages.insert(
                role,
                NextPage {
                    prefix: full,
                    continuation: next.clone(),
                    page: AbortOnDropHandle::new(tokio::spawn(fetch)),
                },
            );
        }
        Ok(Ok(ListPage {
            objects,
            continuation,
        }))
    }

    async fn etags(&mut self, role: String, keys: Vec<String>) -> HostResult<Vec<String>> {
        let (client, location, full) = or_refuse!(
            self.objects
                .client_for(
                    &role,
                    &self.job.connections,
                    keys.iter().map(String::as_str)
                )
                .await
        );
        let seen = head_all(&client, &location.bucket, full).await;
        let known: Vec<Seen> = seen.iter().flatten().cloned().collect();
        self.objects
            .with_memory(&location, |memory| memory.remember(&known));
        Ok(Ok(seen
            .into_iter()
            .map(|s| s.map(|s| s.etag).unwrap_or_default())
            .collect()))
    }

    async fn head(&mut self, role: String, key: String) -> HostResult<Option<ObjectHead>> {
        let (client, location, full) = or_refuse!(
            self.objects
                .client_for(&role, &self.job.connections, [key.as_str()])
                .await
        );
        let full = full.into_iter().next().expect("one key asked, one given");
        match client
            .head_object()
            .bucket(&location.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(h) => {
                let seen = seen_in_head(full, &h);
                self.objects.with_memory(&location, |memory| {
                    memory.remember(std::slice::from_ref(&seen))
                });
                Ok(Ok(Some(ObjectHead {
                    info: ObjectInfo {
                        key,
                        size: seen.size,
                        etag: seen.etag,
                        last_modified: seen.last_modified,
                    },
                    content_type: h.content_type().map(str::to_string),
                    metadata: h
                        .metadata()
                        .map(|m| {
                            let mut m: Vec<_> =
                                m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                            m.sort();
                            m
                        })
                        .unwrap_or_default(),
                })))
            }
            Err(e)
                if e.code() == Some("NotFound")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(Ok(None))
            }
            Err(e) => Ok(Err(io(&format!("reading {full}"), &e))),
        }
    }

    async fn read(&mut self, role: String, key: String) -> HostResult<Resource<ByteSource>> {
        let (client, location, full) = or_refuse!(
            self.objects
                .client_for(&role, &self.job.connections, [key.as_str()])
                .await
        );
        let full = full.into_iter().next().expect("one key asked, one given");
        match S3Reader::open(client, &location.bucket, full).await {
            Ok(reader) => {
                let source = ByteSource::new(
                    format!("object {key} ({role})"),
                    SourceKind::Pipe(Box::new(reader)),
                );
                Ok(Ok(self.table.push(source)?))
            }
            Err(e) => Ok(Err(WitError::Io(format!("{e:#}")))),
        }
    }

    async fn write(
        &mut self,
        role: String,
        key: String,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> HostResult<Resource<ByteSink>> {
        let (client, location, full) = or_refuse!(
            self.objects
                .client_for(&role, &self.job.connections, [key.as_str()])
                .await
        );
        let full = full.into_iter().next().expect("one key asked, one given");
        // Its new ETag and second are learnt by a later HEAD.
        self.objects
            .with_memory(&location, |memory| memory.forget([full.as_str()]));
        let writer = S3Writer::new(
            client,
            &location.bucket,
            full,
            STREAM_PART,
            STREAM_PARTS_IN_FLIGHT,
            self.objects.journal(),
            PutOptions {
                new_only: false,
                content_type,
                metadata: (!metadata.is_empty())
                    .then(|| metadata.into_iter().collect::<HashMap<_, _>>()),
            },
        );
        let sink = ByteSink::new(
            format!("object {key} ({role})"),
            SinkKind::Object(Box::new(writer)),
        );
        Ok(Ok(self.table.push(sink)?))
    }

    async fn copy(
        &mut self,
        from_role: String,
        to_role: String,
        keys: Vec<(String, String)>,
    ) -> HostResult<Vec<Result<Copied, WitError>>> {
        let conns = &self.job.connections;
        let (from_client, from, from_keys) = or_refuse!(
            self.objects
                .client_for(&from_role, conns, keys.iter().map(|(a, _)| a.as_str()))
                .await
        );
        let (to_client, to, to_keys) = or_refuse!(
            self.objects
                .client_for(&to_role, conns, keys.iter().map(|(_, b)| b.as_str()))
                .await
        );
        let pairs = from_keys.into_iter().zip(to_keys);
        let ends = Ends {
            server_side: from.same_account(&to),
            head_unknown: self.objects.memory(&from).is_some(),
            from: (from_client, from.clone()),
            to: (to_client, to.clone()),
            large: Arc::new(Semaphore::new(LARGE_IN_FLIGHT)),
            journal: self.objects.journal(),
        };
        let slots = Arc::new(Semaphore::new(OBJECTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (a, b)) in pairs.enumerate() {
            let ends = ends.clone();
            let listed = self.objects.listed(&from_role, &a);
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            tasks.spawn(async move {
                let result = ends.copy_one(a, b, listed).await;
                drop(slot);
                (i, result)
            });
        }
        let mut results: Vec<Option<Result<Copied, WitError>>> = vec![None; keys.len()];
        let (mut sources, mut targets, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(done) = tasks.join_next().await {
            let (i, result) = done?;
            let result = match result {
                Ok(CopyOutcome {
                    copied,
                    source,
                    target: Some(target),
                }) => {
                    sources.extend(source);
                    targets.push(target);
                    Ok(copied)
                }
                other => {
                    changed.push(format!("{}{}", to.prefix, keys[i].1));
                    other.map(|outcome| {
                        sources.extend(outcome.source);
                        outcome.copied
                    })
                }
            };
            if let Ok(c) = &result {
                self.objects.stats.copied += 1;
                self.objects.stats.bytes += c.bytes;
                if c.method == CopyMethod::ServerSide {
                    self.objects.stats.server_side += 1;
                }
            }
            results[i] = Some(result);
        }
        self.objects
            .with_memory(&from, |memory| memory.remember(&sources));
        self.objects.with_memory(&to, |memory| {
            memory.remember(&targets)?;
            memory.forget(changed.iter().map(String::as_str))
        });
        Ok(Ok(results
            .into_iter()
            .map(|r| r.expect("every task answered"))
            .collect()))
    }

    async fn delete(&mut self, role: String, keys: Vec<String>) -> HostResult<u32> {
        let (client, location, full) = or_refuse!(
            self.objects
                .client_for(
                    &role,
                    &self.job.connections,
                    keys.iter().map(String::as_str)
                )
                .await
        );
        self.objects.with_memory(&location, |memory| {
            memory.forget(full.iter().map(String::as_str))
        });
        let mut tasks = tokio::task::JoinSet::new();
        let slots = Arc::new(Semaphore::new(OBJECTS_IN_FLIGHT));
        for key in full {
            let client = client.clone();
            let bucket = location.bucket.clone();
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            tasks.spawn(async move {
                let r = client.delete_object().bucket(bucket).key(&key).send().await;
                drop(slot);
                r.map_err(|e| io(&format!("deleting {key}"), &e))
            });
        }
        let mut deleted = 0u32;
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            match done? {
                Ok(_) => deleted += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.objects.stats.deleted += deleted as u64;
        Ok(match first_error {
            Some(e) => Err(e),
            None => Ok(deleted),
        })
    }

    async fn note_unchanged(&mut self, count: u64) -> wasmtime::Result<()> {
        self.objects.stats.unchanged += count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Secret;

    #[test]
    fn keys_cannot_leave_the_prefix() {
        for ok in ["a", "a/b.pdf", "2026/11/x y.png", "é/ü"] {
            assert!(check_key(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../other",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(check_key(bad, false).is_err(), "{bad:?}");
        }
        assert!(check_key("", true).is_ok());
        assert!(check_key("dir/", true).is_ok());
        assert!(check_key("../", true).is_err());
        assert!(check_key("/", true).is_err());
    }

    fn conn(host: Option<&str>, database: &str) -> Connection {
        Connection {
            database: database.into(),
            host: host.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn connections_read_as_locations() {
        let l = ObjectLocation::from_connection(&conn(Some("http://127.0.0.1:9000/"), "b/up/x/"))
            .unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "up/x/"));
        let l = ObjectLocation::from_connection(&conn(None, "bucket")).unwrap();
        assert_eq!((l.endpoint, l.prefix.as_str()), (None, ""));
        assert!(ObjectLocation::from_connection(&conn(Some("minio"), "b")).is_err());
        assert!(ObjectLocation::from_connection(&conn(None, "/x")).is_err());
        assert!(ObjectLocation::from_connection(&conn(None, "b/../c")).is_err());
        let mut c = conn(None, "b");
        c.user = Some("AKID".into());
        assert!(ObjectLocation::from_connection(&c).is_err());
        c.password = Some(Secret::new("s".into()));
        assert_eq!(
            ObjectLocation::from_connection(&c).unwrap().key.unwrap().id,
            "AKID"
        );
    }

    #[test]
    fn server_side_copies_need_one_endpoint_and_one_key() {
        let key = |id: &str| {
            Some(AccessKey {
                id: id.into(),
                secret: Secret::new("s".into()),
            })
        };
        let at = |e: &str, k| ObjectLocation {
            endpoint: Some(e.into()),
            bucket: "b".into(),
            prefix: String::new(),
            key: k,
            region: None,
        };
        assert!(at("http://a", key("1")).same_account(&at("http://a", key("1"))));
        assert!(!at("http://a", key("1")).same_account(&at("http://a", key("2"))));
        assert!(!at("http://a", key("1")).same_account(&at("http://b", key("1"))));
        assert!(!at("http://a", None).same_account(&at("http://a", key("1"))));
    }

    #[test]
    fn a_copy_just_over_5_gib_is_eleven_ranges_covering_every_byte_once() {
        let size = MAX_SINGLE_COPY + 1;
        let ranges: Vec<_> = copy_ranges(size, COPY_PART).collect();
        assert_eq!(ranges.len(), 11);
        assert_eq!(ranges[0], (1, format!("bytes=0-{}", COPY_PART - 1)));
        assert_eq!(
            ranges[10],
            (11, format!("bytes={size_1}-{size_1}", size_1 = size - 1))
        );
        let mut next = 0;
        for (i, (number, range)) in ranges.iter().enumerate() {
            assert_eq!(*number, i as i32 + 1);
            let (start, end) = range["bytes=".len()..].split_once('-').unwrap();
            assert_eq!(start.parse::<u64>().unwrap(), next, "{range}");
            next = end.parse::<u64>().unwrap() + 1;
        }
        assert_eq!(next, size);
        // S3 allows at most 10,000 parts: 5 TiB, its largest object, fits.
        assert!(copy_ranges(5 << 40, COPY_PART).count() <= 10_000);
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(copy_source("b", "a b/ü+x.pdf"), "b/a%20b/%C3%BC%2Bx.pdf");
    }

    #[test]
    fn multipart_etags_are_told_from_whole_object_ones() {
        assert!(is_multipart_etag("552cffe21aed74fd1fc85956ace8c1ac-2"));
        assert!(is_multipart_etag("552cffe21aed74fd1fc85956ace8c1ac-10000"));
        for plain in [
            "28c4a562cb035ddc3ae1772aa136f883",
            "",
            "-2",
            "abc-",
            "abc-x2",
            "x-2",
        ] {
            assert!(!is_multipart_etag(plain), "{plain:?}");
        }
    }
}
