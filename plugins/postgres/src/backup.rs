//! backup: pg_dump of the source database, streamed into the artifact.

use crate::{settings, sql};
use envsync_plugin_sdk::{ByteSink, Command, Error, connection, info};

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let source = connection("source")?;
    let flags = settings::dump_flags()?;
    info(format!(
        "dumping {:?} on {} with pg_dump {}",
        source.database,
        source.instance,
        flags.join(" ")
    ));
    let pg_dump = Command::new("pg_dump")
        .args(flags)
        .arg(format!("--dbname={}", sql::conninfo(&source.database)))
        .connection("source")
        .stdout_piped()
        .spawn()?;
    // The bytes go host-side from pg_dump's stdout to the store; Ok only
    // when pg_dump exited 0 and every byte reached the artifact.
    let bytes = pg_dump.drain_into(artifact)?;
    info(format!("pg_dump wrote {bytes} bytes"));
    Ok(())
}
