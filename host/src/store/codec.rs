//! Streaming transforms between a plugin's bytes and the stored bytes:
//! compression (zstd, gzip) and client-side encryption to age recipients.
//!
//! - Backup, [`encode_writer`]: plugin bytes → compress → encrypt → upload.
//! - Restore, [`decode_reader`]: download → decrypt → decompress → plugin.
//!
//! Every layer streams through a small fixed buffer (the compressor's window,
//! one 64 KiB age chunk, a few I/O buffers), so memory does not grow with the
//! artifact. The manifest records [`Codec::compression_manifest_name`] and
//! [`Codec::encryption_manifest_name`]; restore rebuilds the codec with
//! [`Codec::from_manifest`].

use crate::failure::{Failure, Kind};
use anyhow::{Context as _, Result};
use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio_util::compat::{
    FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt, TokioAsyncReadCompatExt,
    TokioAsyncWriteCompatExt,
};

/// zstd level used when none is given: fast, and already far smaller than
/// the plain text of a dump.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// gzip level used when none is given (the `gzip` tool's default).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Buffer between the store's stream and the decoders.
const READ_BUFFER: usize = 64 * 1024;

/// How the plugin's bytes are compressed before they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
    Gzip { level: u32 },
}

impl Compression {
    /// zstd at [`DEFAULT_ZSTD_LEVEL`].
    pub fn zstd() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// gzip at [`DEFAULT_GZIP_LEVEL`].
    pub fn gzip() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }

    /// The name the manifest records: `none`, `zstd` or `gzip`.
    pub fn manifest_name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd { .. } => "zstd",
            Compression::Gzip { .. } => "gzip",
        }
    }

    /// Reads a manifest's compression name back. The level does not matter
    /// for decoding, so it is the default.
    pub fn from_manifest(name: &str) -> Result<Self> {
        match name {
            "none" | "" => Ok(Compression::None),
            "zstd" => Ok(Compression::zstd()),
            "gzip" => Ok(Compression::gzip()),
            other => Err(Failure::new(
                Kind::ArtifactRejected,
                format!(
                    "the manifest says the artifact is compressed with {other:?}, which this \
                     envsync-host does not know (it reads none, zstd and gzip); use a newer envsync-host"
                ),
            )
            .into()),
        }
    }

    /// What the compression appends to the artifact's key: `.zst`, `.gz`
    /// or nothing.
    pub fn extension_suffix(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ".zst",
            Compression::Gzip { .. } => ".gz",
        }
    }
}

/// `none`, `zstd`, `zstd:LEVEL` (1–22), `gzip`, `gzip:LEVEL` (1–9), as
/// given on the command line or in the config.
impl FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let usage = |why: String| -> anyhow::Error { Failure::new(Kind::Usage, why).into() };
        let (name, level) = match text.trim().split_once(':') {
            Some((name, level)) => (name.trim(), Some(level.trim())),
            None => (text.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("none", None) => Ok(Compression::None),
            ("zstd", None) => Ok(Compression::zstd()),
            ("gzip", None) => Ok(Compression::gzip()),
            ("zstd", Some(level)) => match level.parse::<i32>() {
                Ok(level @ 1..=22) => Ok(Compression::Zstd { level }),
                _ => Err(usage(format!(
                    "compression {text:?}: the zstd level must be a number from 1 to 22"
                ))),
            },
            ("gzip", Some(level)) => match level.parse::<u32>() {
                Ok(level @ 1..=9) => Ok(Compression::Gzip { level }),
                _ => Err(usage(format!(
                    "compression {text:?}: the gzip level must be a number from 1 to 9"
                ))),
            },
            _ => Err(usage(format!(
                "unknown compression {text:?}: use none, zstd, zstd:LEVEL, gzip or gzip:LEVEL"
            ))),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
        }
    }
}

/// Decides the compression for an artifact: zstd unless the plugin's format
/// is already compressed, and never compression on top of compression.
/// Returns the choice and, when a request was refused, a warning to log.
pub fn choose_compression(
    requested: Option<Compression>,
    format_is_compressed: bool,
) -> (Compression, Option<String>) {
    match (requested, format_is_compressed) {
        (None, false) => (Compression::zstd(), None),
        (None, true) => (Compression::None, None),
        (Some(requested), false) => (requested, None),
        (Some(Compression::None), true) => (Compression::None, None),
        (Some(requested), true) => (
            Compression::None,
            Some(format!(
                "not compressing with {}: the artifact format is already compressed and \
                 envsync never double-compresses; storing it as the plugin wrote it",
                requested.manifest_name()
            )),
        ),
    }
}

/// Encryption to age X25519 recipients (`age1…`). On restore, read from a
/// manifest, `recipients` is empty: decryption needs identities, not them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encryption {
    pub recipients: Vec<String>,
}

impl Encryption {
    /// Checks every recipient up front; at least one is needed.
    pub fn new(recipients: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self> {
        let recipients: Vec<String> = recipients
            .into_iter()
            .map(|r| r.as_ref().trim().to_string())
            .collect();
        if recipients.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                "encryption needs at least one age recipient (age1…): pass --recipient or a recipients file",
            )
            .into());
        }
        for recipient in &recipients {
            parse_recipient(recipient)?;
        }
        Ok(Encryption { recipients })
    }

    /// Recipients given one by one plus those listed in recipients files.
    pub fn from_args(recipients: &[String], recipients_files: &[PathBuf]) -> Result<Self> {
        let mut all = recipients.to_vec();
        for path in recipients_files {
            all.extend(read_recipients_file(path)?);
        }
        Encryption::new(all)
    }

    /// The recipients (`age1…`); empty when read back from a manifest.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// The name the manifest records.
    pub fn manifest_name(&self) -> &'static str {
        "age"
    }

    /// Reads a manifest's encryption name back.
    pub fn from_manifest(name: &str) -> Result<Self> {
        match name {
            "age" => Ok(Encryption { recipients: vec![] }),
            other => Err(Failure::new(
                Kind::ArtifactRejected,
                format!(
                    "the manifest says the artifact is encrypted with {other:?}, which this \
                     envsync-host does not know (it reads age); use a newer envsync-host"
                ),
            )
            .into()),
        }
    }

    fn parsed_recipients(&self) -> Result<Vec<age::x25519::Recipient>> {
        if self.recipients.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                "encryption needs at least one age recipient (age1…)",
            )
            .into());
        }
        self.recipients.iter().map(|r| parse_recipient(r)).collect()
    }
}

/// Parses one X25519 recipient, `age1…` as `age-keygen` prints it.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient> {
    let text = text.trim();
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        // Never echo a secret key back.
        return Err(Failure::new(
            Kind::Usage,
            "not an age recipient: that is an age identity (a secret key); pass its public key \
             instead (`age-keygen -y FILE` prints it)",
        )
        .into());
    }
    age::x25519::Recipient::from_str(text).map_err(|why| {
        Failure::new(
            Kind::Usage,
            format!("not an age recipient: {text:?} ({why}; expected an X25519 recipient age1…)"),
        )
        .into()
    })
}

/// Reads a recipients file: one recipient per line; blank lines and lines
/// starting with `#` are skipped. Every recipient is checked.
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Kind::Usage,
            format!("cannot read recipients file {}: {e}", path.display()),
        )
    })?;
    let mut recipients = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(e) = parse_recipient(line) {
            return Err(Failure::new(
                Kind::Usage,
                format!("{}, line {}: {e}", path.display(), number + 1),
            )
            .into());
        }
        recipients.push(line.to_string());
    }
    if recipients.is_empty() {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "recipients file {} lists no age recipient (age1…)",
                path.display()
            ),
        )
        .into());
    }
    Ok(recipients)
}

/// The transforms between the plugin's bytes and the stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub encryption: Option<Encryption>,
}

impl Codec {
    /// Stored as the plugin wrote it.
    pub fn plain() -> Self {
        Codec {
            compression: Compression::None,
            encryption: None,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// What the codec appends to the plugin's extension in the key:
    /// `.zst`, `.gz`, `.zst.age`, `.gz.age`, `.age` or nothing.
    pub fn extension_suffix(&self) -> String {
        let mut suffix = self.compression.extension_suffix().to_string();
        if self.encryption.is_some() {
            suffix.push_str(".age");
        }
        suffix
    }

    /// The manifest's compression field.
    pub fn compression_manifest_name(&self) -> &'static str {
        self.compression.manifest_name()
    }

    /// The manifest's encryption field; None when not encrypted.
    pub fn encryption_manifest_name(&self) -> Option<&'static str> {
        self.encryption.as_ref().map(Encryption::manifest_name)
    }

    /// Rebuilds the codec a manifest records, for restore. `encryption`
    /// None, `""` or `"none"` means not encrypted.
    pub fn from_manifest(compression: &str, encryption: Option<&str>) -> Result<Self> {
        let encryption = match encryption {
            None | Some("") | Some("none") => None,
            Some(name) => Some(Encryption::from_manifest(name)?),
        };
        Ok(Codec {
            compression: Compression::from_manifest(compression)?,
            encryption,
        })
    }

    fn describe(&self) -> String {
        match (&self.compression, &self.encryption) {
            (Compression::None, None) => "plain".into(),
            (Compression::None, Some(_)) => "age-encrypted".into(),
            (c, None) => format!("{}-compressed", c.manifest_name()),
            (c, Some(_)) => format!("{}-compressed, age-encrypted", c.manifest_name()),
        }
    }
}

/// age identities for restore, with the files they came from (for messages).
#[derive(Default)]
pub struct Identities {
    files: Vec<PathBuf>,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// No identities: restoring an encrypted artifact will say to pass one.
    pub fn none() -> Self {
        Identities::default()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The files the identities were read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn describe_files(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("files", &self.files)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Loads age identity files as `age-keygen` writes them: `AGE-SECRET-KEY-1…`
/// lines; blank lines and `#` comments are skipped. Each file must hold at
/// least one identity.
pub fn load_identities(paths: &[PathBuf]) -> Result<Identities> {
    let mut identities = Identities::default();
    for path in paths {
        let file = std::fs::File::open(path).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::NotFound {
                "it does not exist".to_string()
            } else {
                e.to_string()
            };
            Failure::new(
                Kind::Usage,
                format!("cannot read identity file {}: {why}", path.display()),
            )
        })?;
        let parsed = age::IdentityFile::from_buffer(io::BufReader::new(file)).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::InvalidData {
                "; an identity file holds AGE-SECRET-KEY-1… lines as age-keygen writes them \
                     (age1… recipients are public keys, not identities)"
            } else {
                ""
            };
            Failure::new(
                Kind::Usage,
                format!("cannot read identity file {}: {e}{hint}", path.display()),
            )
        })?;
        let keys = parsed.into_identities().map_err(|e| {
            Failure::new(
                Kind::Usage,
                format!("cannot use identity file {}: {e}", path.display()),
            )
        })?;
        if keys.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                format!(
                    "identity file {} holds no age identity (an AGE-SECRET-KEY-1… line as \
                     age-keygen writes it)",
                    path.display()
                ),
            )
            .into());
        }
        identities.files.push(path.clone());
        identities.keys.extend(keys);
    }
    Ok(identities)
}

// ---------------------------------------------------------------------------
// Backup direction.

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

// ---------------------------------------------------------------------------
// Restore direction.

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

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use tokio::io::AsyncReadExt;

    /// ~compressible text with random runs, so every codec has work to do.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(len + 128);
        let mut row = 0u64;
        while out.len() < len {
            let r = next();
            if r.is_multiple_of(5) {
                for _ in 0..8 {
                    out.extend_from_slice(&next().to_le_bytes());
                }
            } else {
                row += 1;
                out.extend_from_slice(
                    format!(
                        "{row}\tcustomer-{}\t{}.{:02}\tshipped\n",
                        r % 10_000,
                        r % 997,
                        r % 100
                    )
                    .as_bytes(),
                );
            }
        }
        out.truncate(len);
        out
    }

    /// An upload that takes a few bytes at a time, is sometimes not ready,
    /// and remembers whether it was shut down.
    struct Trickle {
        data: Vec<u8>,
        max: usize,
        tick: usize,
        shut_down: bool,
    }

    impl Trickle {
        fn new(max: usize) -> Self {
            Trickle {
                data: Vec::new(),
                max,
                tick: 0,
                shut_down: false,
            }
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.tick += 1;
            if self.tick.is_multiple_of(3) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.data.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A download that gives a few bytes at a time, is sometimes not ready,
    /// and can fail like a dropped connection.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        max: usize,
        tick: usize,
        fail_at: Option<usize>,
    }

    impl Dribble {
        fn new(data: Vec<u8>, max: usize) -> Self {
            Dribble {
                data,
                pos: 0,
                max,
                tick: 0,
                fail_at: None,
            }
        }
    }

    impl AsyncRead for Dribble {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.tick += 1;
            if self.tick.is_multiple_of(4) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.fail_at.is_some_and(|at| self.pos >= at) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "store connection reset by peer",
                )));
            }
            let mut end = (self.pos + self.max.min(buf.remaining())).min(self.data.len());
            if let Some(at) = self.fail_at {
                end = end.min(at.max(self.pos));
            }
            buf.put_slice(&self.data[self.pos..end]);
            self.pos = end;
            Poll::Ready(Ok(()))
        }
    }

    const WRITE_SIZES: [usize; 6] = [1, 7, 4093, 65_537, 100_003, 13];
    const READ_SIZES: [usize; 4] = [3, 8191, 65_536, 17];

    async fn encode(data: &[u8], codec: &Codec) -> Vec<u8> {
        let mut writer = encode_writer_over(Trickle::new(997), codec).unwrap();
        let mut rest = data;
        for size in WRITE_SIZES.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*size).min(rest.len());
            writer.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
        let inner = writer.finish().await.unwrap();
        assert!(!inner.shut_down, "the inner writer must stay open");
        inner.data
    }

    async fn read_all(mut reader: Box<dyn AsyncRead + Send + Unpin>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        for size in READ_SIZES.iter().cycle() {
            let n = reader.read(&mut buf[..*size]).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    async fn decode(stored: Vec<u8>, codec: &Codec, ids: &Identities) -> Result<Vec<u8>> {
        let reader = decode_reader(Dribble::new(stored, 1531), codec, ids, "db/a.dump").await?;
        Ok(read_all(reader).await?)
    }

    struct Keys {
        _dir: tempfile::TempDir,
        recipient: String,
        identity_file: PathBuf,
        other_file: PathBuf,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, id: &age::x25519::Identity| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!(
                    "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{}\n",
                    id.to_public(),
                    id.to_string().expose_secret()
                ),
            )
            .unwrap();
            path
        };
        let ours = age::x25519::Identity::generate();
        let theirs = age::x25519::Identity::generate();
        Keys {
            recipient: ours.to_public().to_string(),
            identity_file: write("key.txt", &ours),
            other_file: write("other.txt", &theirs),
            _dir: dir,
        }
    }

    fn all_codecs(recipient: &str) -> Vec<Codec> {
        let mut codecs = Vec::new();
        for compression in [Compression::None, Compression::zstd(), Compression::gzip()] {
            for encrypted in [false, true] {
                codecs.push(Codec {
                    compression,
                    encryption: encrypted
                        .then(|| Encryption::new([recipient.to_string()]).unwrap()),
                });
            }
        }
        codecs
    }

    #[tokio::test]
    async fn codec_round_trips_every_combination() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        let data = sample(5 * 1024 * 1024 + 12_345, 7);
        for codec in all_codecs(&keys.recipient) {
            let stored = encode(&data, &codec).await;
            match (&codec.compression, codec.is_encrypted()) {
                (_, true) => assert!(stored.starts_with(b"age-encryption.org/v1\n"), "{codec:?}"),
                (Compression::Zstd { .. }, false) => {
                    assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]))
                }
                (Compression::Gzip { .. }, false) => assert!(stored.starts_with(&[0x1f, 0x8b])),
                (Compression::None, false) => assert_eq!(stored, data),
            }
            if codec.compression != Compression::None {
                assert!(
                    stored.len() < data.len() * 3 / 4,
                    "{codec:?} did not compress"
                );
            }
            // The manifest round trip gives a codec that decodes it.
            let restored = Codec::from_manifest(
                codec.compression_manifest_name(),
                codec.encryption_manifest_name(),
            )
            .unwrap();
            let back = decode(stored, &restored, &ids).await.unwrap();
            assert!(back == data, "{codec:?}: round trip differs");
        }
    }

    #[tokio::test]
    async fn codec_concatenated_frames_decode_whole() {
        // As `cat a.zst b.zst | zstd -d` (and gzip) do.
        for compression in [Compression::zstd(), Compression::gzip()] {
            let codec = Codec {
                compression,
                encryption: None,
            };
            let mut stored = encode(b"first part\n", &codec).await;
            stored.extend(encode(b"second part\n", &codec).await);
            let back = decode(stored, &codec, &Identities::none()).await.unwrap();
            assert_eq!(back, b"first part\nsecond part\n", "{compression}");
        }
    }

    #[tokio::test]
    async fn codec_empty_input_round_trips() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        for codec in all_codecs(&keys.recipient) {
            let stored = encode(b"", &codec).await;
            assert_eq!(stored.is_empty(), codec == Codec::plain(), "{codec:?}");
            let back = decode(stored, &codec, &ids).await.unwrap();
            assert!(back.is_empty(), "{codec:?}");
        }
    }

    #[tokio::test]
    async fn codec_streams_without_buffering_everything() {
        let keys = keys();
        // Random bytes do not compress: most of them must reach the upload
        // before the end.
        let data = sample(4 * 1024 * 1024, 3)
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ (i as u8).wrapping_mul(151))
            .collect::<Vec<_>>();
        for codec in all_codecs(&keys.recipient) {
            let bottom_probe = Arc::new(Mutex::new(0usize));
            struct Probe(Arc<Mutex<usize>>);
            impl AsyncWrite for Probe {
                fn poll_write(
                    self: Pin<&mut Self>,
                    _: &mut Context<'_>,
                    buf: &[u8],
                ) -> Poll<io::Result<usize>> {
                    *self.0.lock().unwrap() += buf.len();
                    Poll::Ready(Ok(buf.len()))
                }
                fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                    Poll::Ready(Ok(()))
                }
                fn poll_shutdown(
                    self: Pin<&mut Self>,
                    _: &mut Context<'_>,
                ) -> Poll<io::Result<()>> {
                    Poll::Ready(Ok(()))
                }
            }
            let mut writer = encode_writer_over(Probe(bottom_probe.clone()), &codec).unwrap();
            writer.write_all(&data).await.unwrap();
            let before_finish = *bottom_probe.lock().unwrap();
            assert!(
                before_finish > data.len() / 2,
                "{codec:?}: only {before_finish} bytes reached the upload before finish"
            );
            writer.finish().await.unwrap();
        }
    }

    #[tokio::test]
    async fn codec_shutdown_then_finish_keeps_inner_open() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        let codec = Codec {
            compression: Compression::zstd(),
            encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
        };
        // The default type parameter: a boxed writer in, a boxed writer out.
        let inner: Box<dyn AsyncWrite + Send + Unpin> = Box::new(Vec::<u8>::new());
        let mut writer: EncodeWriter = encode_writer(inner, &codec).unwrap();
        writer.write_all(b"hello, world\n").await.unwrap();
        writer.shutdown().await.unwrap();
        writer.shutdown().await.unwrap();
        let err = writer.write_all(b"more").await.unwrap_err();
        assert!(err.to_string().contains("already finished"), "{err}");
        let _ = writer.finish().await.unwrap();

        // Same chain over a Vec we can read back.
        let mut writer = encode_writer_over(Trickle::new(5), &codec).unwrap();
        writer.write_all(b"hello, world\n").await.unwrap();
        writer.shutdown().await.unwrap();
        let inner = writer.finish().await.unwrap();
        assert!(!inner.shut_down);
        let back = decode(inner.data, &codec, &ids).await.unwrap();
        assert_eq!(back, b"hello, world\n");
    }

    #[tokio::test]
    async fn codec_two_recipients_either_identity_decrypts() {
        let keys = keys();
        let other = age::x25519::Identity::generate();
        let codec = Codec {
            compression: Compression::gzip(),
            encryption: Some(
                Encryption::new([keys.recipient.clone(), other.to_public().to_string()]).unwrap(),
            ),
        };
        let data = sample(300_000, 11);
        let stored = encode(&data, &codec).await;
        // One wrong file and one right file: the right one is found.
        let ids = load_identities(&[keys.other_file.clone(), keys.identity_file.clone()]).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(decode(stored.clone(), &codec, &ids).await.unwrap(), data);
        let mut only_other = Identities::none();
        only_other.files.push(PathBuf::from("mem"));
        only_other.keys.push(Box::new(other));
        assert_eq!(decode(stored, &codec, &only_other).await.unwrap(), data);
    }

    #[tokio::test]
    async fn codec_wrong_identity_is_a_clear_error() {
        let keys = keys();
        let codec = Codec {
            compression: Compression::zstd(),
            encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
        };
        let stored = encode(&sample(10_000, 1), &codec).await;
        let wrong = load_identities(std::slice::from_ref(&keys.other_file)).unwrap();
        let err = decode(stored, &codec, &wrong).await.unwrap_err();
        let text = format!("{err:#}");
        assert_eq!(
            text,
            format!(
                "artifact db/a.dump is encrypted to other recipients: none of the identities in {} \
                 can decrypt it; pass the right --identity",
                keys.other_file.display()
            )
        );
        assert_eq!(err.downcast_ref::<Failure>().unwrap().kind, Kind::Usage);
    }

    #[tokio::test]
    async fn codec_missing_identity_is_a_clear_error() {
        let keys = keys();
        let codec = Codec {
            compression: Compression::None,
            encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
        };
        let stored = encode(b"secret rows", &codec).await;
        let err = decode(stored, &codec, &Identities::none())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "artifact db/a.dump is encrypted; pass --identity FILE with an age identity"
        );

        let missing = keys.identity_file.with_file_name("nope.txt");
        let err = load_identities(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot read identity file {}: it does not exist",
                missing.display()
            )
        );
    }

    #[tokio::test]
    async fn codec_identity_file_with_a_recipient_is_refused() {
        let keys = keys();
        let path = keys
            .identity_file
            .with_file_name("recipients-by-mistake.txt");
        std::fs::write(&path, format!("# comment\n{}\n", keys.recipient)).unwrap();
        let err = load_identities(&[path]).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("not identities"), "{text}");
        let empty = keys.identity_file.with_file_name("empty.txt");
        std::fs::write(&empty, "# nothing here\n\n").unwrap();
        let err = load_identities(&[empty]).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds no age identity"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn codec_truncated_ciphertext_is_an_error() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        for compression in [Compression::None, Compression::zstd()] {
            let codec = Codec {
                compression,
                encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
            };
            let data = sample(200_000, 5);
            let stored = encode(&data, &codec).await;
            // Cut at a chunk boundary too: age must notice the missing final chunk.
            for cut in [stored.len() - 100, stored.len() - 1, 250] {
                let err = decode(stored[..cut].to_vec(), &codec, &ids)
                    .await
                    .unwrap_err();
                let text = format!("{err:#}");
                assert!(text.contains("artifact db/a.dump"), "{text}");
                assert!(text.contains("age"), "{text}");
            }
            // The header itself truncated.
            let err = decode(stored[..20].to_vec(), &codec, &ids)
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains("age"), "{err:#}");
            assert_eq!(
                err.downcast_ref::<Failure>().unwrap().kind,
                Kind::ArtifactRejected
            );
            // A flipped bit in the payload.
            let mut flipped = stored.clone();
            let at = flipped.len() / 2;
            flipped[at] ^= 0x40;
            let err = decode(flipped, &codec, &ids).await.unwrap_err();
            assert!(
                format!("{err:#}").contains("age-encrypted data is damaged"),
                "{err:#}"
            );
        }
    }

    #[tokio::test]
    async fn codec_corrupt_or_truncated_compression_names_the_format() {
        let data = sample(500_000, 9);
        for (compression, name) in [(Compression::zstd(), "zstd"), (Compression::gzip(), "gzip")] {
            let codec = Codec {
                compression,
                encryption: None,
            };
            let stored = encode(&data, &codec).await;
            let mut corrupt = stored.clone();
            for i in (corrupt.len() / 3..corrupt.len() / 3 + 64).step_by(7) {
                corrupt[i] ^= 0xa5;
            }
            let truncated = stored[..stored.len() - 3].to_vec();
            let mut trailing = stored.clone();
            trailing.extend_from_slice(b"garbage after the frame");
            let garbage = b"this was never compressed at all, not even a little".to_vec();
            for (case, bytes) in [
                ("corrupt", corrupt),
                ("truncated", truncated),
                ("trailing", trailing),
                ("garbage", garbage),
            ] {
                let Err(err) = decode(bytes, &codec, &Identities::none()).await else {
                    panic!("{name} {case}: decoded without an error");
                };
                let text = format!("{err:#}");
                assert!(
                    text.starts_with(&format!(
                        "artifact db/a.dump: its {name}-compressed data is corrupt or truncated"
                    )),
                    "{name} {case}: {text}"
                );
            }
        }
    }

    #[tokio::test]
    async fn codec_store_errors_pass_through_unchanged() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        let data = sample(400_000, 13);
        for codec in all_codecs(&keys.recipient) {
            let stored = encode(&data, &codec).await;
            let mut source = Dribble::new(stored, 4096);
            source.fail_at = Some(100_000);
            // read_to_end also checks (in debug builds) that an error
            // comes with no bytes.
            let result = match decode_reader(source, &codec, &ids, "db/a.dump").await {
                Ok(mut reader) => reader
                    .read_to_end(&mut Vec::new())
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            let err = result.unwrap_err();
            let io = err.downcast_ref::<io::Error>().unwrap();
            assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{codec:?}");
            assert_eq!(
                io.to_string(),
                "store connection reset by peer",
                "{codec:?}"
            );
        }
    }

    #[test]
    fn codec_recipients_file_with_comments() {
        let keys = keys();
        let second = age::x25519::Identity::generate().to_public().to_string();
        let path = keys.identity_file.with_file_name("recipients.txt");
        std::fs::write(
            &path,
            format!(
                "# ops team\n\n{}\n   # laptop\n  {second}  \n",
                keys.recipient
            ),
        )
        .unwrap();
        let recipients = read_recipients_file(&path).unwrap();
        assert_eq!(recipients, vec![keys.recipient.clone(), second.clone()]);
        let enc = Encryption::from_args(
            std::slice::from_ref(&keys.recipient),
            std::slice::from_ref(&path),
        )
        .unwrap();
        assert_eq!(enc.recipients.len(), 3);

        std::fs::write(&path, format!("# ok\n{second}\nage1nope\n")).unwrap();
        let err = read_recipients_file(&path).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 3"), "{text}");
        assert!(
            text.contains("not an age recipient: \"age1nope\""),
            "{text}"
        );

        std::fs::write(&path, "# only comments\n").unwrap();
        assert!(
            format!("{:#}", read_recipients_file(&path).unwrap_err())
                .contains("lists no age recipient")
        );
    }

    #[test]
    fn codec_recipients_are_checked_up_front() {
        let err = Encryption::new(["ssh-ed25519 AAAA".to_string()]).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("not an age recipient: \"ssh-ed25519 AAAA\""),
            "{err:#}"
        );
        let secret = age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_string();
        let err = Encryption::new([secret.clone()]).unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains(&secret[15..]), "the secret leaked: {text}");
        assert!(text.contains("age-keygen -y"), "{text}");
        assert!(Encryption::new(Vec::<String>::new()).is_err());
        // encode_writer checks them too.
        let bad = Codec {
            compression: Compression::None,
            encryption: Some(Encryption {
                recipients: vec!["age1bad".into()],
            }),
        };
        assert!(encode_writer_over(Vec::<u8>::new(), &bad).is_err());
    }

    #[test]
    fn codec_names_suffixes_and_parsing() {
        let age = || Some(Encryption { recipients: vec![] });
        let cases = [
            (Compression::None, None, ""),
            (Compression::zstd(), None, ".zst"),
            (Compression::gzip(), None, ".gz"),
            (Compression::zstd(), age(), ".zst.age"),
            (Compression::gzip(), age(), ".gz.age"),
            (Compression::None, age(), ".age"),
        ];
        for (compression, encryption, suffix) in cases {
            let codec = Codec {
                compression,
                encryption,
            };
            assert_eq!(codec.extension_suffix(), suffix);
            let back = Codec::from_manifest(
                codec.compression_manifest_name(),
                codec.encryption_manifest_name(),
            )
            .unwrap();
            assert_eq!(back, codec);
        }
        assert_eq!(
            Codec::from_manifest("none", Some("none")).unwrap(),
            Codec::plain()
        );
        assert!(Codec::from_manifest("brotli", None).is_err());
        assert!(Codec::from_manifest("zstd", Some("gpg")).is_err());

        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::zstd());
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert_eq!(
            "GZIP:9".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 9 }
        );
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        for bad in ["zstd:0", "zstd:23", "gzip:10", "gzip:x", "lz4", "none:1"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(Compression::Zstd { level: 7 }.to_string(), "zstd:7");
    }

    #[test]
    fn codec_choose_compression_never_double_compresses() {
        assert_eq!(choose_compression(None, false), (Compression::zstd(), None));
        assert_eq!(choose_compression(None, true), (Compression::None, None));
        assert_eq!(
            choose_compression(Some(Compression::gzip()), false),
            (Compression::gzip(), None)
        );
        assert_eq!(
            choose_compression(Some(Compression::None), false),
            (Compression::None, None)
        );
        assert_eq!(
            choose_compression(Some(Compression::None), true),
            (Compression::None, None)
        );
        let (chosen, warning) = choose_compression(Some(Compression::zstd()), true);
        assert_eq!(chosen, Compression::None);
        assert!(warning.unwrap().contains("never double-compress"));
    }

    /// Throughput of the encode and decode chains, for the decision record:
    /// `cargo test --release -p envsync-host codec_throughput -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn codec_throughput() {
        let keys = keys();
        let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
        // Mixed: text rows with one random run in five (hard to compress);
        // text: rows only, like a plain-text dump.
        let mixed = sample(128 * 1024 * 1024, 17);
        let text: Vec<u8> = (0u64..)
            .flat_map(|row| {
                let r = row.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                format!(
                    "{row}\tcustomer-{}\t{}.{:02}\tshipped\n",
                    r % 10_000,
                    r % 997,
                    r % 100
                )
                .into_bytes()
            })
            .take(mixed.len())
            .collect();
        for (name, data) in [("mixed", mixed), ("text", text)] {
            throughput(name, &data, &keys.recipient, &ids).await;
        }
    }

    async fn throughput(name: &str, data: &[u8], recipient: &str, ids: &Identities) {
        let mib = data.len() as f64 / (1024.0 * 1024.0);
        for codec in all_codecs(recipient) {
            let start = std::time::Instant::now();
            let mut writer = encode_writer_over(Vec::with_capacity(data.len()), &codec).unwrap();
            for chunk in data.chunks(1 << 20) {
                writer.write_all(chunk).await.unwrap();
            }
            let stored = writer.finish().await.unwrap();
            let encode = start.elapsed().as_secs_f64();
            let size = stored.len();
            let start = std::time::Instant::now();
            let mut reader = decode_reader(io::Cursor::new(stored), &codec, ids, "bench")
                .await
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            loop {
                let n = reader.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            let decode = start.elapsed().as_secs_f64();
            assert_eq!(total, data.len());
            println!(
                "{name:<6} {:<20} encode {:>6.0} MiB/s  decode {:>6.0} MiB/s  ratio {:.3}",
                format!("{}{}", codec.compression, codec.extension_suffix()),
                mib / encode,
                mib / decode,
                size as f64 / data.len() as f64
            );
        }
    }
}
