//! Reading and writing host streams when the plugin must see the bytes.

use crate::{ByteSink, ByteSource, Error};

/// Chunk size for reads: large, so a stream costs few host calls.
const CHUNK: u32 = 256 * 1024;

/// Reads `source` to its end, refusing more than `limit` bytes (so a plugin
/// never buffers an unbounded stream by mistake).
pub fn read_all(source: &ByteSource, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let chunk = source.read(CHUNK)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        if out.len() + chunk.len() > limit {
            return Err(Error::Other(format!(
                "stream is larger than the {limit} bytes this plugin reads into memory"
            )));
        }
        out.extend_from_slice(&chunk);
    }
}

/// Writes all of `bytes` to `sink`.
pub fn write_all(sink: &ByteSink, bytes: &[u8]) -> Result<(), Error> {
    for chunk in bytes.chunks(CHUNK as usize) {
        sink.write(chunk)?;
    }
    Ok(())
}
