//! The plugin's job parameters: their documentation (shown by `plugins
//! inspect`) and reading them with errors an operator can act on.

use crate::flags;
use envsync_plugin_sdk::{
    Error, ParamInfo, param, param_bool, param_infos as infos, param_number, param_or,
};
use std::time::Duration;

/// (name, description, default) of every parameter.
const PARAMS: &[(&str, &str, Option<&str>)] = &[
    (
        "dump-flags",
        "pg_dump flags, split on whitespace (backup, and copy with -Z0 added). Only the \
         custom format is accepted; -Fc is added when no format is given. Sanitised steps \
         dump plain SQL instead: format, compression, --create and --clean flags are dropped, \
         --no-owner, --encoding=UTF8 and -B (no large objects) added, and --inserts and \
         --blobs refused.",
        Some(DEFAULT_DUMP_FLAGS),
    ),
    (
        "restore-flags",
        "Extra pg_restore flags, split on whitespace (e.g. --no-privileges --no-comments).",
        None,
    ),
    (
        "owner",
        "Role that owns the restored database and its objects (pg_restore --role and \
         ALTER DATABASE ... OWNER TO). When unset, objects belong to the connecting user and \
         the database keeps the owner of the database it replaces.",
        None,
    ),
    (
        "swap-retries",
        "How many times to try the final rename swap (which needs every other session \
         disconnected) before giving up and leaving the target untouched.",
        Some("5"),
    ),
    (
        "swap-retry-delay-ms",
        "Milliseconds to wait between swap attempts.",
        Some("1000"),
    ),
    (
        "maintenance-database",
        "Database psql connects to for CREATE, ALTER and DROP DATABASE; must not be the \
         target database.",
        Some("postgres"),
    ),
    (
        "maintenance-work-mem",
        "maintenance_work_mem of each session building indexes and constraints in a \
         parallel restore of a chunked artifact (each of the --jobs sessions may use this much).",
        Some("256MB"),
    ),
    (
        "index-build-workers",
        "max_parallel_maintenance_workers of each session of a parallel restore of a chunked \
         artifact: the server processes one index build may add. 0 (the default): each build \
         runs in its own session only, since the --jobs sessions already keep that many server \
         cores busy and parallel builds beside them cost more CPU than they save (measured in \
         docs/benchmarks.md). Raise it for a server with many more cores than --jobs.",
        Some("0"),
    ),
    (
        "chunk-mib",
        "Chunked backups: tables larger than this many MiB are split into block ranges of \
         about this size, so one big table loads with several sessions. Unset: the database's \
         size / 64, between 4 and 4096 MiB, so even one big table spreads over the sessions.",
        None,
    ),
    (
        "disable-triggers",
        "Load with session_replication_role=replica so triggers and foreign-key checks do not \
         fire during the restore (needs a superuser, or SET privilege on that parameter).",
        Some("true"),
    ),
];

const DEFAULT_DUMP_FLAGS: &str = "-Fc -Z1";

pub fn param_infos() -> Vec<ParamInfo> {
    infos(PARAMS)
}

/// pg_dump flags, checked.
pub fn dump_flags() -> Result<Vec<String>, Error> {
    flags::dump_flags(&param_or("dump-flags", DEFAULT_DUMP_FLAGS)).map_err(Error::InvalidParam)
}

/// pg_dump flags for a sanitised (plain SQL) dump, checked.
pub fn plain_dump_flags() -> Result<Vec<String>, Error> {
    flags::plain_dump_flags(&param_or("dump-flags", DEFAULT_DUMP_FLAGS))
        .map_err(Error::InvalidParam)
}

/// Extra pg_restore flags, checked.
pub fn restore_flags() -> Result<Vec<String>, Error> {
    flags::restore_flags(&param_or("restore-flags", "")).map_err(Error::InvalidParam)
}

/// How a restored copy is loaded and swapped in.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub owner: Option<String>,
    pub restore_flags: Vec<String>,
    pub disable_triggers: bool,
    pub maintenance_work_mem: String,
    pub index_build_workers: u32,
    pub maintenance_db: String,
    pub swap_retries: u32,
    pub swap_retry_delay: Duration,
}

impl LoadSettings {
    /// Reads and checks every parameter up front, so a typo fails the step
    /// before anything is created.
    pub fn read() -> Result<LoadSettings, Error> {
        let swap_retries: u32 = param_number("swap-retries", 5)?;
        if swap_retries == 0 {
            return Err(Error::InvalidParam(
                "parameter swap-retries must be at least 1".into(),
            ));
        }
        Ok(LoadSettings {
            owner: param("owner"),
            restore_flags: restore_flags()?,
            disable_triggers: param_bool("disable-triggers", true)?,
            maintenance_work_mem: memory_setting()?,
            index_build_workers: index_build_workers()?,
            maintenance_db: param_or("maintenance-database", "postgres"),
            swap_retries,
            swap_retry_delay: Duration::from_millis(param_number("swap-retry-delay-ms", 1000)?),
        })
    }
}

/// `maintenance-work-mem`, checked to be a plain size (it goes into
/// PGOPTIONS, where a space would start another option).
fn memory_setting() -> Result<String, Error> {
    let value = param_or("maintenance-work-mem", "256MB");
    let plain =
        !value.is_empty() && value.len() <= 16 && value.bytes().all(|b| b.is_ascii_alphanumeric());
    if plain {
        Ok(value)
    } else {
        Err(Error::InvalidParam(format!(
            "parameter maintenance-work-mem {value:?} is not a size such as 256MB or 1GB"
        )))
    }
}

/// `index-build-workers`, within PostgreSQL's own limit for
/// max_parallel_maintenance_workers (1024), so a typo fails the step before
/// anything is created instead of every session's connection.
fn index_build_workers() -> Result<u32, Error> {
    let workers: u32 = param_number("index-build-workers", 0)?;
    if workers > MAX_INDEX_BUILD_WORKERS {
        return Err(Error::InvalidParam(format!(
            "parameter index-build-workers is {workers}; PostgreSQL allows at most \
             {MAX_INDEX_BUILD_WORKERS} (0 builds each index in its own session)"
        )));
    }
    Ok(workers)
}

const MAX_INDEX_BUILD_WORKERS: u32 = 1024;

/// `chunk-mib` in blocks of 8 KiB (PostgreSQL's default block size); None
/// when unset (see [`auto_chunk_blocks`]).
pub fn chunk_blocks() -> Result<Option<u64>, Error> {
    if param("chunk-mib").is_none() {
        return Ok(None);
    }
    let mib: u64 = param_number("chunk-mib", 0)?;
    if mib == 0 {
        return Err(Error::InvalidParam(
            "parameter chunk-mib must be at least 1".into(),
        ));
    }
    Ok(Some(mib * 128))
}

/// The chunk size for a database of `total_blocks` when `chunk-mib` is
/// unset: a 64th of it, so the largest table (often most of the data)
/// still spreads over any number of sessions up to 8 or so, between
/// 4 MiB (below that, per-chunk costs weigh) and 4 GiB (so even a 20 TiB
/// database stays under the 10,000 chunks an artifact may have). A small
/// database gets small chunks too: a rerun after a kill loads again only
/// the chunks that were in flight, and the sessions end together. Since
/// one session takes chunk after chunk, a chunk costs a COPY and a commit,
/// not a psql start (docs/benchmarks.md, 2026-12-05).
pub fn auto_chunk_blocks(total_blocks: u64) -> u64 {
    (total_blocks / 64).clamp(4 * 128, 4096 * 128)
}

/// True when the operator set `dump-flags`: a chunked backup cannot honour
/// arbitrary pg_dump flags, so the backup stays one pg_dump stream.
pub fn custom_dump_flags() -> bool {
    param("dump-flags").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_chunks_are_a_64th_of_the_database_within_bounds() {
        const MIB: u64 = 128; // blocks of 8 KiB
        assert_eq!(auto_chunk_blocks(0), 4 * MIB);
        // 457 MB: 7 MiB chunks, not the floor.
        assert_eq!(auto_chunk_blocks(457 * MIB), 457 * MIB / 64);
        assert_eq!(auto_chunk_blocks(8 * 1024 * MIB), 128 * MIB);
        // 20 TiB: 4 GiB chunks, 5,120 of them.
        let huge = 20 * 1024 * 1024 * MIB;
        assert_eq!(auto_chunk_blocks(huge), 4096 * MIB);
        assert!(huge / auto_chunk_blocks(huge) < 10_000);
    }
}
