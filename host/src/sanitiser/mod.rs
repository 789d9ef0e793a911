//! Sanitisers: sandboxed components of the `sanitiser` world that rewrite
//! rows and documents in the stream. The host loads them from the plugin
//! folder like engines, runs one per sanitised step in its own Store (memory
//! cap, deadline per call, nothing but `keyed.hash`), forwards the engine
//! plugin's row batches to it (`capabilities::sanitising`), checks every
//! answer (no larger than its input allows, `bound`) and scans it for
//! residual personal data (`pii`).

pub mod batch;
pub mod bindings;
pub mod bound;
pub mod pii;
mod redact;
pub mod session;
pub mod state;

use crate::failure::{Failure, Kind};
use anyhow::{Context, Result};
use bindings::{Sanitiser, SanitiserInfo, SanitiserPre};
use state::SanitiserState;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

pub use session::{SanitiseOptions, SanitiserSession};

/// Largest memory a sanitiser gets unless the task says otherwise.
pub const DEFAULT_MEMORY_CAP_MIB: u64 = 256;

/// A sanitiser compiled, linked and described.
pub struct LoadedSanitiser {
    pub info: SanitiserInfo,
    pub file: PathBuf,
    pub from_cache: bool,
    pre: SanitiserPre<SanitiserState>,
}

/// The linker of sanitisers: WASI (with nothing granted, see [`state`]) and
/// `keyed`. Nothing of the engine world (jobs, streams, processes).
pub fn linker(engine: &Engine) -> Result<Linker<SanitiserState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI for sanitisers")?;
    state::link_stopped_clock(&mut linker).context("linking the stopped clock for sanitisers")?;
    Sanitiser::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("linking the sanitiser imports")?;
    Ok(linker)
}

/// Links and describes the sanitiser `component` from `path`.
pub async fn load(
    engine: &Engine,
    linker: &Linker<SanitiserState>,
    path: &Path,
    component: Component,
    from_cache: bool,
) -> Result<LoadedSanitiser> {
    let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
        Failure::new(
            Kind::Plugin,
            format!(
                "the sanitiser needs imports sanitisers are not given (only WASI with nothing granted, and \
                 envsync:plugin/keyed): {e:#}"
            ),
        )
    })?;
    let pre = SanitiserPre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .context("the component does not match the sanitiser world")?;
    let name = path.display().to_string();
    let mut instance = session::Instance::start(
        engine,
        &pre,
        &name,
        std::sync::Arc::from(Vec::new()),
        DEFAULT_MEMORY_CAP_MIB,
        std::time::Duration::from_secs(10),
        Default::default(),
    )
    .await?;
    let info = instance.describe().await?;
    crate::runtime::check_name(&info.name)?;
    Ok(LoadedSanitiser {
        info,
        file: path.to_path_buf(),
        from_cache,
        pre,
    })
}
