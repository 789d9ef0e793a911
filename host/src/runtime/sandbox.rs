//! The sandbox one step runs in: a fresh Store with deny-by-default WASI, a
//! memory cap and the capabilities granted for this step.

use crate::capabilities::job::JobContext;
use crate::capabilities::process::ProcessPolicy;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Default cap on a plugin's linear memory.
pub const DEFAULT_MEMORY_CAP_MIB: u64 = 256;
/// How much of the guest's own stderr (e.g. a panic message) is kept.
const GUEST_STDERR: usize = 16 * 1024;

/// Refuses memory growth past the cap and remembers that it did, so the
/// resulting trap can be reported as "memory cap reached".
pub struct MemoryCap {
    cap: usize,
    hit: Arc<AtomicBool>,
}

impl MemoryCap {
    pub fn new(cap: usize) -> Self {
        MemoryCap {
            cap,
            hit: Arc::new(AtomicBool::new(false)),
        }
    }
    pub fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!(
                "memory cap of {} MiB reached (asked for {} MiB)",
                self.cap >> 20,
                desired >> 20
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Everything one plugin call can reach.
pub struct StepState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) plugin_name: String,
    pub(crate) job: Arc<JobContext>,
    pub(crate) process: ProcessPolicy,
    pub(crate) guest_stderr: MemoryOutputPipe,
    /// The step's sanitiser, when it sanitises.
    pub(crate) sanitiser: Option<crate::sanitiser::SanitiserSession>,
    /// HTTP clients of the step's connections (`capabilities::http`).
    pub(crate) http: crate::capabilities::http::HttpClients,
}

impl StepState {
    pub fn new(
        plugin_name: &str,
        job: Arc<JobContext>,
        process: ProcessPolicy,
        memory_cap: usize,
    ) -> Self {
        let guest_stderr = MemoryOutputPipe::new(GUEST_STDERR);
        // Deny by default: no preopened directories, no environment, no
        // arguments, no sockets or name lookups. Clocks and randomness stay.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(guest_stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StepState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_cap),
            plugin_name: plugin_name.to_string(),
            job,
            process,
            guest_stderr,
            sanitiser: None,
            http: Default::default(),
        }
    }

    /// What the guest wrote to its stderr (Rust panics land here).
    pub fn guest_stderr(&self) -> String {
        String::from_utf8_lossy(&self.guest_stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
