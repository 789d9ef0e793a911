//! copy: `js/dump.js` on the source straight into `js/load.js` on the
//! target, then the same swap as a restore. Unsanitised, the host splices
//! the bytes from one mongosh to the other; sanitised, they pass through the
//! plugin (`sanitise`).

use crate::load::{self, Loader};
use crate::sanitise;
use crate::shell::{self, Script};
use envsync_plugin_sdk::{Error, OnFeedError, connection};

pub fn copy() -> Result<(), Error> {
    connection("source")?;
    connection("target")?;
    let plan = sanitise::plan();
    let mut loader = Loader::start()?;
    let loaded = (|| {
        let loader = &mut loader;
        let mut dump = shell::spawn(Script::Dump, "source", false)?;
        let stdin = match plan {
            None => {
                let stdout = dump.take_stdout()?;
                let fed = loader.child.feed(&stdout, OnFeedError::Kill);
                drop(stdout);
                match fed.and_then(|f| f.all()) {
                    Ok((stdin, _)) => stdin,
                    Err(e) => return Err(dump.abort_upstream(e)),
                }
            }
            Some(tables) => {
                let stdout = dump.take_stdout()?;
                let stdin = loader.child.take_stdin()?;
                let result = sanitise::rewrite(&stdout, &stdin, tables);
                drop(stdout);
                if let Err(e) = result {
                    return Err(dump.abort_upstream(e));
                }
                stdin
            }
        };
        dump.finish()
            .map_err(|e| e.context("dumping the source database"))?;
        loader.finish(stdin)
    })();
    match loaded {
        Ok(loaded) => load::swap(&loaded),
        Err(e) => Err(load::abandon(&loader, e)),
    }
    .map_err(|e| e.context("copy failed"))
}
