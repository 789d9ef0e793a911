//! Authenticates the compile cache: every compiled component this host
//! writes is sealed with an HMAC-SHA-256 under a random key kept in the
//! cache folder (`key`, mode 0600, made once), and only a file whose seal
//! verifies is handed to `Component::deserialize`. A compiled component is
//! native code that wasmtime loads without checking it, so a file planted
//! in (or altered inside) the cache folder would otherwise run as the host.
//!
//! Layout of a sealed file: the compiled bytes, then the 32-byte MAC.

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// `compiled` sealed with the key of the cache folder `dir` (made on first use).
pub fn seal(dir: &Path, compiled: &[u8]) -> Result<Vec<u8>> {
    let key = cache_key(dir)?;
    let mut sealed = Vec::with_capacity(compiled.len() + MAC_LEN);
    sealed.extend_from_slice(compiled);
    sealed.extend_from_slice(&mac(&key, compiled).finalize().into_bytes());
    Ok(sealed)
}

/// The compiled bytes of the cache file `path` when its seal verifies under
/// the key of `dir`; None when there is no such file, or (with a warning)
/// when it is not authentic, which deletes it so it is compiled afresh.
/// The bytes are read once into memory and verified there: what is
/// deserialized is exactly what was verified, whatever happens to the file.
pub fn open(dir: &Path, path: &Path) -> Option<Vec<u8>> {
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("ignoring unreadable compiled cache {}: {e}", path.display());
            return None;
        }
    };
    let key = match cache_key(dir) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!("not using the compile cache in {}: {e:#}", dir.display());
            return None;
        }
    };
    let authentic = bytes.len() >= MAC_LEN && {
        let (compiled, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        mac(&key, compiled).verify_slice(tag).is_ok()
    };
    if !authentic {
        tracing::warn!(
            "deleting compiled cache {}: it was not written by this host (its seal does not verify); \
             the plugin is compiled again",
            path.display()
        );
        let _ = std::fs::remove_file(path);
        return None;
    }
    bytes.truncate(bytes.len() - MAC_LEN);
    Some(bytes)
}

fn mac(key: &[u8; KEY_LEN], bytes: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    mac
}

/// The cache's key: read, or made (random, mode 0600) and linked into
/// place whole, so concurrent first runs agree on one key.
fn cache_key(dir: &Path) -> Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Ok(Some(key)) => return Ok(key),
        Ok(None) => {}
        // A new random key is always safe: entries sealed under the old one
        // stop verifying and are compiled again.
        Err(e) => {
            tracing::warn!("replacing the compile cache key: {e:#}");
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the unusable {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no random bytes for the cache key: {e}"))?;
    let tmp = dir.join(format!(".key-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            read_key(&path)?.context("the cache key vanished while it was made")
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Reads the key file (None: there is none), refusing a symlink, one
/// another user owns, or one that others can read or write.
fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{} must be a file of this user that only it can read and write (mode 0600)",
            path.display()
        );
    }
    let mut key = [0u8; KEY_LEN];
    let mut rest = Vec::new();
    file.read_exact(&mut key)
        .and_then(|()| file.read_to_end(&mut rest))
        .with_context(|| format!("reading {}", path.display()))?;
    if !rest.is_empty() {
        bail!("{} is not a cache key (wrong length)", path.display());
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::compile_cache::CompileCache;
    use wasmtime::Engine;

    /// The smallest component: preamble only (magic, version 0x0d, layer 1).
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn setup() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::path::PathBuf,
        Engine,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let wasm = tmp.path().join("empty.wasm");
        std::fs::write(&wasm, EMPTY_COMPONENT).unwrap();
        let cache = tmp.path().join("cache");
        (tmp, wasm, cache, Engine::default())
    }

    fn cached_file(cache: &Path) -> std::path::PathBuf {
        std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .expect("a cached component")
    }

    #[test]
    fn a_tampered_entry_is_recompiled_not_loaded() {
        let (_tmp, wasm, cache_dir, engine) = setup();
        let cache = CompileCache::new(Some(cache_dir.clone()));
        assert!(
            !cache.load(&engine, &wasm).unwrap().1,
            "first load compiles"
        );
        assert!(
            cache.load(&engine, &wasm).unwrap().1,
            "second load is a hit"
        );
        let key = std::fs::metadata(cache_dir.join(KEY_FILE)).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);

        // Flip one bit of the compiled code: the seal no longer verifies.
        let file = cached_file(&cache_dir);
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(
            !cache.load(&engine, &wasm).unwrap().1,
            "tampered: recompiled"
        );
        assert_ne!(std::fs::read(&file).unwrap(), bytes, "rewritten sealed");
        assert!(cache.load(&engine, &wasm).unwrap().1);
    }

    #[test]
    fn a_valid_compilation_not_sealed_by_this_cache_is_refused() {
        let (_tmp, wasm, cache_dir, engine) = setup();
        let cache = CompileCache::new(Some(cache_dir.clone()));
        cache.load(&engine, &wasm).unwrap();
        // A genuine wasmtime artifact, planted without this cache's key.
        let file = cached_file(&cache_dir);
        let planted = engine.precompile_component(EMPTY_COMPONENT).unwrap();
        std::fs::write(&file, &planted).unwrap();
        assert!(open(&cache_dir, &file).is_none());
        assert!(!file.exists(), "the planted file is deleted");
        // Sealed under another key: refused too.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(&file, seal(other.path(), &planted).unwrap()).unwrap();
        assert!(!cache.load(&engine, &wasm).unwrap().1);
    }

    #[test]
    fn a_key_others_can_read_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = seal(dir.path(), b"x").unwrap();
        let entry = dir.path().join("entry.cwasm");
        std::fs::write(&entry, &sealed).unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        // Whoever could read the old key could forge entries: a new key
        // makes every old entry fail to verify.
        assert!(open(dir.path(), &entry).is_none());
        let mode = std::fs::metadata(&key).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(seal(dir.path(), b"x").unwrap(), sealed);
    }
}
