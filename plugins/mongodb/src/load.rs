//! The target side of restore and copy: `js/load.js` fills shadow
//! collections (`__envsync_new_<name>`) and checks their counts and
//! indexes, the caller verifies what it must, then `js/swap.js` renames each
//! shadow over its live collection (`renameCollection` with `dropTarget`,
//! within the database). Until the swap nothing live changes; on any failure
//! before it the shadows are dropped.

use crate::settings;
use crate::shell::{self, Script};
use envsync_plugin_sdk::{ByteSink, Error, Running, info, read_all, warn};
use serde_json::{Value, json};

pub const ROLE: &str = "target";

/// A running loader: its stdin takes the artifact's bytes.
pub struct Loader {
    pub child: Running,
}

impl Loader {
    pub fn start() -> Result<Loader, Error> {
        Ok(Loader {
            child: shell::spawn(Script::Load, ROLE, true)?,
        })
    }

    /// After all input went in (and `stdin` is closed): waits for the
    /// loader and returns what it loaded.
    pub fn finish(&mut self, stdin: ByteSink) -> Result<Value, Error> {
        stdin.close()?;
        drop(stdin);
        let stdout = self.child.take_stdout()?;
        let out = read_all(&stdout, 16 << 20);
        drop(stdout);
        self.child.finish()?;
        let loaded = shell::summary(Script::Load, &out?)?;
        info(format!(
            "loaded {} documents into {} shadow collection(s)",
            loaded["documents"],
            loaded["collections"].as_array().map_or(0, Vec::len)
        ));
        Ok(loaded)
    }
}

/// Makes the loaded shadows live; then re-applies validators a server lost
/// in the rename (SecantusDB does; MongoDB keeps them), saying so.
pub fn swap(loaded: &Value) -> Result<(), Error> {
    let plan = json!({
        "collections": loaded["collections"],
        "keepOthers": settings::keep_other_collections()?,
    });
    let done = shell::run(Script::Swap, ROLE, plan.to_string().as_bytes())
        .map_err(|e| e.context("making the restored collections live"))?;
    let swapped = done["swapped"].as_array().map_or(0, Vec::len);
    let dropped: Vec<&str> = done["dropped"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(fixed) = done["optionsReapplied"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        warn(format!(
            "the server lost the validation options of {} collection(s) when renaming them \
             ({}); they were set again with collMod right after the rename",
            fixed.len(),
            fixed
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    info(format!(
        "made {swapped} collection(s) live{}",
        if dropped.is_empty() {
            String::new()
        } else {
            format!(
                "; dropped {} not in the backup: {}",
                dropped.len(),
                dropped.join(", ")
            )
        }
    ));
    Ok(())
}

/// Stops `loader` (before it can see the end of its input) and drops the
/// shadows after a failure; `e` stays the error reported (a cleanup
/// failure is added to it).
pub fn abandon(loader: &Loader, e: Error) -> Error {
    let e = loader.child.abort(e);
    match shell::run(Script::Cleanup, ROLE, b"") {
        Ok(_) => e.context("target left unchanged"),
        Err(cleanup) => e
            .context("target left unchanged")
            .also(&cleanup.context("dropping the __envsync_new_ shadow collections failed")),
    }
}
