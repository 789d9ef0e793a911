//! Where the workspace, the `envsync-host` binary and the plugin folder are.
//!
//! The suites test the binaries `./scripts/build.sh` produced; they never build
//! anything themselves. `ENVSYNC_HOST_BIN` and `ENVSYNC_PLUGIN_DIR` override the
//! defaults (`target/debug/envsync-host`, `target/plugins`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

/// The cargo target folder: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The `envsync-host` binary under test.
pub fn host_bin() -> Result<PathBuf> {
    let (path, origin) = match std::env::var_os("ENVSYNC_HOST_BIN") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "ENVSYNC_HOST_BIN"),
        _ => (
            target_dir().join("debug").join("envsync-host"),
            "the default location",
        ),
    };
    if !path.is_file() {
        bail!(
            "envsync-host binary not found at {} ({origin}): run ./scripts/build.sh first",
            path.display()
        );
    }
    Ok(path)
}

/// The folder holding the first-party plugins (`*.wasm`).
pub fn plugin_dir() -> Result<PathBuf> {
    let (path, origin) = match std::env::var_os("ENVSYNC_PLUGIN_DIR") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "ENVSYNC_PLUGIN_DIR"),
        _ => (target_dir().join("plugins"), "the default location"),
    };
    let has_wasm = std::fs::read_dir(&path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        })
        .unwrap_or(false);
    if !has_wasm {
        bail!(
            "no plugins (*.wasm) found in {} ({origin}): run ./scripts/build.sh first",
            path.display()
        );
    }
    Ok(path)
}

/// A file under `tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}
