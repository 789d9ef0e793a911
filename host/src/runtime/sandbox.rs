//! The sandbox one step runs in: a fresh Store with deny-by-default WASI, a
//! memory cap and the capabilities granted for this step.

use crate::capabilities::job::JobContext;
use crate::capabilities::process::ProcessPolicy;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Default cap on a plugin's memory: all its linear memories together.
pub const DEFAULT_MEMORY_CAP_MIB: u64 = 256;
/// How much of the guest's own stderr (e.g. a panic message) is kept.
const GUEST_STDERR: usize = 16 * 1024;

/// Core instances one plugin may have. A first-party plugin has 3 (its
/// module and the two shim modules `wit-component` adds); the rest is margin
/// for other toolchains' adapters.
pub const MAX_INSTANCES: usize = 16;
/// Linear memories one plugin may have (first-party plugins: 1).
pub const MAX_MEMORIES: usize = 4;
/// Tables one plugin may have (first-party plugins: 2).
pub const MAX_TABLES: usize = 8;
/// Elements of all of a plugin's tables together (first-party plugins: under
/// 200). Each costs the host a pointer or two, so this bounds tables to a
/// couple of MiB.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most bytes an engine plugin may hand the host in one call (a list or
/// string it passes, or all of them together): the largest HTTP request
/// body (`capabilities::http`) and some room for its headers. Without it
/// wasmtime allows 128 MiB per call, and a plugin can name one buffer many
/// times in a list so the host copies it over and over.
pub const ENGINE_HOSTCALL_FUEL: usize = (64 << 20) + (1 << 20);

/// One cap over everything a plugin's Store can allocate in the host: the
/// sum of all its linear memories (however many it declares or grows), the
/// number of instances, memories and tables, and the elements of all its
/// tables. Used by engines and sanitisers alike. Refusing memory growth
/// traps and remembers that it did (the hit flag), so the failure can be
/// reported as "memory cap reached".
///
/// Shared memories are never offered (wasmtime is built without threads):
/// wasmtime does not ask the limiter about them.
pub struct MemoryCap {
    cap: usize,
    /// Bytes of all linear memories so far. Memories only grow and live as
    /// long as the Store, so a running total is exact (a growth that
    /// wasmtime approves here and then fails to map is still counted, which
    /// errs on the safe side).
    memory_total: usize,
    table_elements: usize,
    hit: Arc<AtomicBool>,
}

impl MemoryCap {
    pub fn new(cap: usize) -> Self {
        MemoryCap {
            cap,
            memory_total: 0,
            table_elements: 0,
            hit: Arc::new(AtomicBool::new(false)),
        }
    }
    pub fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }
    /// Bytes of all the plugin's linear memories.
    pub fn memory_total(&self) -> usize {
        self.memory_total
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    /// Called with `current` 0 when a memory is created, then on every
    /// growth: the difference is what this memory adds to the total.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.memory_total - current.min(self.memory_total)).saturating_add(desired);
        if total > self.cap {
            self.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!(
                "memory cap of {} MiB reached (its memories would hold {} MiB)",
                self.cap >> 20,
                total >> 20
            );
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total =
            (self.table_elements - current.min(self.table_elements)).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            // Growth fails (`table.grow` returns -1, creation fails): a
            // plugin that needs this many is broken, not short of memory.
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
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
    /// Object-store locations of the step (`capabilities::objects`).
    pub(crate) objects: crate::capabilities::objects::ObjectGrant,
    /// Where `write-rows` goes during a sanitised backup's `backup-rows`
    /// (`capabilities::sanitised_rows`, `capabilities::parallel_rows`).
    pub(crate) sanitised_rows: Option<crate::capabilities::sanitised_rows::RowsTarget>,
    /// Where the plugin's `log.progress` goes (besides the log).
    pub(crate) progress: Option<crate::progress::Tracker>,
    /// The chunks of the artifact being written or restored.
    pub(crate) chunks: crate::capabilities::chunks::ChunkAccess,
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
            objects: Default::default(),
            sanitised_rows: None,
            progress: None,
            chunks: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_cap_is_over_all_memories_together() {
        let mut cap = MemoryCap::new(4 * MIB);
        // Two memories of 1 MiB are created, then each grows.
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(cap.memory_total(), 3 * MIB);
        assert!(!cap.hit_flag().load(Ordering::SeqCst));
        // Each memory alone would fit; together they do not.
        let e = cap.memory_growing(MIB, 3 * MIB, None).unwrap_err();
        assert!(e.to_string().contains("memory cap of 4 MiB"), "{e}");
        assert!(cap.hit_flag().load(Ordering::SeqCst));
        assert_eq!(
            cap.memory_total(),
            3 * MIB,
            "a refused growth is not counted"
        );
        assert!(cap.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(cap.memory_total(), 4 * MIB);
    }

    #[test]
    fn table_elements_are_capped_over_all_tables() {
        let mut cap = MemoryCap::new(MIB);
        assert!(cap.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(cap.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(!cap.table_growing(0, 1, None).unwrap());
        assert!(
            !cap.table_growing(MAX_TABLE_ELEMENTS / 2, MAX_TABLE_ELEMENTS / 2 + 1, None)
                .unwrap()
        );
        assert_eq!(
            (cap.instances(), cap.memories(), cap.tables()),
            (MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES)
        );
    }

    /// A core module (hand-encoded; the host has no WAT parser) with the
    /// given sections after the header.
    fn module(engine: &wasmtime::Engine, sections: &[u8]) -> wasmtime::Module {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(sections);
        wasmtime::Module::new(engine, &bytes).unwrap()
    }

    fn store(engine: &wasmtime::Engine, cap: usize) -> wasmtime::Store<MemoryCap> {
        let mut store = wasmtime::Store::new(engine, MemoryCap::new(cap));
        store.limiter(|c| c);
        store
    }

    #[test]
    fn a_guest_with_several_memories_gets_one_cap() {
        let engine = wasmtime::Engine::default();
        // Two empty memories; `g0(n)` grows memory 0 by n pages, `g1(n)`
        // memory 1.
        let two = module(
            &engine,
            &[
                0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type (i32) -> i32
                0x03, 0x03, 0x02, 0x00, 0x00, // two functions of that type
                0x05, 0x05, 0x02, 0x00, 0x00, 0x00, 0x00, // two memories, 0 pages
                0x07, 0x0b, 0x02, 0x02, b'g', b'0', 0x00, 0x00, 0x02, b'g', b'1', 0x00, 0x01, 0x0a,
                0x0f, 0x02, // code: local.get 0; memory.grow M; end
                0x06, 0x00, 0x20, 0x00, 0x40, 0x00, 0x0b, //
                0x06, 0x00, 0x20, 0x00, 0x40, 0x01, 0x0b,
            ],
        );
        // A 2 MiB cap is 32 pages: 20 pages in each memory is 40.
        let mut store = store(&engine, 2 * MIB);
        let instance = wasmtime::Instance::new(&mut store, &two, &[]).unwrap();
        let g0 = instance
            .get_typed_func::<i32, i32>(&mut store, "g0")
            .unwrap();
        let g1 = instance
            .get_typed_func::<i32, i32>(&mut store, "g1")
            .unwrap();
        assert_eq!(g0.call(&mut store, 20).unwrap(), 0);
        assert_eq!(g1.call(&mut store, 10).unwrap(), 0);
        let trap = g1.call(&mut store, 10).unwrap_err();
        assert!(
            format!("{trap:?}").contains("memory cap of 2 MiB reached"),
            "{trap:?}"
        );
        assert!(store.data().hit_flag().load(Ordering::SeqCst));
        assert_eq!(store.data().memory_total(), 30 * 64 * 1024);

        // Three memories of 1 MiB each, at creation: over a 2 MiB cap.
        let three = module(
            &engine,
            &[0x05, 0x07, 0x03, 0x00, 0x10, 0x00, 0x10, 0x00, 0x10],
        );
        let mut store = self::store(&engine, 2 * MIB);
        let e = wasmtime::Instance::new(&mut store, &three, &[]).unwrap_err();
        assert!(format!("{e:?}").contains("memory cap"), "{e:?}");
    }

    #[test]
    fn counts_of_memories_and_table_sizes_are_bounded() {
        let engine = wasmtime::Engine::default();
        // Five empty memories: one more than a plugin may have.
        let five = module(
            &engine,
            &[
                0x05, 0x0b, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
        );
        let mut store = store(&engine, MIB);
        let e = wasmtime::Instance::new(&mut store, &five, &[]).unwrap_err();
        assert!(format!("{e:?}").contains("memory count too high"), "{e:?}");
        // A table of 200,000 functions.
        let table = module(&engine, &[0x04, 0x06, 0x01, 0x70, 0x00, 0xc0, 0x9a, 0x0c]);
        let mut store = self::store(&engine, MIB);
        assert!(wasmtime::Instance::new(&mut store, &table, &[]).is_err());
        // Instances: each instantiation of a module counts.
        let empty = module(&engine, &[]);
        let mut store = self::store(&engine, MIB);
        for _ in 0..MAX_INSTANCES {
            wasmtime::Instance::new(&mut store, &empty, &[]).unwrap();
        }
        let e = wasmtime::Instance::new(&mut store, &empty, &[]).unwrap_err();
        assert!(
            format!("{e:?}").contains("instance count too high"),
            "{e:?}"
        );
    }
}
