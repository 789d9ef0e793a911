//! `backups export`: one artifact of a store streamed out as a single dump
//! the datastore's own tools load (a chunked PostgreSQL artifact as one
//! plain SQL script for `psql`), for users without envsync. The plugin's
//! `export-dump` does the conversion in a sandbox that reaches no database
//! (`step::export_sandbox`); the artifact and every chunk are verified as
//! they are read, and a file output appears only when all of it was.

use crate::capabilities::chunks::ChunkReads;
use crate::capabilities::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::failure::{Failure, Kind};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::step::{self, ExportLimits};
use crate::store::StoreOptions;
use crate::store::catalog::Catalog;
use crate::store::codec;
use anyhow::{Context, Result};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use tokio::io::AsyncWrite;
use wasmtime::component::Resource;

/// Which artifact to export, from where, to where.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub store: String,
    pub store_options: StoreOptions,
    /// An artifact key (`instance/file`), else the latest of
    /// `instance`/`database`.
    pub key: Option<String>,
    pub instance: Option<String>,
    pub database: Option<String>,
    /// Age identity files to decrypt with.
    pub identities: Vec<PathBuf>,
    pub output: Output,
    pub limits: ExportLimits,
}

/// Where the dump goes.
#[derive(Clone, Debug)]
pub enum Output {
    /// Written to a temporary file beside it, renamed on success.
    File(PathBuf),
    Stdout,
}

/// What an export did.
#[derive(Debug)]
pub struct Exported {
    pub key: String,
    pub bytes: u64,
}

pub async fn export(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    request: &ExportRequest,
) -> Result<Exported> {
    let catalog = Catalog::new(crate::store::open(&request.store, &request.store_options).await?);
    let manifest = match (&request.key, &request.instance, &request.database) {
        (Some(key), _, _) if key.contains('/') => catalog.manifest(key).await?,
        (Some(key), Some(instance), _) => catalog.manifest(&format!("{instance}/{key}")).await?,
        (None, Some(instance), Some(database)) => catalog.resolve(instance, database, None).await?,
        _ => {
            return Err(Failure::new(
                Kind::Usage,
                "export needs an artifact: pass --key INSTANCE/FILE (see `backups list`), or \
                 --instance and --database for their latest backup",
            )
            .into());
        }
    };
    step::artifact_format(plugin, &manifest, "exports")?;
    let identities = Arc::new(codec::load_identities(&request.identities)?);
    let reader = catalog.open(&manifest, &identities).await?;
    tracing::info!(
        plugin = %plugin.info.name,
        "exporting {} ({} chunks) from {}",
        manifest.key,
        manifest.chunks.len(),
        catalog.location()
    );
    let chunks = ChunkReads {
        catalog: catalog.clone(),
        manifest: manifest.clone(),
        identities,
    };
    let mut sandbox = step::export_sandbox(runtime, plugin, &request.limits, chunks).await?;
    let (writer, pending) = Destination::open(&request.output)?;
    let closed = writer.closed.clone();
    let written = writer.written.clone();
    let source = sandbox.push_source(ByteSource::new(
        format!("artifact {}", manifest.key),
        SourceKind::Artifact(reader),
    ))?;
    let out = sandbox.push_sink(ByteSink::new(
        format!("export of {}", manifest.key),
        SinkKind::Pipe(Box::new(writer)),
    ))?;
    let result = sandbox
        .export_dump(Resource::new_borrow(source.rep()), out)
        .await;
    let mut source = sandbox.state().table.delete(source)?;
    let failed = match result {
        Err(e) => Some(e),
        Ok(Err(e)) => Some(Failure::from_plugin(&plugin.info.name, "export", e).into()),
        Ok(Ok(())) => None,
    };
    if let Some(e) = failed {
        // A converter choking on a damaged artifact is a symptom.
        if let Some(damage) = source.artifact_mut().and_then(|r| r.damage()) {
            return Err(Failure::new(
                Kind::ArtifactRejected,
                format!("{damage}; nothing was exported ({e:#})"),
            )
            .into());
        }
        return Err(e.context("nothing was exported"));
    }
    if !source.verified()
        && let Some(reader) = source.artifact_mut()
    {
        reader.verify().await.map_err(|e| {
            Failure::new(Kind::ArtifactRejected, format!("{e}; nothing was exported"))
        })?;
    }
    // Dropping the sink (or a transfer into it ending) closes it; a plugin
    // that returns while its output is still being written has not
    // finished it.
    drop(sandbox);
    if !closed.load(Ordering::SeqCst) {
        return Err(Failure::new(
            Kind::Plugin,
            format!(
                "plugin {} returned before its export output was complete (the output was not \
                 closed); nothing was exported. Report this to its author",
                plugin.info.name
            ),
        )
        .into());
    }
    pending.commit()?;
    Ok(Exported {
        key: manifest.key.clone(),
        bytes: written.load(Ordering::SeqCst),
    })
}

/// The export's output: what the sink writes to, and how it is kept.
struct Destination {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    closed: Arc<AtomicBool>,
    written: Arc<std::sync::atomic::AtomicU64>,
}

/// A file output not yet in place: the temporary file is removed unless
/// [`Pending::commit`] renames it.
enum Pending {
    File {
        temp: tempfile::TempPath,
        path: PathBuf,
    },
    Stdout,
}

impl Destination {
    fn open(output: &Output) -> Result<(Destination, Pending)> {
        let (inner, pending): (Pin<Box<dyn AsyncWrite + Send>>, Pending) = match output {
            Output::Stdout => (Box::pin(tokio::io::stdout()), Pending::Stdout),
            Output::File(path) => {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let temp = tempfile::Builder::new()
                    .prefix(".envsync-export-")
                    .tempfile_in(&dir)
                    .map_err(|e| {
                        Failure::new(
                            Kind::Usage,
                            format!(
                                "cannot write the export into {}: {e}; pass --output in a \
                                 writable folder (or - for standard output)",
                                dir.display()
                            ),
                        )
                    })?;
                let (file, temp) = temp.into_parts();
                let file = tokio::fs::File::from_std(file);
                (
                    Box::pin(tokio::io::BufWriter::with_capacity(1 << 20, file)),
                    Pending::File {
                        temp,
                        path: path.clone(),
                    },
                )
            }
        };
        Ok((
            Destination {
                inner,
                closed: Arc::default(),
                written: Arc::default(),
            },
            pending,
        ))
    }
}

impl Pending {
    fn commit(self) -> Result<()> {
        let Pending::File { temp, path } = self else {
            return Ok(());
        };
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", temp.display()))?;
        persist(temp, &path)
    }
}

fn persist(temp: tempfile::TempPath, path: &Path) -> Result<()> {
    temp.persist(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot move the export into place at {}: {}",
            path.display(),
            e.error
        )
    })
}

impl AsyncWrite for Destination {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n as u64, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    /// Closing flushes everything; only a successful close marks the
    /// output complete.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = self.inner.as_mut().poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.closed.store(true, Ordering::SeqCst);
        }
        polled
    }
}
