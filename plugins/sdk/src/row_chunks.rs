//! The row chunks the host writes in a chunked sanitised backup
//! (`sanitising.write-rows`), as an engine names them in its artifact.

use crate::{Error, RowChunk, chunks};

/// Prefix of the chunks the host names `rows-NNNNN`.
pub const ROWS_PREFIX: &str = "rows-";

/// In `backup-structure(after-rows)`: the host's row chunks in the order
/// they were stored, each with its table and row count (`chunks.rows-in`;
/// none only from a host that does not tell).
pub fn host_row_chunks() -> Result<Vec<(String, Option<RowChunk>)>, Error> {
    let mut out = Vec::new();
    for chunk in chunks::contents()? {
        if chunk.name.starts_with(ROWS_PREFIX) {
            let described = chunks::rows_in(&chunk.name)?;
            out.push((chunk.name, described));
        }
    }
    Ok(out)
}
