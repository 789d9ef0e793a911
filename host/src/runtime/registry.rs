//! Finding plugins: every `.wasm` file in the plugin folder is loaded and
//! described; a broken one is reported and does not hide the others.

use super::{Loaded, LoadedPlugin, Runtime};
use crate::failure::{Failure, Kind};
use crate::sanitiser::LoadedSanitiser;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A file in the plugin folder that could not be used, and why.
#[derive(Debug)]
pub struct BrokenPlugin {
    pub file: PathBuf,
    pub reason: String,
}

/// What the plugin folder holds.
pub struct Registry {
    pub dir: PathBuf,
    pub plugins: Vec<LoadedPlugin>,
    pub sanitisers: Vec<LoadedSanitiser>,
    pub broken: Vec<BrokenPlugin>,
}

/// The plugin folder: `--plugin-dir`/`$ENVSYNC_PLUGIN_DIR` when given, else
/// the first of `plugins/` next to the binary, `../plugins` from it (a cargo
/// `target/` tree), and the user's data dir that exists.
pub fn default_plugin_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("plugins"));
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join("plugins"));
        }
    }
    let user = dirs::data_dir().map(|d| d.join("envsync").join("plugins"));
    candidates.extend(user.clone());
    candidates
        .into_iter()
        .find(|d| d.is_dir())
        .or(user)
        .unwrap_or_else(|| PathBuf::from("plugins"))
}

/// Why a second component with an already loaded name is refused.
fn name_taken(what: &str, name: &str, other: Option<&Path>) -> Option<String> {
    other.map(|o| format!("{what} name {name:?} is already taken by {}", o.display()))
}

impl Registry {
    /// Loads every plugin in `dir`.
    pub async fn scan(runtime: &Runtime, dir: &Path) -> Result<Registry> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Failure::new(
                    Kind::Plugin,
                    format!("cannot read plugin folder {}: {e}", dir.display()),
                )
                .into());
            }
        };
        files.sort();
        let mut registry = Registry {
            dir: dir.to_path_buf(),
            plugins: Vec::new(),
            sanitisers: Vec::new(),
            broken: Vec::new(),
        };
        for file in files {
            match runtime.load_any(&file).await {
                Ok(Loaded::Sanitiser(sanitiser)) => {
                    let other = registry
                        .sanitisers
                        .iter()
                        .find(|s| s.info.name == sanitiser.info.name)
                        .map(|s| s.file.as_path());
                    match name_taken("sanitiser", &sanitiser.info.name, other) {
                        Some(reason) => registry.broken.push(BrokenPlugin { file, reason }),
                        None => registry.sanitisers.push(*sanitiser),
                    }
                }
                Ok(Loaded::Engine(plugin)) => {
                    let other = registry
                        .plugins
                        .iter()
                        .find(|p| p.info.name == plugin.info.name)
                        .map(|p| p.file.as_path());
                    match name_taken("plugin", &plugin.info.name, other) {
                        Some(reason) => registry.broken.push(BrokenPlugin { file, reason }),
                        None => {
                            tracing::debug!(plugin = plugin.info.name, file = %file.display(), from_cache = plugin.from_cache, "loaded plugin");
                            registry.plugins.push(*plugin);
                        }
                    }
                }
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::warn!("skipping plugin {}: {reason}", file.display());
                    registry.broken.push(BrokenPlugin { file, reason });
                }
            }
        }
        Ok(registry)
    }

    /// The sanitiser called `name`, or an error listing what there is.
    pub fn sanitiser(&self, name: &str) -> Result<&LoadedSanitiser> {
        let known = self.sanitisers.iter().map(|s| s.info.name.as_str());
        match self.sanitisers.iter().find(|s| s.info.name == name) {
            Some(s) => Ok(s),
            None => Err(self.not_found("sanitiser", name, known)),
        }
    }

    /// The plugin called `name`, or an error listing what there is.
    pub fn get(&self, name: &str) -> Result<&LoadedPlugin> {
        let known = self.plugins.iter().map(|p| p.info.name.as_str());
        match self.plugins.iter().find(|p| p.info.name == name) {
            Some(p) => Ok(p),
            None => Err(self.not_found("plugin", name, known)),
        }
    }

    /// "No `what` named `name`": what there is, what could not be loaded
    /// and why, and where to put the file.
    fn not_found<'a>(
        &self,
        what: &str,
        name: &str,
        known: impl Iterator<Item = &'a str>,
    ) -> anyhow::Error {
        let known: Vec<&str> = known.collect();
        let mut message = format!(
            "no {what} named {name:?} in {} (found: {})",
            self.dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        for broken in &self.broken {
            message.push_str(&format!(
                "; {} could not be loaded: {}",
                broken.file.display(),
                broken.reason
            ));
        }
        message.push_str(&format!(
            "; put the {what}'s .wasm file there or pass --plugin-dir"
        ));
        Failure::new(Kind::Plugin, message).into()
    }
}
