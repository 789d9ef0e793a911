//! Compiled components kept on disk, so a second start loads native code
//! instead of compiling the plugin again. Compiling is bounded: a file over
//! [`MAX_WASM_BYTES`] is refused unread, and compiling runs on its own
//! thread raced against [`COMPILE_DEADLINE`].
//!
//! Two places: the cache this host writes (sealed under its own key), and
//! an optional read-only folder of components compiled when the host was
//! installed (`plugins precompile`, run by the container image's build), so
//! a pod with an empty cache does not compile at start. Why the installed
//! folder is trusted is in docs/decisions/0017-precompiled-plugins.md.

use crate::failure::{Failure, Kind};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Largest plugin file the host compiles. First-party plugins are under
/// 0.5 MiB; compiling takes memory and time that grow with the size, so a
/// far larger file is refused before any of it is read into memory.
pub const MAX_WASM_BYTES: u64 = 64 << 20;
/// Longest compiling one plugin may take (first-party plugins take a few
/// seconds, in a debug host too: its Cranelift is optimised, Cargo.toml).
pub const COMPILE_DEADLINE: Duration = Duration::from_secs(120);

/// Where compiled plugins are cached.
pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Components compiled at install time, read-only.
    installed: Option<PathBuf>,
}

impl CompileCache {
    /// `dir` None disables caching (every start compiles).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache {
            dir,
            installed: None,
        }
    }

    /// Also looks for components in `dir`, written by `plugins precompile`.
    pub fn with_installed(mut self, dir: Option<PathBuf>) -> Self {
        self.installed = dir;
        self
    }

    /// The folder of precompiled components: `$ENVSYNC_PRECOMPILED_DIR`
    /// (the container image sets it).
    pub fn default_installed_dir() -> Option<PathBuf> {
        std::env::var_os("ENVSYNC_PRECOMPILED_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    }

    /// The default cache folder: `$ENVSYNC_CACHE_DIR`, else the user's cache
    /// dir.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("ENVSYNC_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("envsync").join("components")))
    }

    /// Loads `wasm` compiled for `engine`, from the cache when this host has
    /// compiled the same bytes before. Returns whether it was a cache hit.
    pub fn load(&self, engine: &Engine, wasm_path: &Path) -> Result<(Component, bool)> {
        let bytes = read_bounded(wasm_path, MAX_WASM_BYTES)?;
        if let Some(installed) = &self.installed
            && let Some(component) = load_installed(engine, installed, &bytes)
        {
            return Ok((component, true));
        }
        let Some(dir) = &self.dir else {
            let compiled = compile(engine, bytes, wasm_path, COMPILE_DEADLINE)?;
            // SAFETY: these bytes were produced by `precompile_component` just now.
            let component = unsafe { Component::deserialize(engine, &compiled)? };
            return Ok((component, false));
        };
        let cached = dir.join(format!("{}.cwasm", cache_key(engine, &bytes)));
        if let Some(verified) = super::cache_seal::open(dir, &cached) {
            // SAFETY: `verified` is bytes whose HMAC under this cache's
            // secret key checks out: only this host's `precompile` below
            // sealed them, for this host build (the file name includes the
            // engine's compatibility hash and the host version).
            match unsafe { Component::deserialize(engine, &verified) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => tracing::warn!(
                    "ignoring unusable compiled cache {}: {e:#}",
                    cached.display()
                ),
            }
        }
        let compiled = compile(engine, bytes, wasm_path, COMPILE_DEADLINE)?;
        let sealed = super::cache_seal::seal(dir, &compiled);
        if let Err(e) = sealed.and_then(|sealed| write_atomically(dir, &cached, &sealed)) {
            tracing::warn!(
                "could not cache compiled plugin in {}: {e:#}",
                dir.display()
            );
        }
        // SAFETY: these bytes were produced by `precompile_component` just now.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }
}

/// The component for `wasm` in the installed folder `dir`, if it has one
/// this host can run.
fn load_installed(engine: &Engine, dir: &Path, wasm: &[u8]) -> Option<Component> {
    let file = dir.join(format!("{}.cwasm", installed_key(wasm)));
    let verified = super::cache_seal::open_installed(dir, &file)?;
    // SAFETY: `verified` is bytes whose HMAC under the installed folder's key
    // checks out, in a folder only root or this user can write (checked by
    // `open_installed`): written by `precompile_into` for these wasm bytes
    // and this host version. wasmtime itself refuses code compiled for CPU
    // features this machine lacks or for another engine configuration.
    match unsafe { Component::deserialize(engine, &verified) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::info!(
                "not using precompiled {}: {e:#}; compiling instead",
                file.display()
            );
            None
        }
    }
}

/// Compiles the plugin `wasm_path` into the installed folder `dir` (made if
/// needed), sealed under its key. Returns the file written.
pub fn precompile_into(engine: &Engine, wasm_path: &Path, dir: &Path) -> Result<PathBuf> {
    let bytes = read_bounded(wasm_path, MAX_WASM_BYTES)?;
    let file = dir.join(format!("{}.cwasm", installed_key(&bytes)));
    let compiled = compile(engine, bytes, wasm_path, COMPILE_DEADLINE)?;
    let sealed = super::cache_seal::seal(dir, &compiled)?;
    write_atomically(dir, &file, &sealed)?;
    Ok(file)
}

/// Makes the installed folder `dir` readable by the users that run the
/// host (its key included): only its owner may write it.
pub fn publish_installed(dir: &Path) -> Result<()> {
    super::cache_seal::publish(dir)
}

/// The name of `wasm`'s component in an installed folder: the wasm bytes
/// and the host version, not the engine's compatibility hash, which
/// includes the CPU features of the machine that compiled it. Whether a
/// node can run it is wasmtime's check when it is loaded.
fn installed_key(wasm: &[u8]) -> String {
    let mut sha = Sha256::new();
    sha.update(wasm);
    sha.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(sha.finalize())
}

/// The bytes of `path`, refused unread when the file is over `limit`.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let refuse = |size: u64| {
        Failure::new(
            Kind::Plugin,
            format!(
                "{} is {} MiB, over the {} MiB limit on plugin files; it was not loaded",
                path.display(),
                size.div_ceil(1 << 20),
                limit >> 20
            ),
        )
    };
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > limit {
        return Err(refuse(size).into());
    }
    // The file may grow between the check and the read: read one byte past
    // the limit at most.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(refuse(bytes.len() as u64).into());
    }
    Ok(bytes)
}

/// Compiles `wasm` to native code on its own thread, raced against
/// `deadline`.
fn compile(engine: &Engine, wasm: Vec<u8>, path: &Path, deadline: Duration) -> Result<Vec<u8>> {
    let engine = engine.clone();
    match within(deadline, move || engine.precompile_component(&wasm))? {
        Some(compiled) => compiled.map_err(anyhow::Error::from).with_context(|| {
            format!("{} is not a valid WebAssembly component", path.display())
        }),
        None => Err(Failure::new(
            Kind::Plugin,
            format!(
                "compiling {} took longer than {}; it was not loaded (a plugin this slow to compile is \
                 far larger or more complex than any envsync plugin)",
                path.display(),
                humantime::format_duration(deadline)
            ),
        )
        .into()),
    }
}

/// Runs `work` on its own thread and waits at most `deadline` for it (None
/// past it). Cranelift cannot be interrupted: a late thread is left to
/// finish and its work is thrown away.
fn within<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("envsync-compile".into())
        .spawn(move || {
            // The receiver is gone when the deadline passed: nothing to do.
            let _ = tx.send(work());
        })
        .context("starting a thread to compile a plugin")?;
    match rx.recv_timeout(deadline) {
        Ok(done) => Ok(Some(done)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            anyhow::bail!("compiling a plugin stopped without an answer (the compiler panicked)")
        }
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hash = DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut sha = Sha256::new();
    sha.update(wasm);
    sha.update(env!("CARGO_PKG_VERSION").as_bytes());
    sha.update(engine_hash.finish().to_le_bytes());
    hex::encode(sha.finalize())
}

fn write_atomically(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        dest.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_over_the_limit_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wasm");
        std::fs::write(&path, vec![0u8; (2 << 20) + 1]).unwrap();
        let e = read_bounded(&path, 2 << 20).unwrap_err();
        assert!(
            e.to_string()
                .contains("is 3 MiB, over the 2 MiB limit on plugin files"),
            "{e}"
        );
        assert_eq!(read_bounded(&path, 3 << 20).unwrap().len(), (2 << 20) + 1);
    }

    #[test]
    fn compiling_is_raced_against_its_deadline() {
        let engine = Engine::default();
        // An empty component: "\0asm", version 0x0d, layer 1.
        let empty = b"\0asm\x0d\0\x01\0".to_vec();
        let path = Path::new("empty.wasm");
        let compiled = compile(&engine, empty, path, Duration::from_secs(60)).unwrap();
        // SAFETY: produced by `precompile_component` just now.
        assert!(unsafe { Component::deserialize(&engine, &compiled) }.is_ok());
        let e = compile(&engine, b"junk".to_vec(), path, Duration::from_secs(60)).unwrap_err();
        assert!(
            format!("{e:#}").contains("is not a valid WebAssembly component"),
            "{e:#}"
        );
        let slow = || std::thread::sleep(Duration::from_secs(2));
        assert!(within(Duration::from_millis(50), slow).unwrap().is_none());
        assert_eq!(within(Duration::from_secs(10), || 7).unwrap(), Some(7));
    }
}
