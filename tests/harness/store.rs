//! A local folder store in a temporary folder, and ways to look into it.
//!
//! Layout written by the host (README.md, "Store layout"):
//! `<root>/<instance>/<UTC %Y-%m-%dT%H%M%SZ>-<database>.<ext>` (the artifact),
//! `<artifact>.manifest.json` beside it, and the pointer
//! `<root>/<instance>/latest-<database>.txt` holding the artifact's key (its
//! path relative to the root). Unfinished uploads are hidden (a path
//! component starting with `.`) and never named by the pointer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A store folder, deleted on drop.
pub struct LocalStore {
    dir: tempfile::TempDir,
}

impl LocalStore {
    pub fn new() -> Result<LocalStore> {
        Ok(LocalStore {
            dir: tempfile::Builder::new()
                .prefix("envsync-store-")
                .tempdir()?,
        })
    }

    /// A store folder inside `parent`.
    pub fn new_in(parent: &Path) -> Result<LocalStore> {
        Ok(LocalStore {
            dir: tempfile::Builder::new()
                .prefix("envsync-store-")
                .tempdir_in(parent)?,
        })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The root as a plain path string (what `--store` takes).
    pub fn path_arg(&self) -> String {
        self.root().display().to_string()
    }

    /// The root as a `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.root().display())
    }

    pub fn pointer_path(&self, instance: &str, database: &str) -> PathBuf {
        self.root()
            .join(instance)
            .join(format!("latest-{database}.txt"))
    }

    /// The key the pointer names, trimmed; `None` if there is no pointer.
    pub fn pointer(&self, instance: &str, database: &str) -> Option<String> {
        std::fs::read_to_string(self.pointer_path(instance, database))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn artifact_path(&self, key: &str) -> PathBuf {
        self.root().join(key)
    }

    pub fn manifest_path(&self, key: &str) -> PathBuf {
        self.root().join(format!("{key}.manifest.json"))
    }

    pub fn manifest(&self, key: &str) -> Result<Value> {
        let path = self.manifest_path(key);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no manifest at {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("manifest {} is not JSON", path.display()))
    }

    /// Every file under the root (relative paths, sorted), hidden ones included.
    pub fn files(&self) -> Vec<String> {
        let mut out = vec![];
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }

    /// The files no reader should ever take for a finished backup: those with
    /// a path component starting with `.`.
    pub fn hidden_files(&self) -> Vec<String> {
        self.files().into_iter().filter(|f| is_hidden(f)).collect()
    }

    /// The visible files (artifacts, manifests, pointers).
    pub fn visible_files(&self) -> Vec<String> {
        self.files().into_iter().filter(|f| !is_hidden(f)).collect()
    }

    /// The keys of visible artifacts (files with a manifest beside them or
    /// ending in `ext`), sorted.
    pub fn artifact_keys(&self, ext: &str) -> Vec<String> {
        self.visible_files()
            .into_iter()
            .filter(|f| f.ends_with(&format!(".{ext}")))
            .collect()
    }

    /// Checks that the artifact `key` and its manifest agree: `size` and
    /// `sha256` match the file, and the other fields the layout promises are
    /// there. Returns the manifest.
    pub fn verify_manifest(&self, key: &str, plugin: &str) -> Result<Value> {
        let manifest = self.manifest(key)?;
        let path = self.artifact_path(key);
        let size = std::fs::metadata(&path)
            .with_context(|| format!("artifact {} missing", path.display()))?
            .len();
        ensure!(
            manifest["size"].as_u64() == Some(size),
            "manifest size {} != file size {size}: {manifest:#}",
            manifest["size"]
        );
        let sha = sha256_file(&path)?;
        ensure!(
            manifest["sha256"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(&sha)),
            "manifest sha256 {} != sha256 of the file {sha}: {manifest:#}",
            manifest["sha256"]
        );
        ensure!(
            manifest["plugin"].as_str() == Some(plugin),
            "manifest plugin is not {plugin:?}: {manifest:#}"
        );
        for field in ["plugin_version", "format", "created_at"] {
            ensure!(
                manifest[field].as_str().is_some_and(|s| !s.is_empty()),
                "manifest lacks {field}: {manifest:#}"
            );
        }
        ensure!(
            !manifest["source"].is_null(),
            "manifest lacks source: {manifest:#}"
        );
        Ok(manifest)
    }

    /// Writes `bytes` as artifact `new_key` with a manifest copied from the
    /// one of `template_key`, its `size` and `sha256` set to match `bytes` and
    /// every string naming the template's key or file name renamed. Used to
    /// make bad artifacts whose manifest is nevertheless consistent.
    pub fn put_artifact(&self, new_key: &str, bytes: &[u8], template_key: &str) -> Result<()> {
        let mut manifest = self.manifest(template_key)?;
        rename_strings(&mut manifest, template_key, new_key);
        let old_name = file_name(template_key);
        let new_name = file_name(new_key);
        rename_strings(&mut manifest, old_name, new_name);
        manifest["size"] = Value::from(bytes.len() as u64);
        manifest["sha256"] = Value::from(hex::encode(Sha256::digest(bytes)));
        let path = self.artifact_path(new_key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        std::fs::write(
            self.manifest_path(new_key),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        Ok(())
    }
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn rename_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(items) => items.iter_mut().for_each(|v| rename_strings(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| rename_strings(v, from, to)),
        _ => {}
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// Whether a relative path has a component starting with `.`.
pub fn is_hidden(relative: &str) -> bool {
    relative.split('/').any(|c| c.starts_with('.'))
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that `key` is `<instance>/<YYYY-MM-DDTHHMMSSZ>-<database>.<ext>`.
pub fn check_key_layout(key: &str, instance: &str, database: &str, ext: &str) -> Result<()> {
    let rest = key
        .strip_prefix(&format!("{instance}/"))
        .ok_or_else(|| anyhow!("key {key:?} is not under {instance}/"))?;
    let stamp = rest
        .strip_suffix(&format!("-{database}.{ext}"))
        .ok_or_else(|| anyhow!("key {key:?} does not end in -{database}.{ext}"))?;
    // 2026-11-21T101500Z
    let b = stamp.as_bytes();
    let ok = b.len() == 18
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            17 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !ok {
        bail!("key {key:?}: {stamp:?} is not a UTC %Y-%m-%dT%H%M%SZ time stamp");
    }
    Ok(())
}

/// Sleeps past the start of the next UTC second, so that a backup started
/// afterwards gets a key different from one that finished before.
pub fn wait_for_next_second() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = now.subsec_nanos() as u64;
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - into) + Duration::from_millis(20));
}
