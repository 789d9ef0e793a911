//! The wasm runtime: one engine, compiled plugins cached on disk and
//! pre-linked once, and a fresh sandboxed Store for every step.

pub mod bindings;
mod cache_seal;
pub mod compile_cache;
pub mod registry;
pub mod sandbox;

use crate::capabilities::streams::{ByteSink, ByteSource};
use crate::failure::{Failure, Kind};
use anyhow::{Context, Result};
use bindings::{
    Engine as EngineWorld, EnginePre, Piece, PluginInfo, StructurePart, TableInfo, WitError,
};
use compile_cache::CompileCache;
use sandbox::StepState;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, Store};

/// The contract versions this host can run.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.3.0"];
/// How often the epoch advances: guests yield this often, so a deadline is
/// noticed within one tick even in a tight loop.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Time `describe` may take.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);

/// The shared wasm engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    sanitiser_linker: Linker<crate::sanitiser::state::SanitiserState>,
    cache: CompileCache,
    stop_ticker: Arc<AtomicBool>,
}

/// A plugin compiled, linked and described, ready to instantiate per step.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    pub file: std::path::PathBuf,
    pub from_cache: bool,
    /// Host interfaces the component imports beyond the always-granted
    /// ones (e.g. `http`, `sanitising`): what it can reach, for `inspect`.
    pub capabilities: Vec<String>,
    pre: EnginePre<StepState>,
}

impl LoadedPlugin {
    /// The `database_engine` label of its metrics: what it declares, else
    /// its name.
    pub fn metrics_engine(&self) -> &str {
        self.info
            .metrics_engine
            .as_deref()
            .unwrap_or(&self.info.name)
    }
}

impl Runtime {
    pub fn new(cache: CompileCache) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if std::env::var_os("ENVSYNC_PERFMAP").is_some() {
            // For `perf record`: names the compiled guest functions in
            // /tmp/perf-PID.map (docs/benchmarks.md, profiling).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        EngineWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking host interfaces")?;
        let sanitiser_linker = crate::sanitiser::linker(&engine)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("envsync-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch ticker")?;
        Ok(Runtime {
            engine,
            linker,
            sanitiser_linker,
            cache,
            stop_ticker,
        })
    }

    /// Compiles (or loads from cache) the engine plugin in `path`: the
    /// operator put it in the engine folder, so it must export the engine
    /// world (a sanitiser there is refused, see [`Role`]).
    pub async fn load_engine_file(&self, path: &Path) -> Result<LoadedPlugin> {
        let (component, from_cache) = self.cache.load(&self.engine, path)?;
        check_exports(&self.engine, &component, Role::Engine, path)?;
        self.load_engine(path, component, from_cache).await
    }

    /// Compiles (or loads from cache) the sanitiser in `path`: the operator
    /// put it in the sanitiser folder, so it may export nothing of the
    /// engine world (which would give it processes and credentials).
    pub async fn load_sanitiser_file(
        &self,
        path: &Path,
    ) -> Result<crate::sanitiser::LoadedSanitiser> {
        let (component, from_cache) = self.cache.load(&self.engine, path)?;
        check_exports(&self.engine, &component, Role::Sanitiser, path)?;
        crate::sanitiser::load(
            &self.engine,
            &self.sanitiser_linker,
            path,
            component,
            from_cache,
        )
        .await
    }

    /// Loads the engine plugin in `path` (an error if it is something else).
    pub async fn load(&self, path: &Path) -> Result<LoadedPlugin> {
        self.load_engine_file(path).await
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    async fn load_engine(
        &self,
        path: &Path,
        component: wasmtime::component::Component,
        from_cache: bool,
    ) -> Result<LoadedPlugin> {
        let capabilities: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .filter_map(|(name, _)| {
                let interface = name.strip_prefix("envsync:plugin/")?;
                let interface = interface.split('@').next().unwrap_or(interface);
                (!matches!(interface, "types" | "job" | "log" | "streams"))
                    .then(|| interface.to_string())
            })
            .collect();
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Failure::new(
                Kind::Plugin,
                format!("it needs host imports this host does not provide: {e:#}"),
            )
        })?;
        let pre = EnginePre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not match the engine world")?;
        let state = StepState::new(
            &path.display().to_string(),
            Default::default(),
            crate::capabilities::process::ProcessPolicy::none(),
            (sandbox::DEFAULT_MEMORY_CAP_MIB << 20) as usize,
        );
        let mut sandbox = Sandbox::start(
            &self.engine,
            &pre,
            state,
            "plugin",
            DESCRIBE_DEADLINE,
            CancellationToken::new(),
        )
        .await?;
        let info = sandbox.describe().await?;
        validate_info(&info)?;
        Ok(LoadedPlugin {
            info,
            file: path.to_path_buf(),
            from_cache,
            capabilities,
            pre,
        })
    }

    /// A fresh sandbox for one step of `plugin`.
    pub async fn sandbox(
        &self,
        plugin: &LoadedPlugin,
        state: StepState,
        max_runtime: Duration,
        stop: CancellationToken,
    ) -> Result<Sandbox> {
        Sandbox::start(
            &self.engine,
            &plugin.pre,
            state,
            &plugin.info.name,
            max_runtime,
            stop,
        )
        .await
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The role the operator gave a file by where they put it: engine plugins
/// in the plugin folder, sanitisers in its `sanitisers/` subfolder. What a
/// component exports never decides its role; it can only disqualify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Engine,
    Sanitiser,
}

impl Role {
    /// How `plugins list` and messages name the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Engine => "engine",
            Role::Sanitiser => "sanitiser",
        }
    }

    /// What a file of this role is, in a sentence.
    pub fn noun(self) -> &'static str {
        match self {
            Role::Engine => "engine plugin",
            Role::Sanitiser => "sanitiser",
        }
    }
}

const ENGINE_EXPORT: &str = "envsync:plugin/operations";
const SANITISER_EXPORT: &str = "envsync:plugin/sanitise";

/// Refuses a component whose exports do not fit the `role` the operator
/// gave `path` (a sanitiser exporting the engine world, a sanitiser in the
/// engine folder, something that is no envsync plugin), and one built
/// against a contract version this host does not know, with a message
/// naming the versions it does. Runs before anything is instantiated.
fn check_exports(
    engine: &Engine,
    component: &wasmtime::component::Component,
    role: Role,
    path: &Path,
) -> Result<()> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let find = |prefix: &str| exports.iter().find(|n| n.starts_with(prefix));
    let refuse =
        |message: String| -> Result<()> { Err(Failure::new(Kind::Plugin, message).into()) };
    let export = match (role, find(ENGINE_EXPORT), find(SANITISER_EXPORT)) {
        (Role::Sanitiser, Some(_), _) => {
            return refuse(format!(
                "it is in the sanitiser folder but exports the engine world ({ENGINE_EXPORT}); sanitisers may \
                 only export {SANITISER_EXPORT}, so it is refused (an engine plugin belongs in the plugin \
                 folder itself, if you trust it as one)"
            ));
        }
        (Role::Engine, None, Some(_)) => {
            let folder = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(registry::SANITISER_FOLDER);
            return refuse(format!(
                "it is a sanitiser ({SANITISER_EXPORT}) in the engine plugin folder, so it is refused: \
                 move it into {} if you trust it as a sanitiser",
                folder.display()
            ));
        }
        (Role::Engine, Some(export), _) | (Role::Sanitiser, None, Some(export)) => export,
        (_, None, None) => {
            return refuse(format!(
                "it is not an envsync plugin: it exports neither {ENGINE_EXPORT} (an engine) nor \
                 {SANITISER_EXPORT} (a sanitiser) (exports: {})",
                if exports.is_empty() {
                    "none".to_string()
                } else {
                    exports.join(", ")
                }
            ));
        }
    };
    let version = export
        .rsplit_once('@')
        .map(|(_, v)| v)
        .unwrap_or("unversioned");
    if !SUPPORTED_CONTRACTS.contains(&version) {
        return refuse(format!(
            "it was built against contract envsync:plugin@{version}; this host supports envsync:plugin@{}",
            SUPPORTED_CONTRACTS.join(", @")
        ));
    }
    Ok(())
}

/// A plugin's or sanitiser's own name must be usable as `--plugin NAME` and
/// in keys and labels.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(Failure::new(
            Kind::Plugin,
            format!("its name {name:?} is not usable: use lower-case letters, digits, - and _"),
        )
        .into());
    }
    Ok(())
}

fn validate_info(info: &PluginInfo) -> Result<()> {
    check_name(&info.name)?;
    if let Some(label) = &info.metrics_engine {
        check_name(label).map_err(|_| {
            Failure::new(
                Kind::Plugin,
                format!(
                    "its metrics engine label {label:?} is not usable: use lower-case letters, \
                     digits, - and _"
                ),
            )
        })?;
    }
    let ext = &info.artifact.extension;
    if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Err(Failure::new(
            Kind::Plugin,
            format!("its artifact extension {ext:?} is not usable in a key"),
        )
        .into());
    }
    Ok(())
}

/// One instance of a plugin in its own Store. Dropping it kills every child
/// program the plugin started. After any failure it must be dropped: a
/// trapped instance cannot be called again.
pub struct Sandbox {
    store: Store<StepState>,
    world: EngineWorld,
    plugin: String,
    limits: Limits,
}

/// What stops a running guest call: the step's deadline, the memory cap
/// (seen as a trap) and an operator's stop request (SIGTERM).
struct Limits {
    deadline: Instant,
    max_runtime: Duration,
    memory_cap_hit: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Sandbox {
    async fn start(
        engine: &Engine,
        pre: &EnginePre<StepState>,
        state: StepState,
        plugin: &str,
        max_runtime: Duration,
        stop: CancellationToken,
    ) -> Result<Self> {
        let memory_cap_hit = state.memory.hit_flag();
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store.set_hostcall_fuel(sandbox::ENGINE_HOSTCALL_FUEL);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let deadline = Instant::now() + max_runtime;
        let world = match tokio::time::timeout_at(deadline, pre.instantiate_async(&mut store)).await
        {
            Ok(Ok(world)) => world,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    Kind::Sandbox,
                    format!("plugin {plugin} failed to start: {e:#}"),
                )
                .into());
            }
            Err(_) => {
                return Err(Failure::new(
                    Kind::Sandbox,
                    format!("plugin {plugin} did not start within {max_runtime:?}"),
                )
                .into());
            }
        };
        Ok(Sandbox {
            store,
            world,
            plugin: plugin.to_string(),
            limits: Limits {
                deadline,
                max_runtime,
                memory_cap_hit,
                stop,
            },
        })
    }

    pub fn state(&mut self) -> &mut StepState {
        self.store.data_mut()
    }

    pub fn push_source(&mut self, source: ByteSource) -> Result<Resource<ByteSource>> {
        Ok(self.store.data_mut().table.push(source)?)
    }

    pub fn push_sink(&mut self, sink: ByteSink) -> Result<Resource<ByteSink>> {
        Ok(self.store.data_mut().table.push(sink)?)
    }

    pub async fn describe(&mut self) -> Result<PluginInfo> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_describe(&mut self.store);
        let result = guard(fut, &self.plugin, "describe", &self.limits).await;
        self.annotate(result)
    }

    pub async fn check(&mut self, head: Vec<u8>) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_check(&mut self.store, &head);
        let result = guard(fut, &self.plugin, "check", &self.limits).await;
        self.annotate(result)
    }

    pub async fn backup(&mut self, artifact: Resource<ByteSink>) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_backup(&mut self.store, artifact);
        let result = guard(fut, &self.plugin, "backup", &self.limits).await;
        self.annotate(result)
    }

    /// A sanitised backup's structure (`operations.backup-structure`).
    pub async fn backup_structure(
        &mut self,
        part: StructurePart,
        artifact: Resource<ByteSink>,
    ) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_backup_structure(&mut self.store, part, artifact);
        let result = guard(fut, &self.plugin, "backup-structure", &self.limits).await;
        self.annotate(result)
    }

    /// A sanitised backup's rows (`operations.backup-rows`).
    pub async fn backup_rows(&mut self) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_backup_rows(&mut self.store);
        let result = guard(fut, &self.plugin, "backup-rows", &self.limits).await;
        self.annotate(result)
    }

    /// `operations.encode`, its answer bounded to `answer_bytes`: lifting a
    /// longer answer fails before the host holds a copy.
    pub async fn encode(
        &mut self,
        piece: &Piece,
        answer_bytes: usize,
    ) -> Result<Result<Vec<u8>, WitError>> {
        self.store.set_hostcall_fuel(answer_bytes);
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_encode(&mut self.store, piece);
        let result = guard(fut, &self.plugin, "encode", &self.limits).await;
        self.annotate(result)
    }

    pub async fn restore(
        &mut self,
        artifact: Resource<ByteSource>,
    ) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_restore(&mut self.store, artifact);
        let result = guard(fut, &self.plugin, "restore", &self.limits).await;
        self.annotate(result)
    }

    pub async fn export_dump(
        &mut self,
        artifact: Resource<ByteSource>,
        out: Resource<ByteSink>,
    ) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_export_dump(&mut self.store, artifact, out);
        let result = guard(fut, &self.plugin, "export-dump", &self.limits).await;
        self.annotate(result)
    }

    pub async fn transform(
        &mut self,
        script: Resource<ByteSource>,
    ) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_transform(&mut self.store, script);
        let result = guard(fut, &self.plugin, "transform", &self.limits).await;
        self.annotate(result)
    }

    pub async fn copy(&mut self) -> Result<Result<(), WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_copy(&mut self.store);
        let result = guard(fut, &self.plugin, "copy", &self.limits).await;
        self.annotate(result)
    }

    pub async fn schema(&mut self) -> Result<Result<Vec<TableInfo>, WitError>> {
        let ops = self.world.envsync_plugin_operations();
        let fut = ops.call_schema(&mut self.store);
        let result = guard(fut, &self.plugin, "schema", &self.limits).await;
        self.annotate(result)
    }

    /// Adds what the guest printed to stderr (a Rust panic message, say) to
    /// a sandbox failure.
    fn annotate<T>(&self, result: Result<T>) -> Result<T> {
        let stderr = self.store.data().guest_stderr();
        match result {
            Err(e) if !stderr.is_empty() => match e.downcast::<Failure>() {
                Ok(f) => Err(Failure::new(
                    f.kind,
                    format!("{}; the plugin printed: {stderr}", f.message),
                )
                .into()),
                Err(e) => Err(e),
            },
            other => other,
        }
    }
}

/// Runs one guest call under the step's limits and turns traps, deadline,
/// memory cap and a stop request into errors that name the plugin and the
/// cause. On deadline or stop the call is dropped; the caller then drops the
/// sandbox, which kills the plugin's programs.
async fn guard<T>(
    call: impl Future<Output = wasmtime::Result<T>>,
    plugin: &str,
    op: &str,
    limits: &Limits,
) -> Result<T> {
    match bounded(call, limits.deadline, &limits.stop).await {
        Bounded::Returned(Ok(value)) => Ok(value),
        Bounded::Returned(Err(trap)) => Err(trap_failure(
            &format!("plugin {plugin}"),
            op,
            &trap,
            &limits.memory_cap_hit,
        )
        .into()),
        Bounded::Overran => Err(Failure::new(
            Kind::Sandbox,
            format!(
                "plugin {plugin} exceeded the step's maximum runtime of {} during {op}; it was stopped and its programs killed",
                humantime::format_duration(limits.max_runtime)
            ),
        )
        .into()),
        Bounded::Stopped => Err(Failure::new(
            Kind::Stopped,
            format!("plugin {plugin} was stopped during {op} because envsync-host was asked to stop (SIGTERM or SIGINT); its programs were killed"),
        )
        .into()),
    }
}

/// How a guest call raced against its deadline and a stop request ended.
pub(crate) enum Bounded<T> {
    /// The call returned or trapped.
    Returned(wasmtime::Result<T>),
    /// The deadline passed first; the call was dropped.
    Overran,
    /// The operator asked envsync-host to stop; the call was dropped.
    Stopped,
}

/// Runs a guest call (engine or sanitiser) until it returns, `deadline`
/// passes or `stop` is requested; the caller words what each means.
pub(crate) async fn bounded<T>(
    call: impl Future<Output = wasmtime::Result<T>>,
    deadline: Instant,
    stop: &CancellationToken,
) -> Bounded<T> {
    tokio::select! {
        result = tokio::time::timeout_at(deadline, call) => match result {
            Ok(returned) => Bounded::Returned(returned),
            Err(_) => Bounded::Overran,
        },
        () = stop.cancelled() => Bounded::Stopped,
    }
}

/// A guest call that trapped, for engines and sanitisers alike: stopped by
/// the memory cap (its limiter set `memory_cap_hit`) or crashed.
pub(crate) fn trap_failure(
    who: &str,
    what: &str,
    trap: &wasmtime::Error,
    memory_cap_hit: &AtomicBool,
) -> Failure {
    let cause = root_message(trap);
    if memory_cap_hit.load(Ordering::SeqCst) {
        Failure::new(
            Kind::Sandbox,
            format!("{who} was stopped during {what}: {cause}"),
        )
    } else {
        Failure::new(
            Kind::Sandbox,
            format!("{who} crashed (trapped) during {what}: {cause}"),
        )
    }
}

/// The most useful line of a trap: the trap code or the limiter's message.
fn root_message(error: &wasmtime::Error) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    error.root_cause().to_string()
}
