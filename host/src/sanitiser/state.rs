//! What a sanitiser's Store holds: WASI with nothing in it (no directories,
//! environment, arguments or network; a clock stopped at the epoch, whose
//! timers never wait, and a constant random source, so the output cannot
//! depend on when or where it ran), a memory cap, and the salt behind `keyed.hash`, which the sanitiser
//! can use but never read.

use super::bindings::envsync::plugin::keyed;
use crate::runtime::sandbox::MemoryCap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How much of the sanitiser's own stderr (a panic message) is kept.
const GUEST_STDERR: usize = 16 * 1024;

pub struct SanitiserState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    salt: Arc<[u8]>,
    stderr: MemoryOutputPipe,
}

/// A clock that always says the Unix epoch.
struct StoppedClock;

impl wasmtime_wasi::HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The pollable of a stopped clock's `subscribe-duration` and
/// `subscribe-instant`: ready at once, whatever was asked. WASI's own
/// pollables wait in real time even when its clock is replaced, so a
/// sanitiser could time its work by asking whether 1 ms has passed; with
/// these, sleeping returns at once and polling tells nothing.
struct NoWait;

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for NoWait {
    async fn ready(&mut self) {}
}

impl monotonic_clock::Host for SanitiserState {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(wasmtime_wasi::HostMonotonicClock::now(&StoppedClock))
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(wasmtime_wasi::HostMonotonicClock::resolution(&StoppedClock))
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(NoWait)?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }

    fn subscribe_duration(
        &mut self,
        _duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(NoWait)?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }
}

/// Replaces WASI's `monotonic-clock` in the sanitiser linker (after
/// `add_to_linker_async`) with the stopped one above, pollables included.
pub fn link_stopped_clock(linker: &mut Linker<SanitiserState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let linked = monotonic_clock::add_to_linker::<_, HasSelf<SanitiserState>>(linker, |s| s);
    linker.allow_shadowing(false);
    linked.map_err(anyhow::Error::from)
}

impl SanitiserState {
    pub fn new(salt: Arc<[u8]>, memory_cap: usize) -> Self {
        let stderr = MemoryOutputPipe::new(GUEST_STDERR);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(StoppedClock)
            .monotonic_clock(StoppedClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5a; 32]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0xa5; 32]))
            .insecure_random_seed(0)
            .build();
        SanitiserState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_cap),
            salt,
            stderr,
        }
    }

    /// What the sanitiser wrote to its stderr (a Rust panic lands here).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for SanitiserState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl keyed::Host for SanitiserState {
    async fn hash(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        Ok(keyed_hash(&self.salt, &data).to_vec())
    }
}

impl super::bindings::envsync::plugin::types::Host for SanitiserState {}

/// HMAC-SHA-256 of `data` under `salt`.
pub fn keyed_hash(salt: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hash_is_hmac_sha256() {
        // RFC 4231 test case 2.
        let mac = keyed_hash(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
