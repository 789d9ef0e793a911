//! One sanitised step: a fresh instance of the sanitiser, configured with
//! the task's rules, called for each batch of rows or documents. Every call
//! is bounded (memory cap, a deadline per call, the step's stop request,
//! hostcall fuel); every answer is checked (no reshaped or invented rows, no
//! more than its input allows, see `bound`) and scanned for
//! residual personal data. The first failure is kept: the instance cannot be
//! called again, and the step reports it as the cause.

use super::LoadedSanitiser;
use super::batch::Packed;
use super::bindings::envsync::plugin::types::{
    ColumnInfo as SchemaColumn, TableInfo as SchemaTable,
};
use super::bindings::{RunContext, Sanitiser, SanitiserError, SanitiserInfo, SanitiserPre};
use super::bound::{AnswerBound, OTHER_CALLS_FUEL, fuel_exhausted};
use super::pii::{Findings, Scanner};
use super::state::SanitiserState;
use crate::failure::{Failure, Kind};
use crate::runtime::{Bounded, bounded, trap_failure};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store};

/// A packed batch as the engine's bindings have it.
pub type EngineBatch = crate::runtime::bindings::envsync::plugin::types::RowBatch;
/// The same, as the sanitiser's bindings have it.
type SanitiserBatch = super::bindings::envsync::plugin::types::RowBatch;

/// How a step sanitises.
#[derive(Clone)]
pub struct SanitiseOptions {
    /// The sanitiser's name in the plugin folder.
    pub sanitiser: String,
    /// The sanitiser's rules, as text in its own format.
    pub rules: String,
    /// Where the rules came from, for messages.
    pub rules_origin: String,
    /// The secret behind `keyed.hash`.
    pub salt: Arc<[u8]>,
    pub memory_cap_mib: u64,
    /// Longest one call may take.
    pub call_timeout: Duration,
    /// E-mail domains the residual scan accepts (the masks' domains).
    pub allowed_email_domains: Vec<String>,
    /// Fail the step when the residual scan finds anything.
    pub strict: bool,
    pub environment: String,
}

impl std::fmt::Debug for SanitiseOptions {
    /// Everything but the salt.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SanitiseOptions")
            .field("sanitiser", &self.sanitiser)
            .field("rules_origin", &self.rules_origin)
            .field("salt", &"<redacted>")
            .field("memory_cap_mib", &self.memory_cap_mib)
            .field("call_timeout", &self.call_timeout)
            .field("allowed_email_domains", &self.allowed_email_domains)
            .field("strict", &self.strict)
            .finish()
    }
}

/// What a session did, for the step's summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SanitiseStats {
    pub tables: BTreeSet<String>,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Rows scanned but not sent to the sanitiser (tables it has no rules for).
    pub rows_passed: u64,
    pub batches: u64,
    pub bytes_in: u64,
    pub documents_in: u64,
    pub documents_out: u64,
    /// Time spent inside the sanitiser.
    #[serde(serialize_with = "seconds")]
    pub busy: Duration,
    pub findings: Findings,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl SanitiseStats {
    /// Adds another instance's work (parallel sanitising).
    pub fn absorb(&mut self, other: &SanitiseStats) {
        self.tables.extend(other.tables.iter().cloned());
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.rows_passed += other.rows_passed;
        self.batches += other.batches;
        self.bytes_in += other.bytes_in;
        self.documents_in += other.documents_in;
        self.documents_out += other.documents_out;
        self.busy += other.busy;
        self.findings.add(&other.findings);
    }

    /// `sanitised 10,000 rows of 2 tables (120 dropped) with sanitise in
    /// 1.2s (8,333 rows/s, 2.1 MiB/s); residual personal data: none`.
    pub fn summary(&self, sanitiser: &str) -> String {
        let secs = self.busy.as_secs_f64().max(1e-6);
        let mut out = format!(
            "sanitised {} rows of {} table(s) ({} dropped) with {sanitiser} in {:.1}s ({:.0} rows/s, {}/s)",
            self.rows_in,
            self.tables.len(),
            self.rows_in - self.rows_out.min(self.rows_in),
            self.busy.as_secs_f64(),
            self.rows_in as f64 / secs,
            crate::step::human_size((self.bytes_in as f64 / secs) as u64),
        );
        if self.documents_in > 0 {
            out.push_str(&format!(
                ", {} documents ({} dropped)",
                self.documents_in,
                self.documents_in - self.documents_out.min(self.documents_in)
            ));
        }
        if self.rows_passed > 0 {
            out.push_str(&format!(
                ", {} rows of other tables scanned",
                self.rows_passed
            ));
        }
        out.push_str(&format!(
            "; residual personal data: {}",
            self.findings.describe()
        ));
        out
    }
}

/// A running instance of a sanitiser in its own Store.
pub(crate) struct Instance {
    store: Store<SanitiserState>,
    world: Sanitiser,
    limits: CallLimits,
    /// Rows or documents were handed to it: from now on its messages and
    /// stderr are withheld (see `redact`).
    seen_rows: bool,
}

/// What stops one call into a sanitiser: its deadline, the memory cap (seen
/// as a trap) and an operator's stop request.
struct CallLimits {
    name: String,
    timeout: Duration,
    memory_cap_hit: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Instance {
    pub(crate) async fn start(
        engine: &Engine,
        pre: &SanitiserPre<SanitiserState>,
        name: &str,
        salt: Arc<[u8]>,
        memory_cap_mib: u64,
        call_timeout: Duration,
        stop: CancellationToken,
    ) -> Result<Instance> {
        let state = SanitiserState::new(salt, (memory_cap_mib << 20) as usize);
        let memory_cap_hit = state.memory.hit_flag();
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store.set_hostcall_fuel(OTHER_CALLS_FUEL);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let world =
            match tokio::time::timeout(call_timeout, pre.instantiate_async(&mut store)).await {
                Ok(Ok(world)) => world,
                Ok(Err(e)) => {
                    return Err(Failure::new(
                        Kind::Sandbox,
                        format!("sanitiser {name} failed to start: {e:#}"),
                    )
                    .into());
                }
                Err(_) => {
                    return Err(Failure::new(
                        Kind::Sandbox,
                        format!("sanitiser {name} did not start within {call_timeout:?}"),
                    )
                    .into());
                }
            };
        Ok(Instance {
            store,
            world,
            limits: CallLimits {
                name: name.to_string(),
                timeout: call_timeout,
                memory_cap_hit,
                stop,
            },
            seen_rows: false,
        })
    }

    pub(crate) async fn describe(&mut self) -> Result<SanitiserInfo> {
        self.store.set_hostcall_fuel(OTHER_CALLS_FUEL);
        let api = self.world.envsync_plugin_sanitise();
        let call = api.call_describe(&mut self.store);
        self.limits
            .guard("describe", None, call)
            .await
            .map_err(|e| self.with_stderr(e))
    }

    async fn configure(
        &mut self,
        rules: &str,
        context: &RunContext,
    ) -> Result<Result<Option<Vec<String>>, SanitiserError>> {
        self.store.set_hostcall_fuel(OTHER_CALLS_FUEL);
        let api = self.world.envsync_plugin_sanitise();
        let call = api.call_configure(&mut self.store, rules, context);
        self.limits
            .guard("configure", None, call)
            .await
            .map_err(|e| self.with_stderr(e))
    }

    async fn transform_rows(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &SanitiserBatch,
        bound: &AnswerBound,
    ) -> Result<Result<SanitiserBatch, SanitiserError>> {
        // An answer over the bound fails while wasmtime lifts it, before
        // the host holds a copy.
        self.store.set_hostcall_fuel(bound.rows_fuel(columns.len()));
        self.seen_rows = true;
        let api = self.world.envsync_plugin_sanitise();
        let call = api.call_transform_rows(&mut self.store, table, columns, rows);
        let what = format!("transform-rows of table {table}");
        let limit = format!(
            "{} for a batch of {} rows",
            bound.describe("rows", "values"),
            bound.items
        );
        self.limits
            .guard(&what, Some(&limit), call)
            .await
            .map_err(|e| self.with_stderr(e))
    }

    async fn transform_documents(
        &mut self,
        index: &str,
        documents: &[String],
        bound: &AnswerBound,
    ) -> Result<Result<Vec<String>, SanitiserError>> {
        self.store.set_hostcall_fuel(bound.documents_fuel());
        self.seen_rows = true;
        let api = self.world.envsync_plugin_sanitise();
        let call = api.call_transform_documents(&mut self.store, index, documents);
        let what = format!("transform-documents of index {index}");
        let limit = format!(
            "{} for a batch of {} documents",
            bound.describe("documents", "text"),
            bound.items
        );
        self.limits
            .guard(&what, Some(&limit), call)
            .await
            .map_err(|e| self.with_stderr(e))
    }

    async fn uncovered(&mut self, schema: &[SchemaTable]) -> Result<Vec<String>> {
        self.store.set_hostcall_fuel(OTHER_CALLS_FUEL);
        let api = self.world.envsync_plugin_sanitise();
        let call = api.call_uncovered(&mut self.store, schema);
        self.limits
            .guard("uncovered", None, call)
            .await
            .map_err(|e| self.with_stderr(e))
    }

    /// Adds what the sanitiser printed to stderr (a panic message).
    fn with_stderr(&self, error: anyhow::Error) -> anyhow::Error {
        let stderr = self.store.data().stderr();
        if stderr.is_empty() {
            return error;
        }
        let printed = if self.seen_rows {
            super::redact::stderr(&stderr)
        } else {
            format!("it printed: {stderr}")
        };
        match error.downcast::<Failure>() {
            Ok(f) => Failure::new(f.kind, format!("{}; {printed}", f.message)).into(),
            Err(e) => e,
        }
    }
}

impl CallLimits {
    /// One call under the per-call deadline, the memory cap, the stop
    /// request and its hostcall fuel; `limit` says what the answer may hold
    /// (for the message when it holds more).
    async fn guard<T>(
        &self,
        what: &str,
        limit: Option<&str>,
        call: impl Future<Output = wasmtime::Result<T>>,
    ) -> Result<T> {
        let CallLimits {
            name,
            timeout,
            memory_cap_hit,
            stop,
        } = self;
        let deadline = tokio::time::Instant::now() + *timeout;
        match bounded(call, deadline, stop).await {
            Bounded::Returned(Ok(v)) => Ok(v),
            Bounded::Returned(Err(trap)) if fuel_exhausted(&trap) => Err(Failure::new(
                Kind::Sandbox,
                format!(
                    "sanitiser {name} answered {what} with more than the host accepts ({}); \
                     the answer was refused before the host copied it",
                    limit.unwrap_or("a few MiB")
                ),
            )
            .into()),
            Bounded::Returned(Err(trap)) => Err(trap_failure(
                &format!("sanitiser {name}"),
                what,
                &trap,
                memory_cap_hit,
            )
            .into()),
            Bounded::Overran => Err(Failure::new(
                Kind::Sandbox,
                format!(
                    "sanitiser {name} took longer than {} for {what} and was stopped (a loop, or far too much work per call)",
                    humantime::format_duration(*timeout)
                ),
            )
            .into()),
            Bounded::Stopped => Err(Failure::new(
                Kind::Stopped,
                format!("sanitiser {name} was stopped during {what} because envsync-host was asked to stop"),
            )
            .into()),
        }
    }
}

/// The sanitiser of one step.
pub struct SanitiserSession {
    instance: Instance,
    name: String,
    /// The tables the sanitiser asked for (None: all).
    wanted: Option<Vec<String>>,
    scanner: Scanner,
    strict: bool,
    pub stats: SanitiseStats,
    /// The first failure; later calls fail with it.
    failure: Option<String>,
    failure_kind: Kind,
    /// The run context's start, shared by every instance of one step.
    started_at: i64,
}

impl SanitiserSession {
    /// Starts `sanitiser` for a step and configures it with the rules.
    pub async fn start(
        engine: &Engine,
        sanitiser: &LoadedSanitiser,
        options: &SanitiseOptions,
        stop: CancellationToken,
    ) -> Result<SanitiserSession> {
        let started_at = chrono::Utc::now().timestamp();
        Self::start_at(engine, sanitiser, options, stop, started_at).await
    }

    /// When this session's run context started: another instance
    /// started with the same (`start_at`) masks every value as this one
    /// would (parallel sanitising).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Takes in another instance's statistics and failure.
    pub fn absorb(&mut self, other: SanitiserSession) {
        self.stats.absorb(&other.stats);
        if self.failure.is_none() && other.failure.is_some() {
            self.failure = other.failure;
            self.failure_kind = other.failure_kind;
        }
    }

    /// [`SanitiserSession::start`] with a given run context start.
    pub async fn start_at(
        engine: &Engine,
        sanitiser: &LoadedSanitiser,
        options: &SanitiseOptions,
        stop: CancellationToken,
        started_at: i64,
    ) -> Result<SanitiserSession> {
        let name = sanitiser.info.name.clone();
        let mut instance = Instance::start(
            engine,
            &sanitiser.pre,
            &name,
            options.salt.clone(),
            options.memory_cap_mib,
            options.call_timeout,
            stop,
        )
        .await?;
        let context = RunContext {
            started_at,
            environment: options.environment.clone(),
        };
        let wanted = instance
            .configure(&options.rules, &context)
            .await?
            .map_err(|e| {
                Failure::new(
                    Kind::Usage,
                    format!(
                        "sanitiser {name} refused the rules in {}: {}",
                        options.rules_origin,
                        error_text(&e)
                    ),
                )
            })?;
        Ok(SanitiserSession {
            instance,
            name,
            wanted,
            scanner: Scanner::new(&options.allowed_email_domains),
            strict: options.strict,
            stats: SanitiseStats::default(),
            failure: None,
            failure_kind: Kind::Sandbox,
            started_at,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tables the engine must pass through `transform-rows`: all of
    /// them, so the residual scan sees every value.
    pub fn plan_tables(&self) -> Option<Vec<String>> {
        None
    }

    /// Whether the sanitiser asked for `table` (`schema.table` matches a
    /// bare `table` too).
    fn wants(&self, table: &str) -> bool {
        match &self.wanted {
            None => true,
            Some(list) => list
                .iter()
                .any(|t| t == table || table.rsplit_once('.').is_some_and(|(_, bare)| bare == t)),
        }
    }

    /// Tells the sanitiser the live schema (before any rows) and returns
    /// the columns its rules do not cover, as `table.column`.
    pub async fn uncovered(
        &mut self,
        schema: &[crate::runtime::bindings::TableInfo],
    ) -> Result<Vec<String>> {
        let schema: Vec<SchemaTable> = schema
            .iter()
            .map(|t| SchemaTable {
                name: t.name.clone(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| SchemaColumn {
                        name: c.name.clone(),
                        data_type: c.data_type.clone(),
                        nullable: c.nullable,
                        unique: c.unique,
                    })
                    .collect(),
            })
            .collect();
        self.instance.uncovered(&schema).await
    }

    /// The failure that ended the session, as the step's cause.
    pub fn failure(&self) -> Option<anyhow::Error> {
        self.failure
            .as_ref()
            .map(|m| Failure::new(self.failure_kind, m.clone()).into())
    }

    /// After the engine is done: the strict residual check.
    pub fn finish(&self) -> Result<()> {
        if let Some(f) = self.failure() {
            return Err(f);
        }
        let found = &self.stats.findings;
        if self.strict && found.total() > 0 {
            return Err(Failure::new(
                Kind::StepFailed,
                format!(
                    "the residual-PII scan found values that still look personal after sanitiser {}: {} \
                     (strict mode: nothing was published; add rules for those columns, or allow the \
                     masks' e-mail domains)",
                    self.name,
                    found.describe()
                ),
            )
            .into());
        }
        Ok(())
    }

    /// The sanitiser's answer, or the failure it becomes: its typed error
    /// (the step failed) or a trap, deadline or stop (already classified).
    fn answer<T>(
        &mut self,
        result: Result<Result<T, SanitiserError>>,
        on: &str,
    ) -> Result<T, String> {
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                // Only transform calls answer here: the sanitiser has rows.
                let said = super::redact::error(&e);
                let message = format!("sanitiser {} failed on {on}: {said}", self.name);
                Err(self.fail(Kind::StepFailed, message))
            }
            Err(e) => {
                let kind = crate::failure::kind_of(&e).unwrap_or(Kind::Sandbox);
                Err(self.fail(kind, format!("{e:#}")))
            }
        }
    }

    fn fail(&mut self, kind: Kind, message: String) -> String {
        tracing::error!("{message}");
        self.failure_kind = kind;
        self.failure = Some(message.clone());
        message
    }

    /// Sends a batch through the sanitiser (when it wants the table) and
    /// scans what comes back. The batch's lists move between the sandboxes
    /// without being copied per value. Errors are the message for the engine.
    pub async fn transform_rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        batch: EngineBatch,
    ) -> Result<EngineBatch, String> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        // Every batch is checked once on its way in and once on its way
        // back; the residual scan reads the checked batch the engine gets.
        let wanted = self.wants(&table);
        let (rows_in, bytes_in) = match Packed::new(
            batch.rows,
            &batch.data,
            &batch.ends,
            &batch.nulls,
            columns.len(),
        ) {
            Ok(p) => {
                if !wanted {
                    self.scan(&p);
                }
                (p.rows, p.bytes())
            }
            Err(why) => {
                return Err(self.fail(
                    Kind::Plugin,
                    format!("the engine sent a bad batch of table {table}: {why}"),
                ));
            }
        };
        let out = if wanted {
            let started = Instant::now();
            self.stats.tables.insert(table.clone());
            self.stats.rows_in += rows_in as u64;
            self.stats.batches += 1;
            self.stats.bytes_in += bytes_in as u64;
            let sent = SanitiserBatch {
                rows: batch.rows,
                data: batch.data,
                ends: batch.ends,
                nulls: batch.nulls,
            };
            let bound = AnswerBound::for_input(rows_in, bytes_in);
            let result = self
                .instance
                .transform_rows(&table, &columns, &sent, &bound)
                .await;
            self.stats.busy += started.elapsed();
            let out = self.answer(result, &format!("table {table}"))?;
            if out.data.len() > bound.bytes {
                let message = format!(
                    "sanitiser {} returned {} of values for a batch of {rows_in} rows ({}) of table {table}; \
                     an answer may hold {}",
                    self.name,
                    crate::step::human_size(out.data.len() as u64),
                    crate::step::human_size(bytes_in as u64),
                    bound.describe("rows", "values"),
                );
                return Err(self.fail(Kind::Sandbox, message));
            }
            let rows_out = match Packed::new(
                out.rows,
                &out.data,
                &out.ends,
                &out.nulls,
                columns.len(),
            ) {
                Ok(p) => {
                    self.scan(&p);
                    p.rows
                }
                Err(why) => {
                    let message = format!(
                        "sanitiser {} returned a bad batch for table {table} ({why}); rows may be dropped, never reshaped",
                        self.name
                    );
                    return Err(self.fail(Kind::Sandbox, message));
                }
            };
            if rows_out > rows_in {
                let message = format!(
                    "sanitiser {} returned {rows_out} rows for a batch of {rows_in} rows of table {table}; rows may be dropped, never added",
                    self.name
                );
                return Err(self.fail(Kind::Sandbox, message));
            }
            self.stats.rows_out += rows_out as u64;
            EngineBatch {
                rows: out.rows,
                data: out.data,
                ends: out.ends,
                nulls: out.nulls,
            }
        } else {
            self.stats.rows_passed += rows_in as u64;
            batch
        };
        Ok(out)
    }

    /// The residual scan over every value of a checked batch.
    fn scan(&mut self, batch: &Packed) {
        self.scanner
            .scan_batch(batch.text(), |min_len| batch.values_of_at_least(min_len));
        self.stats.findings = self.scanner.findings.clone();
    }

    /// Documents: as rows, without the column check.
    pub async fn transform_documents(
        &mut self,
        index: String,
        documents: Vec<String>,
    ) -> Result<Vec<String>, String> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        let out = if self.wants(&index) {
            let started = Instant::now();
            self.stats.tables.insert(index.clone());
            self.stats.documents_in += documents.len() as u64;
            self.stats.batches += 1;
            let bytes_in: usize = documents.iter().map(String::len).sum();
            self.stats.bytes_in += bytes_in as u64;
            let bound = AnswerBound::for_input(documents.len(), bytes_in);
            let result = self
                .instance
                .transform_documents(&index, &documents, &bound)
                .await;
            self.stats.busy += started.elapsed();
            let out = self.answer(result, &format!("index {index}"))?;
            let bytes_out: usize = out.iter().map(String::len).sum();
            if bytes_out > bound.bytes {
                let message = format!(
                    "sanitiser {} returned {} of documents for a batch of {} ({}) of index {index}; \
                     an answer may hold {}",
                    self.name,
                    crate::step::human_size(bytes_out as u64),
                    documents.len(),
                    crate::step::human_size(bytes_in as u64),
                    bound.describe("documents", "text"),
                );
                return Err(self.fail(Kind::Sandbox, message));
            }
            if out.len() > documents.len() {
                let message = format!(
                    "sanitiser {} returned {} documents for a batch of {} of index {index}; documents may be dropped, never added",
                    self.name,
                    out.len(),
                    documents.len()
                );
                return Err(self.fail(Kind::Sandbox, message));
            }
            self.stats.documents_out += out.len() as u64;
            out
        } else {
            documents
        };
        for d in &out {
            self.scanner.scan(d);
        }
        self.stats.findings = self.scanner.findings.clone();
        Ok(out)
    }
}

/// The message inside a sanitiser's typed error.
fn error_text(e: &SanitiserError) -> String {
    match e {
        SanitiserError::InvalidParam(m)
        | SanitiserError::BadArtifact(m)
        | SanitiserError::Denied(m)
        | SanitiserError::ProgramFailed(m)
        | SanitiserError::Io(m)
        | SanitiserError::Integrity(m)
        | SanitiserError::Other(m) => m.clone(),
    }
}
