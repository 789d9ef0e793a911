//! The plugin's job parameters: their documentation (shown by `plugins
//! inspect`) and reading them with errors an operator can act on.

use crate::flags;
use envsync_plugin_sdk::{Error, ParamInfo, param, param_infos as infos, param_number, param_or};
use std::time::Duration;

/// The flags every backup and copy passes to mariadb-dump/mysqldump, before
/// `dump-flags`. See `backup.rs` for why each is there.
pub const DUMP_DEFAULTS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--skip-add-locks",
    "--no-tablespaces",
];

/// (name, description, default) of every parameter.
const PARAMS: &[(&str, &str, Option<&str>)] = &[
    (
        "dump-flags",
        "Extra mariadb-dump/mysqldump flags for backup and copy, split on whitespace and \
         appended after the plugin's own (--single-transaction --quick --routines --triggers \
         --events --hex-blob --default-character-set=utf8mb4 --skip-add-locks \
         --no-tablespaces, plus --set-gtid-purged=OFF with MySQL's mysqldump); a later \
         --skip-X turns one of those off (e.g. --skip-events when the user lacks the EVENT \
         privilege). With MySQL 8's mysqldump against MariaDB or MySQL 5.7 add \
         --column-statistics=0. Flags that name databases (--databases), write elsewhere \
         (--result-file, --tab, --xml), change the connection or put the password on the \
         command line are refused.",
        None,
    ),
    (
        "chunk-mib",
        "Size of a chunk's rows in a chunked backup (one made with --jobs): each table's \
         extended INSERTs are cut into chunks of about this many MiB, each loaded in its own \
         transaction by one of the restore's --jobs sessions, and skipped when a rerun \
         resumes an interrupted restore. Unset: a 64th of the database's data size \
         (information_schema DATA_LENGTH), between 4 MiB and 4 GiB, so that the largest \
         table does not bound a parallel restore.",
        None,
    ),
    (
        "mode",
        "How a restore or copy replaces the target. `swap` (default): load into the scratch \
         database `<db>-envsync-restore`, then swap every table in with one atomic RENAME \
         TABLE and recreate views, triggers, routines and events; readers of the target keep \
         working until the swap, and any failure before it leaves the target unchanged. \
         `replace`: drop the target database, create it again and load into it directly; \
         simpler, needs no scratch database, but the target is unusable during the load and \
         left partial if it fails.",
        Some("swap"),
    ),
    (
        "swap-lock-timeout",
        "Seconds the swap waits for other sessions' locks on the target's tables (a running \
         query, an open transaction) before giving up an attempt (lock_wait_timeout). New \
         queries on those tables wait behind the swap meanwhile, so keep it short.",
        Some("5"),
    ),
    (
        "swap-retries",
        "How many times to try the swap when it could not get its locks before giving up and \
         leaving the target untouched.",
        Some("5"),
    ),
    (
        "swap-retry-delay-ms",
        "Milliseconds to wait between swap attempts.",
        Some("1000"),
    ),
];

pub fn param_infos() -> Vec<ParamInfo> {
    infos(PARAMS)
}

/// Extra mariadb-dump flags, checked.
/// `chunk-mib` in bytes; None when unset (see [`auto_chunk_bytes`]).
pub fn chunk_bytes() -> Result<Option<u64>, Error> {
    if param("chunk-mib").is_none() {
        return Ok(None);
    }
    let mib: u64 = param_number("chunk-mib", 0)?;
    if mib == 0 {
        return Err(Error::InvalidParam(
            "parameter chunk-mib must be at least 1".into(),
        ));
    }
    Ok(Some(mib << 20))
}

/// The chunk size for a database of `data_bytes` when `chunk-mib` is
/// unset: a 64th of it, so each of up to 8 sessions gets several chunks and
/// the largest table is split (with one chunk per table the restore waits
/// for the largest alone), between 4 MiB (a chunk costs a client start and
/// a transaction) and 4 GiB (an artifact holds at most 10,000 chunks).
pub fn auto_chunk_bytes(data_bytes: u64) -> u64 {
    (data_bytes / 64).clamp(4 << 20, 4 << 30)
}

pub fn dump_flags() -> Result<Vec<String>, Error> {
    flags::dump_flags(&param_or("dump-flags", "")).map_err(Error::InvalidParam)
}

/// How a restore or copy replaces the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Swap,
    Replace,
}

/// How a restored copy is loaded and swapped in.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub mode: Mode,
    pub lock_timeout_secs: u32,
    pub swap_retries: u32,
    pub swap_retry_delay: Duration,
}

impl LoadSettings {
    /// Reads and checks every parameter up front, so a typo fails the step
    /// before anything is created.
    pub fn read() -> Result<LoadSettings, Error> {
        let mode = match param_or("mode", "swap")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "swap" => Mode::Swap,
            "replace" => Mode::Replace,
            other => {
                return Err(Error::InvalidParam(format!(
                    "parameter mode={other:?} must be swap (the default: load beside the target, \
                     then swap it in) or replace (drop the target, then load into it)"
                )));
            }
        };
        let swap_retries: u32 = param_number("swap-retries", 5)?;
        if swap_retries == 0 {
            return Err(Error::InvalidParam(
                "parameter swap-retries must be at least 1".into(),
            ));
        }
        let lock_timeout_secs: u32 = param_number("swap-lock-timeout", 5)?;
        if lock_timeout_secs == 0 {
            return Err(Error::InvalidParam(
                "parameter swap-lock-timeout must be at least 1 (second)".into(),
            ));
        }
        Ok(LoadSettings {
            mode,
            lock_timeout_secs,
            swap_retries,
            swap_retry_delay: Duration::from_millis(param_number("swap-retry-delay-ms", 1000)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_chunks_are_a_64th_of_the_data_within_bounds() {
        const MIB: u64 = 1 << 20;
        assert_eq!(auto_chunk_bytes(0), 4 * MIB);
        assert_eq!(auto_chunk_bytes(190 * MIB), 4 * MIB);
        assert_eq!(auto_chunk_bytes(1024 * MIB), 16 * MIB);
        let huge = 20 << 40;
        assert_eq!(auto_chunk_bytes(huge), 4096 * MIB);
        assert!(huge / auto_chunk_bytes(huge) < 10_000);
    }
}
