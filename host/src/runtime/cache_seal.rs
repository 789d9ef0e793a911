//! Authenticates the compile cache: every compiled component this host
//! writes is sealed with an HMAC-SHA-256 under a random key kept in the
//! cache folder (`key`, mode 0600, made once), and only a file whose seal
//! verifies is handed to `Component::deserialize`. A compiled component is
//! native code that wasmtime loads without checking it, so a file planted
//! in (or altered inside) the cache folder would otherwise run as the host.
//!
//! Layout of a sealed file: the compiled bytes, then the 32-byte MAC.
//!
//! A folder of components compiled at install time ([`open_installed`]) is
//! read by users other than the one that wrote it, so its key cannot be
//! secret: there the trust is that only root (or the user running the host)
//! can write the folder, its key and its entries, and the seal still binds
//! each entry to that folder and catches damage.

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

/// The compiled bytes of `path` in the installed folder `dir` when the
/// folder, its key and the file can be written only by root or this user
/// and the seal verifies; None otherwise (with a warning unless there is no
/// such file). Nothing there is ever deleted or rewritten.
pub fn open_installed(dir: &Path, path: &Path) -> Option<Vec<u8>> {
    let mut entry = match open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("not using precompiled {}: {e}", path.display());
            return None;
        }
    };
    let checked = (|| -> Result<Vec<u8>> {
        let folder =
            std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if !folder.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        only_trusted_writers(dir, &folder)?;
        let mut key_file = open_no_follow(&dir.join(KEY_FILE))
            .with_context(|| format!("opening {}", dir.join(KEY_FILE).display()))?;
        only_trusted_writers(&dir.join(KEY_FILE), &key_file.metadata()?)?;
        let mut key = Vec::new();
        key_file.read_to_end(&mut key)?;
        let key: [u8; KEY_LEN] = key.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not a cache key (wrong length)",
                dir.join(KEY_FILE).display()
            )
        })?;
        only_trusted_writers(path, &entry.metadata()?)?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        let authentic = bytes.len() >= MAC_LEN && {
            let (compiled, tag) = bytes.split_at(bytes.len() - MAC_LEN);
            mac(&key, compiled).verify_slice(tag).is_ok()
        };
        if !authentic {
            bail!(
                "its seal does not verify under {}",
                dir.join(KEY_FILE).display()
            );
        }
        bytes.truncate(bytes.len() - MAC_LEN);
        Ok(bytes)
    })();
    match checked {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(
                "not using precompiled {}: {e:#}; the plugin is compiled instead",
                path.display()
            );
            None
        }
    }
}

/// Makes the installed folder `dir`, its key and its entries readable by
/// everyone and writable only by their owner.
pub fn publish(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))
    };
    set(dir, 0o755)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_file() {
            set(&path, 0o644)?;
        }
    }
    Ok(())
}

fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Refuses `path` (with metadata `meta`) unless only root or this user can
/// write it.
fn only_trusted_writers(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if (meta.uid() != 0 && meta.uid() != me) || meta.mode() & 0o022 != 0 {
        bail!(
            "{} must be writable only by its owner, root or this user (it is owned by uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
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
    fn an_installed_folder_serves_without_writing_and_only_when_others_cannot_write_it() {
        use crate::runtime::compile_cache::{precompile_into, publish_installed};
        use std::os::unix::fs::PermissionsExt;
        let (tmp, wasm, _, engine) = setup();
        let installed = tmp.path().join("installed");
        let entry = precompile_into(&engine, &wasm, &installed).unwrap();
        publish_installed(&installed).unwrap();
        let key = std::fs::metadata(installed.join(KEY_FILE)).unwrap();
        assert_eq!(
            key.mode() & 0o777,
            0o644,
            "readable by the users running the host"
        );
        // No writable cache at all: the installed component is used.
        let cache = CompileCache::new(None).with_installed(Some(installed.clone()));
        assert!(cache.load(&engine, &wasm).unwrap().1, "served precompiled");

        // An entry others could have written is not used, and not deleted.
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(&entry, 0o666);
        assert!(!cache.load(&engine, &wasm).unwrap().1);
        assert!(entry.exists());
        mode(&entry, 0o644);
        mode(&installed, 0o777);
        assert!(
            !cache.load(&engine, &wasm).unwrap().1,
            "a folder others can write"
        );
        mode(&installed, 0o755);
        assert!(cache.load(&engine, &wasm).unwrap().1);

        // A damaged entry: compiled instead, the file left as it is.
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(!cache.load(&engine, &wasm).unwrap().1);
        assert_eq!(std::fs::read(&entry).unwrap(), bytes);
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
