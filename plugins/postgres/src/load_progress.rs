//! Rows loaded so far, reported while a restore runs (`log.progress`, stage
//! `loading`), so the operator and the Pushgateway see rows as well as
//! bytes. The loaders (pg_restore, psql) get the artifact from the host and
//! say nothing until they end, so the plugin asks the server from a session
//! of its own: rows committed in the scratch database's tables plus the
//! rows of COPYs still running (`pg_stat_progress_copy`, PostgreSQL 14+).
//!
//! Committed rows show once their backend flushed its statistics (at the
//! latest about a second after it went idle), and a single-transaction load
//! (psql of a plain dump) shows only its running COPY: the count is a
//! floor, never more than what is loaded. It is reported only growing.
//! A chunked restore asks on a steady beat while its sessions load
//! (`sessions::Pulse`), not only as chunks end: one chunk may take minutes.

use crate::swap::Replacement;
use envsync_plugin_sdk::{debug, log};
use std::time::{Duration, Instant};

/// How often the server is asked during a load.
pub const EVERY: Duration = Duration::from_secs(2);

/// Rows inserted into the scratch database's tables (not the bookkeeping
/// of a chunked restore) plus the rows of COPYs in progress there.
const ROWS_QUERY: &str = "SELECT \
    (SELECT coalesce(sum(n_tup_ins), 0) FROM pg_catalog.pg_stat_user_tables \
       WHERE schemaname <> 'envsync_restore') \
  + (SELECT coalesce(sum(tuples_processed), 0) FROM pg_catalog.pg_stat_progress_copy \
       WHERE datname = current_database());\n";

/// Asks and reports at most every [`EVERY`]; a failed question is logged
/// and ends the reports, never the restore.
pub struct RowMeter<'a> {
    job: &'a Replacement,
    asked: Option<Instant>,
    reported: u64,
    broken: bool,
}

impl<'a> RowMeter<'a> {
    pub fn new(job: &'a Replacement) -> Self {
        RowMeter {
            job,
            asked: None,
            reported: 0,
            broken: false,
        }
    }

    /// Reports when [`EVERY`] has passed since the last question.
    pub fn tick(&mut self) {
        if self.asked.is_none_or(|at| at.elapsed() >= EVERY) {
            self.report();
        }
    }

    /// Asks the server now and reports the count.
    pub fn report(&mut self) {
        if self.broken {
            return;
        }
        self.asked = Some(Instant::now());
        match self.job.scratch_psql(ROWS_QUERY) {
            Ok(out) => match parse_rows(&out) {
                Some(rows) => {
                    self.reported = self.reported.max(rows);
                    log::progress("loading", self.reported, None);
                }
                None => self.give_up(format!("unexpected answer {:?}", out.trim())),
            },
            Err(e) => self.give_up(e.message().to_string()),
        }
    }

    fn give_up(&mut self, why: String) {
        debug(format!("no row counts during this load: {why}"));
        self.broken = true;
    }
}

/// The number psql printed (`sum` of integers is numeric: digits only).
fn parse_rows(out: &str) -> Option<u64> {
    out.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_from_psql_output() {
        assert_eq!(parse_rows("40000\n"), Some(40000));
        assert_eq!(parse_rows("0"), Some(0));
        assert_eq!(parse_rows(""), None);
        assert_eq!(parse_rows("ERROR"), None);
    }
}
