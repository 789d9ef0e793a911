//! Compiled components kept on disk, so a second start loads native code
//! instead of compiling the plugin again.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled plugins are cached.
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// `dir` None disables caching (every start compiles).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache { dir }
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
        let bytes =
            std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, &bytes)?, false));
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
        let compiled = engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{} is not a valid WebAssembly component",
                    wasm_path.display()
                )
            })?;
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
