//! Plugin folders laid out as an operator lays them out: engine plugins as
//! `NAME.wasm` in the folder, sanitisers as `sanitisers/NAME.wasm` (the
//! folder decides the role, the file name the name; docs/plugins.md).
//!
//! [`PluginFolder`] is a throwaway folder to put built plugins and test
//! fixtures in; [`copy_plugins`] copies a whole folder, sanitisers included;
//! [`test_plugin`] finds a built fixture.

use std::path::{Path, PathBuf};

use crate::paths;

/// The subfolder of a plugin folder that holds sanitisers (the host's
/// `registry::SANITISER_FOLDER`).
pub const SANITISERS: &str = "sanitisers";

/// The built test fixture `target/test-plugins/NAME.wasm`; panics with the
/// "run ./scripts/build.sh first" message if it is missing.
#[track_caller]
pub fn test_plugin(name: &str) -> PathBuf {
    let path = paths::target_dir()
        .join("test-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run ./scripts/build.sh first",
        path.display()
    );
    path
}

/// Copies the engine plugins (`FROM/*.wasm`) and sanitisers
/// (`FROM/sanitisers/*.wasm`) of plugin folder `from` into `to`, creating
/// it; nothing else.
pub fn copy_plugins(from: &Path, to: &Path) -> std::io::Result<()> {
    for sub in [Path::new(""), Path::new(SANITISERS)] {
        let source = from.join(sub);
        let target = to.join(sub);
        std::fs::create_dir_all(&target)?;
        let entries = match std::fs::read_dir(&source) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "wasm") {
                std::fs::copy(&path, target.join(path.file_name().unwrap()))?;
            }
        }
    }
    Ok(())
}

/// A throwaway plugin folder, removed when dropped.
pub struct PluginFolder {
    dir: tempfile::TempDir,
}

impl PluginFolder {
    /// An empty plugin folder.
    pub fn empty() -> PluginFolder {
        PluginFolder {
            dir: tempfile::tempdir().expect("create a plugin folder"),
        }
    }

    /// A copy of the built first-party plugins, sanitisers included.
    #[track_caller]
    pub fn first_party() -> PluginFolder {
        let folder = PluginFolder::empty();
        let built = paths::plugin_dir().unwrap_or_else(|e| panic!("{e:#}"));
        copy_plugins(&built, folder.path())
            .unwrap_or_else(|e| panic!("copy {} into a plugin folder: {e}", built.display()));
        folder
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where sanitisers go: `sanitisers/` in the folder.
    pub fn sanitiser_dir(&self) -> PathBuf {
        self.path().join(SANITISERS)
    }

    /// Puts `wasm` in the folder as the engine plugin file `file_name`;
    /// returns its path.
    #[track_caller]
    pub fn engine(&self, wasm: &Path, file_name: &str) -> PathBuf {
        place(wasm, &self.path().join(file_name))
    }

    /// Puts `wasm` in `sanitisers/` as the sanitiser file `file_name`;
    /// returns its path.
    #[track_caller]
    pub fn sanitiser(&self, wasm: &Path, file_name: &str) -> PathBuf {
        place(wasm, &self.sanitiser_dir().join(file_name))
    }
}

#[track_caller]
fn place(wasm: &Path, target: &Path) -> PathBuf {
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(wasm, target)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", wasm.display(), target.display()));
    target.to_path_buf()
}
