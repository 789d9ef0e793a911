//! Running one step: resolve what the operation needs (store, artifact,
//! script), hand it to the plugin in a fresh sandbox, and finish host-side
//! work (publish the backup) only when the plugin succeeded.

use crate::capabilities::chunks::{ChunkAccess, ChunkReads, ChunkUploads};
use crate::capabilities::job::JobContext;
use crate::capabilities::objects::ObjectGrant;
use crate::capabilities::parallel_rows::{ParallelRows, WorkerParts};
use crate::capabilities::process::ProcessPolicy;
use crate::capabilities::sanitised_rows::{NameCheck, PieceWriter, RowsTarget, SanitisedRows};
use crate::capabilities::streams::{ByteSink, ByteSource, SinkKind, SourceKind};
use crate::failure::{Failure, Kind};
use crate::progress;
use crate::runtime::bindings::envsync::plugin::types::ArtifactFormat;
use crate::runtime::bindings::{Operation, StructurePart, TableInfo};
use crate::runtime::sandbox::StepState;
use crate::runtime::{LoadedPlugin, Runtime, Sandbox};
use crate::sanitiser::{LoadedSanitiser, SanitiseOptions, SanitiserSession};
use crate::store::StoreOptions;
use crate::store::catalog::Catalog;
use crate::store::codec::{self, Codec, Compression, Encryption};
use crate::store::manifest::{Chunk, Manifest, Source};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use wasmtime::component::Resource;

/// What one step is asked to do.
#[derive(Clone, Debug)]
pub struct StepRequest {
    pub operation: Operation,
    pub job: JobContext,
    /// The environment's own store: backups write here (restores read here
    /// unless `from_store` is given).
    pub store: Option<String>,
    /// Restore: read from this store instead (e.g. the environment above);
    /// a restore never writes to any store.
    pub from_store: Option<String>,
    /// Stores of other environments: readable, never written. A backup into
    /// one of them (or into `from_store`) is refused before any request.
    pub read_only_stores: Vec<String>,
    pub store_options: StoreOptions,
    /// Backup: requested compression (None: the default for the format).
    pub compression: Option<Compression>,
    /// Backup: age recipients to encrypt to (none: not encrypted).
    pub encrypt_to: Vec<String>,
    /// Restore: age identity files to decrypt with.
    pub identities: Vec<PathBuf>,
    /// Backup: the key folder; default the source's host.
    pub instance: Option<String>,
    /// Restore: whose backups to read; default the target's host and database.
    pub from_instance: Option<String>,
    pub from_database: Option<String>,
    /// Restore: an explicit artifact key or file name.
    pub artifact: Option<String>,
    /// Transform: the script file.
    pub script: Option<PathBuf>,
    pub max_runtime: Duration,
    pub memory_cap_mib: u64,
    /// Programs the operator allows; None allows what the plugin declares.
    pub allow_programs: Option<Vec<String>>,
    /// Cancelled when the operator asks the host to stop (SIGTERM): the
    /// plugin is stopped like at its deadline and the step fails.
    pub stop: CancellationToken,
    /// Backup and copy: pass the rows through this sanitiser.
    pub sanitise: Option<SanitiseOptions>,
    /// The step's progress, shared with whoever reports it (bar, log
    /// lines, Pushgateway, `status`).
    pub progress: progress::Tracker,
    /// The state folder, where a capability keeps what outlives the step
    /// (the objects capability's ETag memories); none: nothing is kept.
    pub state_dir: Option<PathBuf>,
}

/// What a sandbox of the step's plugin holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Everything the step grants (its connections, programs, HTTP).
    Full,
    /// A sanitised backup's structure call: programs only in their
    /// schema-only form, HTTP only for metadata.
    Structure,
    /// Nothing at all (`encode`).
    Nothing,
    /// `backups export` (`export_sandbox`): no connection, parameters or
    /// HTTP; programs only as offline converters (stdin to stdout, no
    /// database option); the artifact's chunks readable.
    Export,
}

/// The state of a sandbox holding no job: no connections, parameters or
/// HTTP. [`Grant::Nothing`] runs no program; [`Grant::Export`] runs the
/// plugin's programs only in their offline form, with no credentials passed
/// through (the caller adds the artifact's chunks).
fn limited_state(
    grant: Grant,
    plugin: &LoadedPlugin,
    allow_programs: Option<&[String]>,
    memory_cap: usize,
) -> StepState {
    let info = &plugin.info;
    let policy = match grant {
        Grant::Export => ProcessPolicy::new(
            &info.name,
            &info.programs,
            allow_programs,
            info.credentials.clone(),
        )
        .offline_only(),
        _ => ProcessPolicy::none(),
    };
    StepState::new(
        &info.name,
        Arc::new(JobContext::default()),
        policy,
        memory_cap,
    )
}

/// A sandbox of `plugin` for `backups export` ([`Grant::Export`]) that
/// reads the chunks of `chunks.manifest`, stopped after `max_runtime` or
/// when `stop` is cancelled.
pub async fn export_sandbox(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    limits: &ExportLimits,
    chunks: ChunkReads,
) -> Result<Sandbox> {
    let memory_cap = (limits.memory_cap_mib << 20) as usize;
    let mut state = limited_state(
        Grant::Export,
        plugin,
        limits.allow_programs.as_deref(),
        memory_cap,
    );
    state.chunks = ChunkAccess::Restore(Box::new(chunks));
    runtime
        .sandbox(plugin, state, limits.max_runtime, limits.stop.clone())
        .await
}

/// The limits of an export's sandbox.
#[derive(Clone, Debug)]
pub struct ExportLimits {
    pub max_runtime: Duration,
    pub memory_cap_mib: u64,
    /// Programs the operator allows; None allows what the plugin declares.
    pub allow_programs: Option<Vec<String>>,
    pub stop: CancellationToken,
}

/// The format of `manifest` among those `plugin` reads (its own, its
/// sanitised one), else a refusal saying what the plugin `verb`s.
pub fn artifact_format<'a>(
    plugin: &'a LoadedPlugin,
    manifest: &Manifest,
    verb: &str,
) -> Result<&'a ArtifactFormat> {
    let info = &plugin.info;
    if let Some(format) = std::iter::once(&info.artifact)
        .chain(&info.sanitised_artifact)
        .find(|f| f.name == manifest.format)
    {
        return Ok(format);
    }
    let mut formats = vec![info.artifact.name.as_str()];
    formats.extend(info.sanitised_artifact.as_ref().map(|f| f.name.as_str()));
    Err(Failure::new(
        Kind::ArtifactRejected,
        format!(
            "{} is a {} artifact made by plugin {}; plugin {} {verb} {} artifacts. Nothing was changed.",
            manifest.key,
            manifest.format,
            manifest.plugin,
            info.name,
            formats.join(" and ")
        ),
    )
    .into())
}

/// What a finished step reports.
#[derive(Debug)]
pub struct StepOutcome {
    pub summary: String,
    pub manifest: Option<Manifest>,
    pub duration: Duration,
    /// Bytes a step without an artifact moved (objects copied), reported
    /// as the step's size.
    pub moved: Option<u64>,
}

impl StepOutcome {
    /// The step's size for metrics and history: the artifact's (with its
    /// chunks), else the bytes moved.
    pub fn size(&self) -> Option<u64> {
        self.manifest
            .as_ref()
            .map(Manifest::total_size)
            .or(self.moved)
    }
}

pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Backup => "backup",
        Operation::Restore => "restore",
        Operation::Transform => "transform",
        Operation::Copy => "copy",
    }
}

/// Runs `request` with `plugin` (a request that sanitises needs
/// [`run_sanitised`]).
pub async fn run(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    request: &StepRequest,
) -> Result<StepOutcome> {
    run_sanitised(runtime, plugin, None, request).await
}

/// Runs `request` with `plugin`, its rows passing through `sanitiser` when
/// the request sanitises.
pub async fn run_sanitised(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    sanitiser: Option<&LoadedSanitiser>,
    request: &StepRequest,
) -> Result<StepOutcome> {
    let started = Instant::now();
    let op = operation_name(request.operation);
    if !plugin.info.operations.contains(&request.operation) {
        return Err(Failure::new(
            Kind::Usage,
            format!("plugin {} does not implement {op}", plugin.info.name),
        )
        .into());
    }
    if request.sanitise.is_some() && sanitiser.is_none() {
        return Err(Failure::new(
            Kind::Usage,
            "the step sanitises but no sanitiser was loaded",
        )
        .into());
    }
    let step = Step {
        runtime,
        plugin,
        sanitiser,
        request,
        job: Arc::new(request.job.clone()),
    };
    let mut moved = None;
    let (summary, manifest) = match request.operation {
        Operation::Backup => step.backup().await?,
        Operation::Restore => step.restore().await?,
        Operation::Transform => step.transform().await?,
        Operation::Copy => {
            let (summary, bytes) = step.copy().await?;
            moved = bytes;
            (summary, None)
        }
    };
    Ok(StepOutcome {
        summary,
        manifest,
        duration: started.elapsed(),
        moved,
    })
}

/// `sanitise check`: the live schema of the request's source as the engine
/// lists it, and the columns the sanitiser's rules do not cover.
pub async fn uncovered_columns(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    sanitiser: &LoadedSanitiser,
    request: &StepRequest,
) -> Result<(Vec<crate::runtime::bindings::TableInfo>, Vec<String>)> {
    let options = request
        .sanitise
        .as_ref()
        .ok_or_else(|| Failure::new(Kind::Usage, "the step does not sanitise"))?;
    let step = Step {
        runtime,
        plugin,
        sanitiser: Some(sanitiser),
        request,
        job: Arc::new(request.job.clone()),
    };
    step.connection("source")?;
    let mut sandbox = step.sandbox().await?;
    let schema = sandbox
        .schema()
        .await?
        .map_err(|e| -> anyhow::Error { Failure::from_plugin(step.name(), "schema", e).into() })?;
    let mut session =
        SanitiserSession::start(runtime.engine(), sanitiser, options, request.stop.clone()).await?;
    let uncovered = session.uncovered(&schema).await?;
    Ok((schema, uncovered))
}

struct Step<'a> {
    runtime: &'a Runtime,
    plugin: &'a LoadedPlugin,
    sanitiser: Option<&'a LoadedSanitiser>,
    request: &'a StepRequest,
    job: Arc<JobContext>,
}

impl Step<'_> {
    fn name(&self) -> &str {
        &self.plugin.info.name
    }

    fn connection(&self, role: &str) -> Result<&crate::connection::Connection> {
        self.request.job.connections.get(role).ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "{} needs a {role} database",
                    operation_name(self.request.operation)
                ),
            )
            .into()
        })
    }

    /// The store this step uses: restores read `from_store` when given.
    async fn catalog(&self) -> Result<Catalog> {
        let request = self.request;
        let location = match request.operation {
            Operation::Restore => request.from_store.as_deref().or(request.store.as_deref()),
            _ => request.store.as_deref(),
        };
        let location = location.ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "{} needs a store: pass --store PATH or URL",
                    operation_name(request.operation)
                ),
            )
        })?;
        if request.operation == Operation::Backup {
            let foreign = request.read_only_stores.iter().chain(&request.from_store);
            if let Some(other) = foreign
                .into_iter()
                .find(|o| crate::store::overlaps(location, o))
            {
                return Err(Failure::new(
                    Kind::Usage,
                    format!(
                        "refusing to back up into {location}: it is inside {other}, another environment's \
                         store, which this environment may only read; back up into its own --store"
                    ),
                )
                .into());
            }
        }
        let store = crate::store::open(location, &request.store_options).await?;
        Ok(Catalog::new(store))
    }

    /// The artifact format of this step's backup: the sanitised format when
    /// it sanitises (refused when the plugin has none).
    fn backup_format(&self) -> Result<&ArtifactFormat> {
        if self.request.sanitise.is_none() {
            return Ok(&self.plugin.info.artifact);
        }
        self.plugin.info.sanitised_artifact.as_ref().ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "plugin {} cannot sanitise (it declares no sanitised artifact format); \
                     remove [task.sanitise] or use a transform step after restore",
                    self.name()
                ),
            )
            .into()
        })
    }

    /// Refuses a sanitised step the plugin cannot do: a backup needs its
    /// sanitised format, a copy its import of `sanitising` (a plugin
    /// without it would copy every row unchanged).
    fn can_sanitise(&self) -> Result<()> {
        if self.request.operation == Operation::Backup {
            return self.backup_format().map(drop);
        }
        if self.plugin.capabilities.iter().any(|c| c == "sanitising") {
            return Ok(());
        }
        Err(Failure::new(
            Kind::Usage,
            format!(
                "plugin {} cannot sanitise (it does not use the sanitising interface); remove \
                 [task.sanitise] or use a transform step after restore",
                self.name()
            ),
        )
        .into())
    }

    /// Starts the step's sanitiser inside `sandbox`: the engine lists the
    /// live schema, the sanitiser gets it and says which columns its rules
    /// miss (strict: refuse before anything is dumped).
    async fn start_sanitiser(&self, sandbox: &mut Sandbox) -> Result<Vec<TableInfo>> {
        let (Some(options), Some(sanitiser)) = (&self.request.sanitise, self.sanitiser) else {
            return Ok(Vec::new());
        };
        self.can_sanitise()?;
        let schema = sandbox.schema().await?;
        let schema = schema.map_err(|e| -> anyhow::Error {
            Failure::from_plugin(self.name(), "schema", e).into()
        })?;
        let mut session = SanitiserSession::start(
            self.runtime.engine(),
            sanitiser,
            options,
            self.request.stop.clone(),
        )
        .await?;
        let uncovered = session.uncovered(&schema).await?;
        if !uncovered.is_empty() {
            let list = uncovered.join(", ");
            if options.strict {
                return Err(Failure::new(
                    Kind::Usage,
                    format!(
                        "strict sanitising: {} column(s) are not covered by the rules in {}: {list}; \
                         nothing was dumped. Add a rule for each (\"keep\" counts), then run again",
                        uncovered.len(),
                        options.rules_origin
                    ),
                )
                .into());
            }
            tracing::warn!(
                "{} column(s) are not covered by the rules in {} and pass unchanged: {list}",
                uncovered.len(),
                options.rules_origin
            );
        }
        sandbox.state().sanitiser = Some(session);
        Ok(schema)
    }

    /// After the plugin returned: the sanitiser's failure (the real cause
    /// when the plugin failed because of it), the strict residual check, and
    /// the summary line.
    fn finish_sanitiser(
        &self,
        sandbox: &mut Sandbox,
        plugin_result: Result<()>,
    ) -> Result<Option<String>> {
        let Some(session) = sandbox.state().sanitiser.take() else {
            return plugin_result.map(|()| None);
        };
        if let Err(e) = plugin_result {
            return Err(session.failure().unwrap_or(e));
        }
        session.finish()?;
        let summary = session.stats.summary(session.name());
        tracing::info!("{summary}");
        Ok(Some(summary))
    }

    /// Compression and encryption of a new backup.
    fn backup_codec(&self) -> Result<Codec> {
        // A backup with --jobs may be chunked, its chunks raw rows (the
        // postgres plugin's are COPY text): the format's own compression
        // cannot be counted on, so the host's applies (docs/decisions/0019).
        let compressed = self.backup_format()?.compressed && !self.job.jobs_chosen;
        let (compression, warning) =
            codec::choose_compression(self.request.compression, compressed);
        if let Some(warning) = warning {
            tracing::warn!(plugin = self.name(), "{warning}");
        }
        let encryption = if self.request.encrypt_to.is_empty() {
            None
        } else {
            let encryption = Encryption::new(&self.request.encrypt_to)
                .map_err(|e| Failure::new(Kind::Usage, format!("{e:#}")))?;
            Some(encryption)
        };
        Ok(Codec {
            compression,
            encryption,
        })
    }

    async fn sandbox(&self) -> Result<Sandbox> {
        self.sandbox_with(Grant::Full, self.request.max_runtime)
            .await
    }

    /// A fresh sandbox of the step's plugin holding `grant`, stopped after
    /// `max_runtime`.
    async fn sandbox_with(&self, grant: Grant, max_runtime: Duration) -> Result<Sandbox> {
        let info = &self.plugin.info;
        let memory_cap = (self.request.memory_cap_mib << 20) as usize;
        let state = match grant {
            // No job, connections, programs or HTTP: what it returns can
            // depend only on what it is handed.
            Grant::Nothing | Grant::Export => limited_state(
                grant,
                self.plugin,
                self.request.allow_programs.as_deref(),
                memory_cap,
            ),
            Grant::Full | Grant::Structure => {
                let mut policy = ProcessPolicy::new(
                    &info.name,
                    &info.programs,
                    self.request.allow_programs.as_deref(),
                    info.credentials.clone(),
                );
                if grant == Grant::Structure {
                    policy = policy.structure_only();
                }
                let mut state = StepState::new(&info.name, self.job.clone(), policy, memory_cap);
                state.http.metadata_only = grant == Grant::Structure;
                state.progress = Some(self.request.progress.clone());
                // A structure call reads no data, so it gets no objects.
                if grant == Grant::Full {
                    state.objects = ObjectGrant::new(
                        &self.job.connections,
                        &self.request.store_options.s3,
                        self.request.state_dir.clone(),
                    );
                }
                state
            }
        };
        self.runtime
            .sandbox(self.plugin, state, max_runtime, self.request.stop.clone())
            .await
    }

    /// Turns the plugin's typed error into a failure naming plugin and step.
    fn plugin_result(
        &self,
        op: &str,
        result: Result<(), crate::runtime::bindings::WitError>,
    ) -> Result<()> {
        result.map_err(|e| Failure::from_plugin(self.name(), op, e).into())
    }

    async fn backup(&self) -> Result<(String, Option<Manifest>)> {
        let source = self.connection("source")?;
        let instance = self
            .request
            .instance
            .clone()
            .or_else(|| source.instance())
            .unwrap_or_else(|| "localhost".to_string());
        let catalog = self.catalog().await?;
        let format = self.backup_format()?;
        let codec = self.backup_codec()?;
        let head_size = head_size(format);
        let mut writer = catalog
            .begin(&instance, &source.database, &format.extension, &codec)
            .await?;
        if codec.encryption.is_some() {
            writer.keep_head(head_size);
        }
        let key = writer.key().to_string();
        tracing::info!(
            plugin = self.name(),
            "backing up {} to {key} in {}",
            source.database,
            catalog.location()
        );
        let progress = self.request.progress.stream(
            format!("backup of {}", source.database),
            writer.meter(),
            None,
        );
        let sink = ByteSink::new(format!("artifact {key}"), SinkKind::Artifact(writer));
        let uploads = ChunkUploads::new(catalog.clone(), key.clone(), codec.clone())
            .metered(self.request.progress.clone());
        let (result, sink, chunks) = if self.request.sanitise.is_some() {
            self.sanitised_backup(sink, uploads).await
        } else {
            self.plain_backup(sink, uploads).await
        };
        drop(progress);
        // A failed backup leaves no chunks behind either.
        let result = match (result, chunks) {
            (Ok(summary), Ok(chunks)) => Ok((summary, chunks)),
            (Ok(_), Err(why)) => Err(Failure::new(
                Kind::Plugin,
                format!("plugin {}: {why}; nothing was published", self.name()),
            )
            .into()),
            (Err(e), _) => Err(e),
        };
        if result.is_err()
            && let Err(e) = catalog.discard_chunks(&key).await
        {
            tracing::warn!(plugin = self.name(), "{e:#}");
        }
        let writer = sink.and_then(ByteSink::into_artifact);
        let ((sanitise_summary, chunks), writer) = match (result, writer) {
            (Ok(done), Some(writer)) => (done, writer),
            (Ok(_), None) => {
                let _ = catalog.discard_chunks(&key).await;
                anyhow::bail!("the upload of {key} was lost")
            }
            (Err(e), writer) => {
                if let Some(writer) = writer {
                    writer.abort().await;
                }
                return Err(e);
            }
        };
        let captured_head = writer.head().to_vec();
        let uploaded = match catalog.upload(writer).await {
            Ok(uploaded) => uploaded,
            Err(e) => {
                let _ = catalog.discard_chunks(&key).await;
                return Err(e);
            }
        };
        if let Err(e) = catalog.verify_chunks(&key, &chunks).await {
            if let Err(removal) = catalog.discard(uploaded).await {
                tracing::warn!(plugin = self.name(), "{removal:#}");
            }
            return Err(e);
        }
        let manifest = uploaded.describe(Manifest {
            key: String::new(),
            size: 0,
            sha256: String::new(),
            plugin: self.plugin.info.name.clone(),
            plugin_version: self.plugin.info.version.clone(),
            format: format.name.clone(),
            compression: codec.compression.manifest_name().to_string(),
            encryption: codec.encryption.as_ref().map(|_| "age".to_string()),
            recipients: codec
                .encryption
                .as_ref()
                .map(|e| e.recipients().to_vec())
                .unwrap_or_default(),
            created_at: chrono::Utc::now(),
            source: Source {
                instance,
                database: source.database.clone(),
            },
            envsync_version: env!("CARGO_PKG_VERSION").to_string(),
            chunks,
        });
        let checked = self
            .check_backup(&catalog, &manifest, captured_head, head_size)
            .await;
        if let Err(e) = checked {
            if let Err(removal) = catalog.discard(uploaded).await {
                tracing::warn!(plugin = self.name(), "{removal:#}");
            }
            return Err(e);
        }
        let manifest = catalog.publish(uploaded, manifest).await?;
        let mut summary = format!(
            "backed up {} to {} in {} ({}, sha256 {})",
            source.database,
            manifest.key,
            catalog.location(),
            human_size(manifest.total_size()),
            manifest.sha256
        );
        if !manifest.chunks.is_empty() {
            summary.push_str(&format!("; {} chunks beside it", manifest.chunks.len()));
        }
        if let Some(s) = sanitise_summary {
            summary.push_str("; ");
            summary.push_str(&s);
        }
        Ok((summary, Some(manifest)))
    }

    /// One `backup` call writing `artifact` and any chunks. Gives the
    /// artifact back (None if the plugin's table lost it) to publish or
    /// abort, with the chunks stored (or why they are incomplete).
    async fn plain_backup(
        &self,
        artifact: ByteSink,
        uploads: ChunkUploads,
    ) -> (
        Result<Option<String>>,
        Option<ByteSink>,
        Result<Vec<crate::store::manifest::Chunk>, String>,
    ) {
        let mut sandbox = match self.sandbox().await {
            Ok(sandbox) => sandbox,
            Err(e) => return (Err(e), Some(artifact), Ok(Vec::new())),
        };
        sandbox.state().chunks = ChunkAccess::Backup(uploads);
        let sink = match sandbox.push_sink(artifact) {
            Ok(sink) => sink,
            Err(e) => return (Err(e), None, Ok(Vec::new())),
        };
        let result = sandbox.backup(Resource::new_borrow(sink.rep())).await;
        // Whatever happened, take the artifact back from the plugin's table.
        let artifact = sandbox.state().table.delete(sink).ok();
        let result = result.and_then(|r| self.plugin_result("backup", r));
        let chunks =
            take_uploads(&mut sandbox).map_or_else(|| Ok(Vec::new()), ChunkUploads::finish);
        // Chunk sinks the plugin left open are dropped (aborted) with it.
        drop(sandbox);
        (result.map(|()| None), artifact, chunks)
    }

    /// A sanitised backup, written by the host (docs/decisions/0015): the
    /// structure from two calls that can read no rows, and between them the
    /// rows from a call that never holds the artifact, each batch going
    /// through the sanitiser and then the engine's `encode` in a sandbox
    /// with nothing granted. With `--jobs` the structure calls may create
    /// chunks; an engine that does gets its rows as chunks too, sanitised
    /// by `jobs` sanitiser instances at once (docs/decisions/0021).
    /// Returns the sanitiser's summary, the artifact, and the chunks.
    async fn sanitised_backup(
        &self,
        artifact: ByteSink,
        uploads: ChunkUploads,
    ) -> (
        Result<Option<String>>,
        Option<ByteSink>,
        Result<Vec<Chunk>, String>,
    ) {
        let no_chunks = || Ok(Vec::new());
        let started = Instant::now();
        let left = || self.request.max_runtime.saturating_sub(started.elapsed());
        // The schema and the strict check come first: nothing is written
        // when the rules miss a column.
        let mut rows = match self.sandbox().await {
            Ok(sandbox) => sandbox,
            Err(e) => return (Err(e), Some(artifact), no_chunks()),
        };
        let schema = match self.start_sanitiser(&mut rows).await {
            Ok(schema) => schema,
            Err(e) => return (Err(e), Some(artifact), no_chunks()),
        };
        let offered = self.job.jobs_chosen.then_some(uploads);
        let (result, artifact, uploads) = self
            .structure(StructurePart::BeforeRows, artifact, left(), offered)
            .await;
        let Some(artifact) = artifact else {
            return (result.map(|()| None), None, no_chunks());
        };
        if let Err(e) = result {
            return (Err(e), Some(artifact), no_chunks());
        }
        // The engine opted into chunks by creating one (its schema).
        let (result, artifact, uploads) = match uploads {
            Some(uploads) if uploads.created_with("") > 0 => {
                let (result, uploads) = self
                    .parallel_rows(&mut rows, &schema, uploads, left())
                    .await;
                (result, artifact, Some(uploads))
            }
            uploads => {
                let (result, artifact) = self
                    .rows_in_one_stream(&mut rows, &schema, artifact, left())
                    .await;
                (result, artifact, uploads)
            }
        };
        let summary = match self.finish_sanitiser(&mut rows, result) {
            Ok(summary) => summary,
            Err(e) => return (Err(e), Some(artifact), no_chunks()),
        };
        drop(rows);
        let (result, artifact, uploads) = self
            .structure(StructurePart::AfterRows, artifact, left(), uploads)
            .await;
        let chunks = uploads.map_or_else(no_chunks, ChunkUploads::finish);
        (result.map(|()| summary), artifact, chunks)
    }

    /// `backup-rows` writing into the artifact: every batch sanitised and
    /// encoded before `write-rows` returns.
    async fn rows_in_one_stream(
        &self,
        rows: &mut Sandbox,
        schema: &[TableInfo],
        artifact: ByteSink,
        max_runtime: Duration,
    ) -> (Result<()>, ByteSink) {
        let encoder = match self.sandbox_with(Grant::Nothing, max_runtime).await {
            Ok(sandbox) => sandbox,
            Err(e) => return (Err(e), artifact),
        };
        rows.state().sanitised_rows = Some(RowsTarget::One(Box::new(SanitisedRows::new(
            encoder, artifact, schema,
        ))));
        let result = rows.backup_rows().await;
        let result = result.and_then(|r| self.plugin_result("backup-rows", r));
        let Some(RowsTarget::One(writer)) = rows.state().sanitised_rows.take() else {
            unreachable!("the host put it there");
        };
        match writer.finish().await {
            Ok(artifact) => (result, artifact),
            Err((why, artifact)) => (
                Err(Failure::new(Kind::Plugin, format!("plugin {}: {why}", self.name())).into()),
                artifact,
            ),
        }
    }

    /// `backup-rows` writing row chunks, sanitised by `jobs` workers, each
    /// with its own sanitiser instance and encoder. The instances' work is
    /// merged back into the step's sanitiser session for the strict check
    /// and the summary.
    async fn parallel_rows(
        &self,
        rows: &mut Sandbox,
        schema: &[TableInfo],
        uploads: ChunkUploads,
        max_runtime: Duration,
    ) -> (Result<()>, ChunkUploads) {
        let workers = match self.sanitising_workers(rows, max_runtime).await {
            Ok(workers) => workers,
            Err(e) => return (Err(e), uploads),
        };
        let count = workers.len();
        tracing::info!(
            plugin = self.name(),
            "sanitising the rows with {count} sanitiser instance(s) at once, into chunks"
        );
        let shared = Arc::new(tokio::sync::Mutex::new(uploads));
        let parallel = ParallelRows::start(NameCheck::new(schema), workers, shared.clone());
        rows.state().sanitised_rows = Some(RowsTarget::Chunked(Box::new(parallel)));
        let result = rows.backup_rows().await;
        let result = result.and_then(|r| self.plugin_result("backup-rows", r));
        let Some(RowsTarget::Chunked(parallel)) = rows.state().sanitised_rows.take() else {
            unreachable!("the host put it there");
        };
        let finished = parallel.finish().await;
        let mut sessions = finished.sessions.into_iter();
        if let Some(mut merged) = sessions.next() {
            sessions.for_each(|s| merged.absorb(s));
            rows.state().sanitiser = Some(merged);
        }
        let result = match (result, finished.failure) {
            (Ok(()), Some(why)) => {
                Err(Failure::new(Kind::Plugin, format!("plugin {}: {why}", self.name())).into())
            }
            (result, _) => result,
        };
        let uploads = Arc::try_unwrap(shared)
            .map(tokio::sync::Mutex::into_inner)
            .unwrap_or_else(|_| unreachable!("every worker has ended"));
        (result, uploads)
    }

    /// One sanitiser instance and one encoder per job: the step's session
    /// (already configured and checked against the schema) and `jobs - 1`
    /// more configured the same way.
    async fn sanitising_workers(
        &self,
        rows: &mut Sandbox,
        max_runtime: Duration,
    ) -> Result<Vec<WorkerParts>> {
        let (Some(options), Some(sanitiser)) = (&self.request.sanitise, self.sanitiser) else {
            anyhow::bail!("a sanitised backup without a sanitiser");
        };
        let first = rows
            .state()
            .sanitiser
            .take()
            .context("the step's sanitiser was not started")?;
        let started_at = first.started_at();
        let mut sessions = Vec::new();
        for _ in 1..self.job.jobs.max(1) {
            let session = SanitiserSession::start_at(
                self.runtime.engine(),
                sanitiser,
                options,
                self.request.stop.clone(),
                started_at,
            )
            .await;
            match session {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    rows.state().sanitiser = Some(first);
                    return Err(e);
                }
            }
        }
        sessions.insert(0, first);
        let mut workers = Vec::new();
        for session in sessions {
            let encoder = self.sandbox_with(Grant::Nothing, max_runtime).await?;
            workers.push(WorkerParts {
                session,
                writer: PieceWriter::new(encoder),
            });
        }
        Ok(workers)
    }

    /// One `backup-structure` call, in a sandbox that can read no rows,
    /// offered `uploads` (to create chunks of schema) when given.
    async fn structure(
        &self,
        part: StructurePart,
        artifact: ByteSink,
        max_runtime: Duration,
        uploads: Option<ChunkUploads>,
    ) -> (Result<()>, Option<ByteSink>, Option<ChunkUploads>) {
        let mut sandbox = match self.sandbox_with(Grant::Structure, max_runtime).await {
            Ok(sandbox) => sandbox,
            Err(e) => return (Err(e), Some(artifact), uploads),
        };
        if let Some(uploads) = uploads {
            sandbox.state().chunks = ChunkAccess::Backup(uploads);
        }
        let sink = match sandbox.push_sink(artifact) {
            Ok(sink) => sink,
            Err(e) => return (Err(e), None, take_uploads(&mut sandbox)),
        };
        let result = sandbox
            .backup_structure(part, Resource::new_borrow(sink.rep()))
            .await;
        let artifact = sandbox.state().table.delete(sink).ok();
        let uploads = take_uploads(&mut sandbox);
        (
            result.and_then(|r| self.plugin_result("backup-structure", r)),
            artifact,
            uploads,
        )
    }

    /// Runs the engine's own `check`, in a fresh sandbox, on the head of
    /// the backup it just wrote, before anything is published: a plugin
    /// that reports success after writing something it could not restore
    /// fails the step instead of becoming "latest". The head is read back
    /// from the store and decoded as a restore would; an encrypted artifact
    /// cannot be decoded here (the host holds only recipients), so its check
    /// sees the plaintext head captured as the plugin wrote it, and the
    /// stored bytes are covered by the checksum re-read.
    async fn check_backup(
        &self,
        catalog: &Catalog,
        manifest: &Manifest,
        captured_head: Vec<u8>,
        head_size: usize,
    ) -> Result<()> {
        let head = if manifest.encryption.is_some() {
            captured_head
        } else {
            let none = codec::load_identities(&[])?;
            read_head(catalog, manifest, &none, head_size).await?
        };
        let mut sandbox = self.sandbox().await?;
        let refused = match sandbox.check(head).await? {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let latest = match catalog
            .latest(&manifest.source.instance, &manifest.source.database)
            .await
        {
            Ok(Some(key)) => format!("latest still points at {key}"),
            Ok(None) => "there is still no latest backup".to_string(),
            Err(e) => format!("the pointer was not moved ({e:#})"),
        };
        Err(Failure::new(
            Kind::Plugin,
            format!(
                "plugin {}'s backup wrote an artifact its own check refuses: {}; nothing was published \
                 ({} was removed), {latest}. The plugin is faulty: report this to its author",
                self.name(),
                crate::failure::wit_message(&refused),
                manifest.key
            ),
        )
        .into())
    }

    async fn restore(&self) -> Result<(String, Option<Manifest>)> {
        let target = self.connection("target")?;
        let from_instance = self
            .request
            .from_instance
            .clone()
            .or_else(|| target.instance())
            .unwrap_or_else(|| "localhost".to_string());
        let from_database = self
            .request
            .from_database
            .clone()
            .unwrap_or_else(|| target.database.clone());
        let catalog = self.catalog().await?;
        let identities = Arc::new(codec::load_identities(&self.request.identities)?);
        let manifest = catalog
            .resolve(
                &from_instance,
                &from_database,
                self.request.artifact.as_deref(),
            )
            .await?;
        let format = artifact_format(self.plugin, &manifest, "restores")?;
        tracing::info!(
            plugin = self.name(),
            "restoring {} from {} into {}",
            manifest.key,
            catalog.location(),
            target.database
        );
        let head = read_head(&catalog, &manifest, &identities, head_size(format)).await?;
        let mut sandbox = self.sandbox().await?;
        let checked = sandbox.check(head).await?;
        checked.map_err(|e| {
            Failure::from_plugin(self.name(), "restore", e)
                .message_with_suffix(format!("; {} was not changed", target.database))
        })?;
        let reader = catalog.open(&manifest, &identities).await?;
        if !manifest.chunks.is_empty() {
            tracing::info!(
                plugin = self.name(),
                "{} is chunked ({} chunks); the plugin loads them with up to {} session(s)",
                manifest.key,
                manifest.chunks.len(),
                self.job.jobs.max(1)
            );
        }
        sandbox.state().chunks = ChunkAccess::Restore(Box::new(ChunkReads {
            catalog: catalog.clone(),
            manifest: manifest.clone(),
            identities: identities.clone(),
        }));
        let label = format!("artifact {}", manifest.key);
        // The exact total: the main stream and every chunk.
        let total = manifest.total_size();
        let progress = self.request.progress.stream(
            format!("restore of {}", target.database),
            reader.meter(),
            Some(total),
        );
        let source = sandbox.push_source(ByteSource::new(label, SourceKind::Artifact(reader)))?;
        let result = sandbox.restore(Resource::new_borrow(source.rep())).await;
        drop(progress);
        let mut source = sandbox.state().table.delete(source)?;
        if let Err(e) = result.and_then(|r| self.plugin_result("restore", r)) {
            // A loader choking on a truncated or altered artifact is a
            // symptom; the damaged artifact is the cause worth reporting.
            if let Some(damage) = source.artifact_mut().and_then(|r| r.damage()) {
                return Err(Failure::new(
                    Kind::ArtifactRejected,
                    format!("{damage}; {} was not changed ({e:#})", target.database),
                )
                .into());
            }
            return Err(e);
        }
        if !source.verified() {
            // The plugin should have verified before swapping; check now so a
            // damaged artifact is at least reported.
            tracing::warn!(
                plugin = self.name(),
                "the plugin did not verify the artifact before finishing; verifying now"
            );
            if let Some(reader) = source.artifact_mut()
                && let Err(e) = reader.verify().await
            {
                return Err(Failure::new(
                    Kind::ArtifactRejected,
                    format!(
                        "{e}; plugin {} restored it without verifying — report this to its author",
                        self.name()
                    ),
                )
                .into());
            }
        }
        let summary = format!("restored {} into {}", manifest.key, target.database);
        Ok((summary, Some(manifest)))
    }

    async fn transform(&self) -> Result<(String, Option<Manifest>)> {
        let target = self.connection("target")?;
        let path = self.request.script.as_ref().ok_or_else(|| {
            Failure::new(Kind::Usage, "transform needs a script: pass --script FILE")
        })?;
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            Failure::new(
                Kind::Usage,
                format!("cannot open script {}: {e}", path.display()),
            )
        })?;
        tracing::info!(
            plugin = self.name(),
            "running {} against {}",
            path.display(),
            target.database
        );
        let mut sandbox = self.sandbox().await?;
        let label = format!("script {}", path.display());
        let script =
            sandbox.push_source(ByteSource::new(label, SourceKind::Pipe(Box::new(file))))?;
        let result = sandbox
            .transform(Resource::new_borrow(script.rep()))
            .await?;
        self.plugin_result("transform", result)?;
        Ok((
            format!("transformed {} with {}", target.database, path.display()),
            None,
        ))
    }

    /// Returns the result line and, when the plugin moved objects, their bytes.
    async fn copy(&self) -> Result<(String, Option<u64>)> {
        let source = self.connection("source")?;
        let target = self.connection("target")?;
        tracing::info!(
            plugin = self.name(),
            "copying {} on {} into {} on {}",
            source.database,
            source.display_address(),
            target.database,
            target.display_address()
        );
        let mut sandbox = self.sandbox().await?;
        self.start_sanitiser(&mut sandbox).await?;
        let result = sandbox
            .copy()
            .await
            .and_then(|r| self.plugin_result("copy", r));
        let stats = sandbox.state().objects.stats.clone();
        let sanitised = self.finish_sanitiser(&mut sandbox, result)?;
        let mut summary = format!("copied {} into {}", source.database, target.database);
        if let Some(s) = sanitised {
            summary.push_str("; ");
            summary.push_str(&s);
        }
        let objects = stats.summary();
        if let Some(o) = &objects {
            summary.push_str("; ");
            summary.push_str(o);
        }
        Ok((summary, objects.map(|_| stats.bytes)))
    }
}

impl Failure {
    fn message_with_suffix(mut self, suffix: String) -> anyhow::Error {
        self.message.push_str(&suffix);
        self.into()
    }
}

/// Largest artifact head the host reads for a plugin's `check`, whatever
/// the plugin's `describe` declares: the head is held in host memory (and
/// copied into the sandbox), and a format needs a few KiB to recognise itself.
/// Clamped here, where heads are read; refusing such a plugin at load time
/// would be the loader's decision.
pub const MAX_HEAD_SIZE: usize = 1 << 20;

/// The head size of `format`, clamped to [`MAX_HEAD_SIZE`].
/// The chunk uploads a structure call was offered, back from its sandbox.
fn take_uploads(sandbox: &mut Sandbox) -> Option<ChunkUploads> {
    match std::mem::take(&mut sandbox.state().chunks) {
        ChunkAccess::Backup(uploads) => Some(uploads),
        _ => None,
    }
}

fn head_size(format: &ArtifactFormat) -> usize {
    (format.head_size as usize).min(MAX_HEAD_SIZE)
}

/// Stored bytes fetched beyond a head's size for the codec's framing (zstd
/// block headers, age's chunk tags); a head that needs more is read again
/// from a whole download.
const HEAD_SLACK: u64 = 256 * 1024;

/// The first `size` bytes of the artifact, read separately so the restore
/// stream (and its checksum) starts at byte zero. Only the artifact's start
/// is fetched (a ranged GET on S3): a whole download begun and abandoned
/// would move megabytes for nothing and cost a connection.
async fn read_head(
    catalog: &Catalog,
    manifest: &Manifest,
    identities: &codec::Identities,
    size: usize,
) -> Result<Vec<u8>> {
    let stored = size as u64 + HEAD_SLACK;
    if stored < manifest.size {
        let start = catalog.open_start(manifest, identities, stored).await;
        match start {
            Ok(reader) => match first_bytes(reader, size).await {
                Ok(head) if head.len() == size => return Ok(head),
                Ok(_) => tracing::debug!("{}: its start decoded short", manifest.key),
                Err(e) => tracing::debug!("{}: decoding its start: {e:#}", manifest.key),
            },
            Err(e) => tracing::debug!("{}: reading its start: {e:#}", manifest.key),
        }
    }
    let reader = catalog.open(manifest, identities).await?;
    first_bytes(reader, size)
        .await
        .with_context(|| format!("reading the head of {}", manifest.key))
}

async fn first_bytes(reader: impl AsyncRead + Unpin, size: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(size);
    reader.take(size as u64).read_to_end(&mut head).await?;
    Ok(head)
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
