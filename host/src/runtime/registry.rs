//! Finding plugins. The operator decides what each file is and which name
//! it answers to, never the file: engine plugins are the `.wasm` files of the
//! plugin folder, sanitisers those of its `sanitisers/` subfolder, and a
//! file's stem is its name. A refused or broken file is reported and does
//! not hide the others.
//!
//! A step loads only what it names ([`Registry`]): the engine `NAME.wasm`
//! and the sanitiser `sanitisers/NAME.wasm`, compiled (or taken from the
//! compile cache) the first time they are asked for. Nothing else in the
//! folder is compiled, so a pod with an empty cache compiles one or two
//! plugins, not all, and a broken file of another plugin stops nothing.
//! `plugins list` and `plugins inspect` load the whole folder ([`Listing`]),
//! as does the error of a step whose plugin cannot be loaded, so that it
//! can say what there is and why each refused file was refused.

use super::{LoadedPlugin, Role, Runtime};
use crate::failure::{Failure, Kind};
use crate::sanitiser::LoadedSanitiser;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The subfolder of the plugin folder that holds sanitisers.
pub const SANITISER_FOLDER: &str = "sanitisers";

/// A file in the plugin folder that could not be used, and why.
#[derive(Debug)]
pub struct BrokenPlugin {
    pub file: PathBuf,
    /// The role its folder gives it.
    pub role: Role,
    pub reason: String,
}

/// The plugin folder, loaded as steps ask for its plugins.
pub struct Registry {
    pub dir: PathBuf,
    engines: tokio::sync::Mutex<Vec<Arc<LoadedPlugin>>>,
    sanitisers: tokio::sync::Mutex<Vec<Arc<LoadedSanitiser>>>,
}

/// Everything the plugin folder holds, every file loaded.
pub struct Listing {
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

/// Whatever a file exports or describes, it answers only to the name and
/// role the operator gave it: each file that claims a name also claimed by
/// another file of the same role is refused (naming every file involved: the
/// operator resolves the ambiguity), and so is a file whose stem is not the
/// name it claims. Returns, for each `(claimed name, file)`, why it is
/// refused, if it is.
pub(crate) fn naming_refusals(role: Role, claims: &[(&str, &Path)]) -> Vec<Option<String>> {
    let file_name = |file: &Path| {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string())
    };
    claims
        .iter()
        .map(|&(name, file)| {
            let claimants: Vec<String> = claims
                .iter()
                .filter(|(other, _)| *other == name)
                .map(|(_, f)| file_name(f))
                .collect();
            if claimants.len() > 1 {
                let (listed, all) = match claimants.as_slice() {
                    [a, b] => (format!("{a} and {b}"), "both"),
                    more => (more.join(", "), "all"),
                };
                return Some(format!(
                    "{listed} {all} describe themselves as the {} {name:?}; a name belongs to one file, \
                     so {all} are refused: remove the ones you do not trust (a plugin answers to its \
                     file name, {name}.wasm)",
                    role.noun()
                ));
            }
            let stem = file.file_stem().map(|s| s.to_string_lossy());
            (stem.as_deref() != Some(name)).then(|| {
                format!(
                    "{} describes itself as {name:?}; a plugin answers to its file name: rename the file \
                     to {name}.wasm if you trust it as {name}",
                    file_name(file)
                )
            })
        })
        .collect()
}

/// The `.wasm` files in `dir`, sorted; none if `dir` does not exist.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
    Ok(files)
}

impl Registry {
    /// The plugin folder `dir`; nothing is loaded yet.
    pub fn open(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            engines: Default::default(),
            sanitisers: Default::default(),
        }
    }

    /// The engine plugin `name`: `NAME.wasm` of the folder, loaded on first
    /// use. When it cannot be (missing, refused, describing itself by
    /// another name), the whole folder is loaded to say what there is.
    pub async fn plugin(&self, runtime: &Runtime, name: &str) -> Result<Arc<LoadedPlugin>> {
        let mut loaded = self.engines.lock().await;
        if let Some(p) = loaded.iter().find(|p| p.info.name == name) {
            return Ok(p.clone());
        }
        let file = self.dir.join(format!("{name}.wasm"));
        if super::check_name(name).is_ok() && file.is_file() {
            match runtime.load_engine_file(&file).await {
                Ok(p) if p.info.name == name => {
                    tracing::debug!(plugin = name, file = %file.display(), from_cache = p.from_cache, "loaded plugin");
                    let p = Arc::new(p);
                    loaded.push(p.clone());
                    return Ok(p);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("loading {}: {e:#}", file.display()),
            }
        }
        let mut listing = Listing::scan(runtime, &self.dir).await?;
        listing.get(name)?;
        let i = listing
            .plugins
            .iter()
            .position(|p| p.info.name == name)
            .expect("get found it");
        let p = Arc::new(listing.plugins.swap_remove(i));
        loaded.push(p.clone());
        Ok(p)
    }

    /// The sanitiser `name`: `sanitisers/NAME.wasm`, loaded on first use
    /// (see [`Registry::plugin`]).
    pub async fn sanitiser(&self, runtime: &Runtime, name: &str) -> Result<Arc<LoadedSanitiser>> {
        let mut loaded = self.sanitisers.lock().await;
        if let Some(s) = loaded.iter().find(|s| s.info.name == name) {
            return Ok(s.clone());
        }
        let file = self.dir.join(SANITISER_FOLDER).join(format!("{name}.wasm"));
        if super::check_name(name).is_ok() && file.is_file() {
            match runtime.load_sanitiser_file(&file).await {
                Ok(s) if s.info.name == name => {
                    tracing::debug!(sanitiser = name, file = %file.display(), from_cache = s.from_cache, "loaded sanitiser");
                    let s = Arc::new(s);
                    loaded.push(s.clone());
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("loading {}: {e:#}", file.display()),
            }
        }
        let mut listing = Listing::scan(runtime, &self.dir).await?;
        listing.sanitiser(name)?;
        let i = listing
            .sanitisers
            .iter()
            .position(|s| s.info.name == name)
            .expect("sanitiser found it");
        let s = Arc::new(listing.sanitisers.swap_remove(i));
        loaded.push(s.clone());
        Ok(s)
    }
}

impl Listing {
    /// Loads the engine plugins in `dir` and the sanitisers in
    /// `dir/sanitisers/`.
    pub async fn scan(runtime: &Runtime, dir: &Path) -> Result<Listing> {
        let mut registry = Listing {
            dir: dir.to_path_buf(),
            plugins: Vec::new(),
            sanitisers: Vec::new(),
            broken: Vec::new(),
        };
        let mut engines = Vec::new();
        for file in wasm_files(dir)? {
            match runtime.load_engine_file(&file).await {
                Ok(plugin) => engines.push(plugin),
                Err(e) => registry.refuse(file, Role::Engine, format!("{e:#}")),
            }
        }
        registry.plugins = registry.keep_named(Role::Engine, engines, |p| {
            (p.info.name.as_str(), p.file.as_path())
        });
        for plugin in &registry.plugins {
            tracing::debug!(plugin = plugin.info.name, file = %plugin.file.display(), from_cache = plugin.from_cache, "loaded plugin");
        }

        let mut sanitisers = Vec::new();
        for file in wasm_files(&registry.sanitiser_dir())? {
            match runtime.load_sanitiser_file(&file).await {
                Ok(sanitiser) => sanitisers.push(sanitiser),
                Err(e) => registry.refuse(file, Role::Sanitiser, format!("{e:#}")),
            }
        }
        registry.sanitisers = registry.keep_named(Role::Sanitiser, sanitisers, |s| {
            (s.info.name.as_str(), s.file.as_path())
        });
        Ok(registry)
    }

    /// Where the operator puts sanitisers: `sanitisers/` in the plugin folder.
    pub fn sanitiser_dir(&self) -> PathBuf {
        self.dir.join(SANITISER_FOLDER)
    }

    /// The loaded files of one role whose names hold (`naming_refusals`);
    /// the others are refused. `claim` gives a file's name and path.
    fn keep_named<T>(
        &mut self,
        role: Role,
        loaded: Vec<T>,
        claim: impl Fn(&T) -> (&str, &Path),
    ) -> Vec<T> {
        let refusals = {
            let claims: Vec<(&str, &Path)> = loaded.iter().map(&claim).collect();
            naming_refusals(role, &claims)
        };
        let mut kept = Vec::new();
        for (item, refusal) in loaded.into_iter().zip(refusals) {
            match refusal {
                Some(reason) => {
                    let file = claim(&item).1.to_path_buf();
                    self.refuse(file, role, reason);
                }
                None => kept.push(item),
            }
        }
        kept
    }

    fn refuse(&mut self, file: PathBuf, role: Role, reason: String) {
        tracing::warn!("refusing {} {}: {reason}", role.as_str(), file.display());
        self.broken.push(BrokenPlugin { file, role, reason });
    }

    /// The sanitiser called `name`, or an error listing what there is.
    pub fn sanitiser(&self, name: &str) -> Result<&LoadedSanitiser> {
        let known = self.sanitisers.iter().map(|s| s.info.name.as_str());
        match self.sanitisers.iter().find(|s| s.info.name == name) {
            Some(s) => Ok(s),
            None => Err(self.not_found(Role::Sanitiser, name, known)),
        }
    }

    /// The plugin called `name`, or an error listing what there is.
    pub fn get(&self, name: &str) -> Result<&LoadedPlugin> {
        let known = self.plugins.iter().map(|p| p.info.name.as_str());
        match self.plugins.iter().find(|p| p.info.name == name) {
            Some(p) => Ok(p),
            None => Err(self.not_found(Role::Engine, name, known)),
        }
    }

    /// "No `role` named `name`": what there is, what could not be loaded
    /// and why, and where to put the file.
    fn not_found<'a>(
        &self,
        role: Role,
        name: &str,
        known: impl Iterator<Item = &'a str>,
    ) -> anyhow::Error {
        let (what, folder) = match role {
            Role::Engine => ("plugin", self.dir.clone()),
            Role::Sanitiser => ("sanitiser", self.sanitiser_dir()),
        };
        let known: Vec<&str> = known.collect();
        let mut message = format!(
            "no {what} named {name:?} in {} (found: {})",
            folder.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        for broken in &self.broken {
            message.push_str(&format!(
                "; {} ({}) could not be loaded: {}",
                broken.file.display(),
                broken.role.as_str(),
                broken.reason
            ));
        }
        message.push_str(&format!(
            "; put the {what} there as {name}.wasm or pass --plugin-dir"
        ));
        Failure::new(Kind::Plugin, message).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(claims: &[(&str, &str)]) -> Vec<Option<String>> {
        let claims: Vec<(&str, &Path)> = claims.iter().map(|(n, f)| (*n, Path::new(*f))).collect();
        naming_refusals(Role::Engine, &claims)
    }

    #[test]
    fn a_file_named_after_its_own_name_is_accepted() {
        assert_eq!(
            refusals(&[("postgres", "/p/postgres.wasm"), ("mysql", "/p/mysql.wasm")]),
            [None, None]
        );
    }

    #[test]
    fn a_file_claiming_another_name_is_refused_naming_both() {
        let out = refusals(&[("postgres", "/p/00-x.wasm"), ("mysql", "/p/mysql.wasm")]);
        let reason = out[0].as_deref().expect("00-x.wasm is refused");
        assert!(
            reason.contains("00-x.wasm describes itself as \"postgres\""),
            "{reason}"
        );
        assert!(
            reason.contains("rename the file to postgres.wasm"),
            "{reason}"
        );
        assert_eq!(out[1], None);
    }

    #[test]
    fn every_file_claiming_one_name_is_refused_naming_all_of_them() {
        let out = refusals(&[
            ("postgres", "/p/00-x.wasm"),
            ("postgres", "/p/postgres.wasm"),
            ("mysql", "/p/mysql.wasm"),
            ("postgres", "/p/zz.wasm"),
        ]);
        for i in [0, 1, 3] {
            let reason = out[i].as_deref().expect("every claimant is refused");
            for file in ["00-x.wasm", "postgres.wasm", "zz.wasm"] {
                assert!(reason.contains(file), "{reason}");
            }
            assert!(reason.contains("engine plugin \"postgres\""), "{reason}");
        }
        assert_eq!(out[2], None, "other names are untouched");
    }
}
